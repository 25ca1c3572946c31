"""In-memory event containers shared by simulation, hit finding, reco and the event file."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

# Truth categories of a hit (the softmax order of the network) and of a deposit.
TRACK, EM, NONE = 0, 1, 2
LABEL_NAMES = ("track", "em", "none")
MICHEL_CUT = 0.6  # the production cut on the michel score: above it, a hit is Michel-like


@dataclass
class PlaneFrame:
    """Deconvolved signal of one (TPC, plane) in ke-/tick, stored sparsely (zero elsewhere)."""

    tpc: int
    plane: int  # 0 U, 1 V, 2 W
    n_wires: int
    n_ticks: int
    wire: np.ndarray  # int32 [K]
    tick: np.ndarray  # int32 [K]
    value: np.ndarray  # float32 [K]

    @classmethod
    def from_dense(cls, tpc: int, plane: int, signal: np.ndarray) -> PlaneFrame:
        """Keep the non-zero pixels of a dense [n_wires, n_ticks] signal."""
        return cls.from_pixels(tpc, plane, signal, np.flatnonzero(signal))

    @classmethod
    def from_pixels(cls, tpc: int, plane: int, signal: np.ndarray, index: np.ndarray) -> PlaneFrame:
        """Keep the pixels ``index`` (flat: wire * n_ticks + tick) of a dense signal."""
        wire, tick = np.divmod(index, signal.shape[1])
        return cls(
            tpc,
            plane,
            signal.shape[0],
            signal.shape[1],
            wire.astype(np.int32),
            tick.astype(np.int32),
            signal.ravel()[index].astype(np.float32),
        )

    def dense(self) -> np.ndarray:
        """The full [n_wires, n_ticks] float32 signal."""
        out = np.zeros((self.n_wires, self.n_ticks), np.float32)
        out[self.wire, self.tick] = self.value
        return out


@dataclass
class RawFrame:
    """Raw waveforms of one (TPC, plane): ADC counts [n_wires, n_ticks], baseline included."""

    tpc: int
    plane: int  # 0 U, 1 V, 2 W
    adc: np.ndarray  # int16


@dataclass
class Hits:
    """Reconstructed Gaussian hits of an event, one entry per hit (column arrays)."""

    tpc: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int16))
    plane: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    wire: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    peak_tick: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    sigma: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    amplitude: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    integral: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    label: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))  # TRACK, EM or NONE
    michel: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # from a Michel electron
    # which Michel electron (truth; 0: none); left empty, it is filled from ``michel``
    michel_id: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))

    DTYPES = {
        "tpc": np.int16,
        "plane": np.int8,
        "wire": np.int32,
        "peak_tick": np.float32,
        "sigma": np.float32,
        "amplitude": np.float32,
        "integral": np.float32,
        "label": np.uint8,
        "michel": bool,
        "michel_id": np.int32,
    }

    def __post_init__(self) -> None:
        for f in fields(self):
            setattr(self, f.name, np.asarray(getattr(self, f.name), dtype=self.DTYPES[f.name]))
        if len(self.michel_id) == 0 and len(self.michel):  # written without ids: one per flag
            self.michel_id = self.michel.astype(np.int32)
        n = {len(getattr(self, f.name)) for f in fields(self)}
        if len(n) > 1:
            raise ValueError(f"hit columns have different lengths: {sorted(n)}")

    def __len__(self) -> int:
        return len(self.wire)

    def columns(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def select(self, mask: np.ndarray) -> Hits:
        """The hits where ``mask`` (boolean or index array) selects."""
        return Hits(**{k: v[mask] for k, v in self.columns().items()})

    @classmethod
    def concat(cls, parts: list[Hits]) -> Hits:
        if not parts:
            return cls()
        return cls(
            **{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)}
        )


@dataclass
class Event:
    """One readout: run/subrun/event ids, the plane frames, the hits and the detector's name."""

    run: int
    subrun: int
    event: int
    frames: list[PlaneFrame]
    hits: Hits
    detector_name: str = ""  # set by the simulation and the event file
    raw: list[RawFrame] = field(default_factory=list)  # raw waveforms, where simulated
