"""The detector response of ProtoDUNE-SP's wire planes: field response and cold electronics.

Field response: the current an electron induces on each wire as it drifts through the
wire planes, from argonic's own 2D electrostatic solution of the planes (a cross-section
perpendicular to the wires, as Garfield's 2D models used by Wire-Cell). Each wire is a
line charge of radius ``WIRE_RADIUS_MM`` (method of moments: one charge per wire, chosen so
that every wire surface sits at its potential; the wires are 50x thinner than the pitch, so
the line-charge picture is exact to ~(radius / pitch)^2), the grounded mesh behind the
collection plane is a mirror (method of images), and the drift field is uniform far from
the planes. The same solution with one wire at 1 V and every other conductor at 0 is that
wire's Shockley-Ramo weighting potential. Electrons follow the drift field from
``START_MM`` above the collection plane (scipy's RK45 along the field line, at a
field-dependent speed); the charge induced on wire k is q * phi_k(r(t)), so its
current per time bin is the bin's change of it: the total is exactly q times the change of
the weighting potential between start and end (-1 electron on the collecting wire, 0 on
wires the electron passes).

Written here rather than taken from a library: Garfield is a C++/ROOT program and Wire-Cell
ships its output, not a solver; the whole 2D problem is a few hundred line charges.

Cold electronics (``electronics_response``): the LArASIC shaper is a fifth-order
semi-Gaussian filter, one real and two complex-conjugate pole pairs in units of
1 / shaping time; its impulse response is computed here from those poles (residues) and
normalised to the gain at its peak: 14 mV/fC at 2.2 us shaping for ProtoDUNE-SP.

Units: mm, us, V; charges in electrons (the induced current of a drifting electron is
negative on the wire that collects it, as in Wire-Cell's field-response files).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

# --- ProtoDUNE-SP wire planes (2D model) ----------------------------------------------------

WIRE_RADIUS_MM = 0.076  # 150 um copper-beryllium wires
PLANE_SPACING_MM = 4.75
PLANE_NAMES = ("G", "U", "V", "W")  # grid (shield), two induction planes, collection
PITCH_MM = {"G": 4.8, "U": 4.669, "V": 4.669, "W": 4.79}
BIAS_V = {"G": -665.0, "U": -370.0, "V": 0.0, "W": 820.0}  # ProtoDUNE-SP nominal
X_MM = {name: (3 - i) * PLANE_SPACING_MM for i, name in enumerate(PLANE_NAMES)}  # W at 0
MESH_X_MM = -PLANE_SPACING_MM  # grounded mesh behind the collection plane
DRIFT_FIELD_V_PER_MM = 50.0  # 500 V/cm
WIRES_PER_PLANE = 121  # -60..60 around the central wire: edges far from the paths
START_MM = 100.0  # where the paths start, above the collection plane
WIRE_OFFSETS = 10  # response on wires -10..10 around the electron, as Wire-Cell
IMPACTS = 6  # impact positions 0, p/10, ..., p/2 across half a pitch (the rest by symmetry)
PERIOD_US = 0.1  # time bins of the field response


def drift_speed(field_v_per_mm: np.ndarray, nominal_mm_per_us: float = 1.6) -> np.ndarray:
    """Electron drift speed in liquid argon (mm/us) at a field (V/mm): ``nominal`` at
    500 V/cm, rising as E^0.4 (measured speeds within ~10% from 0.25 to 4 kV/cm), capped at
    20 kV/cm: only the last tenth of a millimetre before a wire sees more."""
    ratio = np.clip(np.asarray(field_v_per_mm) / DRIFT_FIELD_V_PER_MM, 1e-3, 40.0)
    return nominal_mm_per_us * ratio**0.4


@dataclass(frozen=True)
class Wires:
    """Every wire of the 2D model: position (x, y) in mm, plane index, bias voltage."""

    x: np.ndarray
    y: np.ndarray
    plane: np.ndarray
    bias: np.ndarray

    @classmethod
    def protodune_sp(cls) -> Wires:
        half = WIRES_PER_PLANE // 2
        index = np.arange(-half, half + 1)
        x, y, plane, bias = [], [], [], []
        for p, name in enumerate(PLANE_NAMES):
            x.append(np.full(index.size, X_MM[name]))
            y.append(index * PITCH_MM[name])
            plane.append(np.full(index.size, p))
            bias.append(np.full(index.size, BIAS_V[name]))
        return cls(*(np.concatenate(a) for a in (x, y, plane, bias)))

    def central(self, plane: str) -> int:
        """Index of the wire at y = 0 of ``plane``."""
        return int(np.flatnonzero((self.plane == PLANE_NAMES.index(plane)) & (self.y == 0))[0])


class LineCharges:
    """The potential of the wires' line charges and their mirror images in the mesh, plus
    a uniform drift field; charges solved so that every wire surface is at its voltage."""

    def __init__(self, wires: Wires, voltages: np.ndarray, field: float) -> None:
        self.wires, self.field = wires, field
        self.mirror_x = 2 * MESH_X_MM - wires.x
        # the mean potential over each wire's surface per unit charge: the other charges'
        # potential at its centre (mean-value theorem) and its own at one radius
        kernel = self._kernel(wires.x[:, None], wires.y[:, None], self_distance=WIRE_RADIUS_MM)
        self.q = np.linalg.solve(kernel, voltages - self._uniform(wires.x))

    def _uniform(self, x: np.ndarray) -> np.ndarray:
        return -self.field * (x - MESH_X_MM)

    def _kernel(self, x: np.ndarray, y: np.ndarray, self_distance: float = 0.0) -> np.ndarray:
        dy2 = (y - self.wires.y) ** 2
        direct = (x - self.wires.x) ** 2 + dy2
        if self_distance:
            np.fill_diagonal(direct, self_distance**2)
        image = (x - self.mirror_x) ** 2 + dy2
        return 0.5 * (np.log(image) - np.log(direct))

    def potential(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """phi at points (any shape), V."""
        x, y = np.asarray(x, float), np.asarray(y, float)
        phi = self._kernel(x[..., None], y[..., None]) @ self.q
        return phi + self._uniform(x)

    def gradient(self, x: float, y: float) -> np.ndarray:
        """grad phi at one point, V/mm."""
        dx, dxi, dy = x - self.wires.x, x - self.mirror_x, y - self.wires.y
        direct, image = dx**2 + dy**2, dxi**2 + dy**2
        gx = self.q @ (dxi / image - dx / direct)
        gy = self.q @ (dy / image - dy / direct)
        return np.array([gx - self.field, gy])


@dataclass(frozen=True)
class FieldResponse:
    """Induced currents (electrons/us) per plane: [wire offset -10..10, impact, time bin];
    impacts are the path's start offsets 0, p/10, ..., p/2 from the central wire."""

    times_us: np.ndarray
    impacts_mm: dict[str, np.ndarray]
    currents: dict[str, np.ndarray]

    def save(self, path: Path) -> None:
        """As a compressed npz (times, and per plane its impacts and currents)."""
        arrays = {"times_us": self.times_us}
        for name in self.currents:
            arrays[f"{name}_impacts_mm"] = self.impacts_mm[name]
            arrays[f"{name}_currents"] = self.currents[name]
        np.savez_compressed(path, **arrays)

    @classmethod
    def load(cls, path: Path) -> FieldResponse:
        with np.load(path) as f:
            planes = [k.removesuffix("_currents") for k in f.files if k.endswith("_currents")]
            return cls(
                f["times_us"],
                {p: f[f"{p}_impacts_mm"] for p in planes},
                {p: f[f"{p}_currents"] for p in planes},
            )

    def average(self, plane: str) -> np.ndarray:
        """[wire offset, time] averaged over a whole pitch of impact positions (the impacts
        0..p/2 and their mirror images, trapezoid weights), as a track sees it."""
        c = self.currents[plane]
        mirrored = c[::-1, :, :]  # impact -b on wire k = impact +b on wire -k
        weights = np.ones(IMPACTS)
        weights[[0, -1]] = 0.5
        both = np.tensordot(weights, c, axes=(0, 1)) + np.tensordot(weights, mirrored, axes=(0, 1))
        return both / (2 * weights.sum())


class WirePlanes:
    """The 2D electrostatics of the ProtoDUNE-SP planes and the field response it gives."""

    def __init__(self, nominal_speed_mm_per_us: float = 1.6) -> None:
        self.wires = Wires.protodune_sp()
        self.drift = LineCharges(self.wires, self.wires.bias, DRIFT_FIELD_V_PER_MM)
        self.speed = nominal_speed_mm_per_us

    @cached_property
    def weighting(self) -> dict[str, LineCharges]:
        """The weighting potential of each readout plane's central wire."""
        out = {}
        for name in ("U", "V", "W"):
            volts = np.zeros(self.wires.x.size)
            volts[self.wires.central(name)] = 1.0
            out[name] = LineCharges(self.wires, volts, 0.0)
        return out

    def path(self, y0: float, max_us: float = 200.0) -> np.ndarray:
        """An electron's positions [n, 2] every PERIOD_US from (START_MM, y0) until it
        reaches a wire (or ``max_us``)."""
        from scipy.integrate import solve_ivp

        def velocity(_t: float, r: np.ndarray) -> np.ndarray:
            g = self.drift.gradient(r[0], r[1])  # electrons drift up the potential
            norm = float(np.hypot(g[0], g[1]))
            return g / norm * drift_speed(norm, self.speed)

        def on_a_wire(_t: float, r: np.ndarray) -> float:
            return float(
                np.min(np.hypot(r[0] - self.wires.x, r[1] - self.wires.y)) - WIRE_RADIUS_MM
            )

        on_a_wire.terminal = True
        times = np.arange(0.0, max_us, PERIOD_US)
        solution = solve_ivp(
            velocity,
            (0.0, max_us),
            [START_MM, y0],
            t_eval=times,
            events=on_a_wire,
            max_step=0.2,
            rtol=1e-6,
            atol=1e-5,
        )
        points = solution.y.T
        if solution.t_events[0].size:  # end exactly where it met the wire
            points = np.vstack([points, solution.y_events[0][0]])
        return points

    def response(self) -> FieldResponse:
        """Currents of wires -10..10 of U, V and W for IMPACTS start offsets per plane."""
        offsets = np.arange(-WIRE_OFFSETS, WIRE_OFFSETS + 1)
        impacts, currents, n_bins = {}, {}, 0
        induced: dict[str, list[np.ndarray]] = {}
        for name in ("U", "V", "W"):
            pitch = PITCH_MM[name]
            impacts[name] = np.linspace(0.0, pitch / 2, IMPACTS)
            induced[name] = []
            for y0 in impacts[name]:
                points = self.path(max(y0, 1e-3))  # y = 0 exactly would stop on a wire
                # charge on wire k = q phi_w(x, y - k p), q = -1 electron
                q = -self.weighting[name].potential(
                    points[None, :, 0], points[None, :, 1] - offsets[:, None] * pitch
                )
                induced[name].append(q)
                n_bins = max(n_bins, q.shape[1])
        for name in ("U", "V", "W"):
            charge = np.stack(
                [np.pad(q, ((0, 0), (0, n_bins - q.shape[1])), mode="edge") for q in induced[name]]
            )
            current = np.diff(charge, axis=2, prepend=charge[:, :, :1]) / PERIOD_US
            currents[name] = np.ascontiguousarray(current.transpose(1, 0, 2))  # [offset, impact, t]
        return FieldResponse(np.arange(n_bins) * PERIOD_US, impacts, currents)


# --- cold electronics ------------------------------------------------------------------------

# poles of the LArASIC shaper in units of 1 / shaping time: one real, two complex pairs
_SHAPER_POLES = np.array(
    [-2.94809, -2.82833 + 1.19361j, -2.82833 - 1.19361j, -2.40318 + 2.5928j, -2.40318 - 2.5928j]
)
GAIN_MV_PER_FC = 14.0
SHAPING_US = 2.2
POSTGAIN = 1.1365  # ProtoDUNE-SP's pulser calibration on top of the nominal gain
ELECTRON_FC = 1.602176634e-4  # one electron in fC
ADC_PER_MV = 4096 / 1400.0  # 12 bits over 0.2-1.6 V


def electronics_response(
    times_us: np.ndarray,
    gain_mv_per_fc: float = GAIN_MV_PER_FC,
    shaping_us: float = SHAPING_US,
) -> np.ndarray:
    """Output (mV) of the cold electronics at ``times_us`` for a unit charge of 1 fC
    arriving at t = 0: the shaper's impulse response, peak ``gain_mv_per_fc``."""
    t = np.asarray(times_us, float) / shaping_us
    # impulse response of 1 / prod(s - p_i): sum_i exp(p_i t) / prod_{j != i} (p_i - p_j)
    poles = _SHAPER_POLES
    residues = np.array([1 / np.prod(np.delete(poles[i] - poles, i)) for i in range(poles.size)])
    shape = np.real(np.exp(np.multiply.outer(t, poles)) @ residues)
    shape = np.where(t > 0, shape, 0.0)
    fine = np.linspace(0, 10, 20001)
    peak = np.max(np.real(np.exp(np.multiply.outer(fine, poles)) @ residues))
    return gain_mv_per_fc * shape / peak


# --- the response on the readout grid --------------------------------------------------------

BASELINE_ADC = {"U": 2350.0, "V": 2350.0, "W": 900.0}  # 1003.4 mV / 507.7 mV above 0.2 V
ADC_MAX = 4095
BEFORE_ARRIVAL_US = 25.0  # the kernel starts this long before the electron reaches W
AFTER_ARRIVAL_US = 25.0


SHIPPED_FIELD = Path(__file__).with_name("field_response.npz")


@functools.cache
def field_response() -> FieldResponse:
    """The ProtoDUNE-SP field response: the copy shipped with argonic (written by
    ``python -m argonic.detector.response``; a test checks it against a fresh computation),
    else computed here (~4 s of CPU, which every simulate and reco process would pay)."""
    if SHIPPED_FIELD.is_file():
        return FieldResponse.load(SHIPPED_FIELD)
    return WirePlanes().response()


@functools.cache
def readout_kernel(plane: str, tick_us: float = 0.5) -> np.ndarray:
    """ADC counts on wires -10..10 around the electrons' wire, per tick, for 1,000 electrons
    arriving at the collection plane at tick 0 (uniformly within the tick): field response
    x cold electronics x post-gain x ADC scale, [21, n] with column ``kernel_zero(tick_us)``
    at the arrival. Row k is the signal on wire (electrons' wire + k - 10)."""
    field = field_response()
    fine = field.average(plane)  # [offset, t] electrons/us per electron, PERIOD_US bins
    # the arrival: when the collection current peaks (impact-averaged)
    arrival = int(np.argmin(field.average("W")[WIRE_OFFSETS]))
    elec = electronics_response(np.arange(0, 30, PERIOD_US)) * ELECTRON_FC * 1000.0  # mV per ke-
    volts = np.array([np.convolve(row, elec) * PERIOD_US for row in fine])  # tails kept
    adc = -volts * ADC_PER_MV * POSTGAIN  # electrons are negative charge: collection positive
    step = int(round(tick_us / PERIOD_US))
    start, stop = (
        arrival - int(BEFORE_ARRIVAL_US / PERIOD_US),
        arrival + int(AFTER_ARRIVAL_US / PERIOD_US),
    )
    window = np.pad(adc, ((0, 0), (max(0, -start), max(0, stop - adc.shape[1]))))[
        :, max(start, 0) :
    ]
    # an arrival uniform within the tick: average over the tick's sub-bins, then sample
    box = np.ones(step) / step
    smoothed = np.array([np.convolve(row, box)[: stop - start] for row in window])
    return np.ascontiguousarray(smoothed[:, ::step])


def kernel_zero(tick_us: float = 0.5) -> int:
    """Column of ``readout_kernel`` at the electrons' arrival tick."""
    return int(round(BEFORE_ARRIVAL_US / tick_us))


def padded_shape(n_wires: int, n_ticks: int, wrapped: bool) -> tuple[int, int]:
    """The FFT grid of a plane: ticks padded by the kernel's length (no wrap-around in time),
    wires by the kernel's reach unless the plane's channels wrap (then circular, as they are)."""
    reach = 0 if wrapped else WIRE_OFFSETS
    length = kernel_zero() * 2 + 8
    return n_wires + 2 * reach, n_ticks + length


@functools.cache
def kernel_spectrum(plane: str, n_wires: int, n_ticks: int, wrapped: bool) -> np.ndarray:
    """The 2D real FFT of ``readout_kernel(plane)`` placed on ``padded_shape``'s grid so that
    multiplying a charge grid's spectrum by it convolves (wire offsets centred on 0, the
    arrival tick at 0)."""
    from scipy import fft

    rows, cols = padded_shape(n_wires, n_ticks, wrapped)
    kernel = readout_kernel(plane)
    grid = np.zeros((rows, cols), np.float64)
    offsets = np.arange(-WIRE_OFFSETS, WIRE_OFFSETS + 1) % rows
    ticks = (np.arange(kernel.shape[1]) - kernel_zero()) % cols
    grid[np.ix_(offsets, ticks)] = kernel
    return fft.rfft2(grid)


def on_grid(frame: np.ndarray, wrapped: bool) -> np.ndarray:
    """``frame`` [n_wires, n_ticks] placed on its padded FFT grid (zeros around)."""
    rows, cols = padded_shape(*frame.shape, wrapped)
    grid = np.zeros((rows, cols), np.float64)
    reach = (rows - frame.shape[0]) // 2
    grid[reach : reach + frame.shape[0], : frame.shape[1]] = frame
    return grid


def off_grid(grid: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The plane's own [n_wires, n_ticks] part of a padded grid."""
    reach = (grid.shape[0] - shape[0]) // 2
    return grid[reach : reach + shape[0], : shape[1]]


@dataclass(frozen=True)
class Noise:
    """The raw waveforms' noise: white (the paper's simulation) or shaped by the cold
    electronics (the spectrum of a real channel's dominant noise), of ``rms_adc`` per
    channel; ``coherent_adc``: noise shared by each front-end board's ``board`` channels
    (same spectrum); ``dead`` channels read their baseline only, ``noisy`` ones 5x the noise."""

    rms_adc: float = 2.5
    spectrum: str = "white"  # or "shaped"
    coherent_adc: float = 0.0
    board: int = 16
    dead: int = 0
    noisy: int = 0

    def waveforms(
        self, rng: np.random.Generator, shape: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(noise [n_wires, n_ticks] in ADC float32, the dead channels' indices)."""
        n_w, n_t = shape
        out = self._series(rng, n_w, n_t) * self.rms_adc
        if self.coherent_adc:
            common = self._series(rng, -(-n_w // self.board), n_t) * self.coherent_adc
            out += np.repeat(common, self.board, axis=0)[:n_w]
        bad = rng.choice(n_w, min(self.dead + self.noisy, n_w), replace=False)
        out[bad[self.dead :]] *= 5.0
        return out, bad[: self.dead]

    def _series(self, rng: np.random.Generator, n: int, n_t: int) -> np.ndarray:
        white = rng.standard_normal((n, n_t), dtype=np.float32)
        if self.spectrum == "white":
            return white
        if self.spectrum != "shaped":
            raise ValueError(f"noise spectrum must be 'white' or 'shaped', not {self.spectrum!r}")
        from scipy import fft

        shaper = np.abs(fft.rfft(electronics_response(np.arange(n_t) * 0.5)))
        shaper /= np.sqrt(np.mean(np.concatenate([shaper, shaper[1:-1]]) ** 2))  # unit RMS
        return fft.irfft(fft.rfft(white, axis=1) * shaper, n=n_t, axis=1).astype(np.float32)


def raw_waveforms(
    charge: np.ndarray,
    plane: str,
    wrapped: bool,
    rng: np.random.Generator | None,
    noise: Noise | None = None,
) -> np.ndarray:
    """ADC counts (int16, [n_wires, n_ticks]) of a plane whose wires receive ``charge``
    (ke- per wire and arrival tick): the readout kernel's 2D convolution (FFT), ``noise``
    (none if ``rng`` is None), the plane's baseline, 12-bit clipping."""
    from scipy import fft

    spectrum = kernel_spectrum(plane, *charge.shape, wrapped)
    grid = fft.rfft2(on_grid(charge, wrapped), workers=-1) * spectrum
    shape = padded_shape(*charge.shape, wrapped)
    adc = off_grid(fft.irfft2(grid, s=shape, workers=-1), charge.shape) + BASELINE_ADC[plane]
    if rng is not None:
        added, dead = (noise or Noise()).waveforms(rng, charge.shape)
        adc += added
        adc[dead] = BASELINE_ADC[plane]  # a dead channel reads neither signal nor noise
    return np.clip(np.rint(adc), 0, ADC_MAX).astype(np.int16)


if __name__ == "__main__":  # regenerate the shipped field response
    WirePlanes().response().save(SHIPPED_FIELD)
