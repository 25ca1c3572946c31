"""The HDF5 event file: plane signals (sparse), hits with truth labels, run/event ids.

Layout (format "argonic-events", version 2; documented in docs/event-file.md; version 1
files, without ``raw/``, are read too):

    /                      attrs: format, format_version, detector, seed, run, n_events, argonic_version
    /events/NNNNNN/        attrs: run, subrun, event
        frames/            one row per (TPC, plane) frame that has signal:
            tpc, plane, n_wires, n_ticks   int16/int8/int32/int32 [F]
            offset                         int64 [F+1]: pixels of frame f are [offset[f], offset[f+1])
            index                          uint32 [K]: wire * n_ticks + tick of each non-zero pixel
            value                          float32 [K]: deconvolved charge in ke-/tick
        hits/              one dataset per column of argonic.detector.event.Hits
        raw/               where the raw waveforms were simulated: one int16 dataset
            <tpc>_<plane>  [n_wires, n_ticks] of ADC counts per (TPC, plane) (gzip, shuffle)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import h5py
import numpy as np

from argonic import ArgonicError, __version__
from argonic._util import atomic_output
from argonic.detector.event import Event, Hits, PlaneFrame, RawFrame
from argonic.detector.geometry import Detector, get_detector

FORMAT = "argonic-events"
FORMAT_VERSION = 2
READ_VERSIONS = (1, 2)
_COMPRESS = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
_COMPRESS_RAW = {"compression": "gzip", "compression_opts": 1, "shuffle": True}


def write_frames(fr: h5py.Group, frames: list[PlaneFrame]) -> None:
    """The sparse deconvolved frames into ``fr`` (the layout above, also the reco file's)."""
    fr["tpc"] = np.array([f.tpc for f in frames], np.int16)
    fr["plane"] = np.array([f.plane for f in frames], np.int8)
    fr["n_wires"] = np.array([f.n_wires for f in frames], np.int32)
    fr["n_ticks"] = np.array([f.n_ticks for f in frames], np.int32)
    fr["offset"] = np.concatenate([[0], np.cumsum([len(f.value) for f in frames])]).astype(np.int64)
    index = [
        f.wire.astype(np.uint32) * np.uint32(f.n_ticks) + f.tick.astype(np.uint32) for f in frames
    ]
    fr.create_dataset(
        "index", data=np.concatenate(index) if index else np.zeros(0, np.uint32), **_COMPRESS
    )
    values = [f.value for f in frames]
    fr.create_dataset(
        "value",
        data=np.concatenate(values).astype(np.float32) if values else np.zeros(0, np.float32),
        **_COMPRESS,
    )


class EventFileWriter:
    """Write events one by one; the file appears under its name only when closed without error."""

    def __init__(
        self, path: str | os.PathLike[str], detector_name: str, seed: int, run: int
    ) -> None:
        get_detector(detector_name)  # validate the name before creating anything
        self._atomic = atomic_output(path)
        self._h5: h5py.File | None = None
        self._meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "detector": detector_name,
            "seed": seed,
            "run": run,
            "argonic_version": __version__,
        }
        self.n_events = 0

    def __enter__(self) -> EventFileWriter:
        tmp = self._atomic.__enter__()
        self._h5 = h5py.File(tmp, "w")
        self._h5.attrs.update(self._meta)
        self._h5.create_group("events")
        return self

    def write(self, event: Event) -> None:
        """Append one event."""
        assert self._h5 is not None, "use EventFileWriter as a context manager"
        g = self._h5["events"].create_group(f"{self.n_events:06d}")
        g.attrs.update({"run": event.run, "subrun": event.subrun, "event": event.event})
        write_frames(g.create_group("frames"), event.frames)
        hg = g.create_group("hits")
        for name, col in event.hits.columns().items():
            hg.create_dataset(name, data=col, **(_COMPRESS if len(col) else {}))
        if event.raw:
            rg = g.create_group("raw")
            for r in event.raw:
                chunks = (min(64, r.adc.shape[0]), r.adc.shape[1])
                rg.create_dataset(f"{r.tpc}_{r.plane}", data=r.adc, chunks=chunks, **_COMPRESS_RAW)
        self.n_events += 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._h5 is not None
        try:
            self._h5.attrs["n_events"] = self.n_events
            self._h5.close()
        finally:
            self._atomic.__exit__(exc_type, exc, tb)


class EventFile:
    """Read an argonic event file: ``len(f)``, ``f[i]`` (an Event), iteration, ``f.detector``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise ArgonicError(f"{self.path}: no such file")
        try:
            self._h5 = h5py.File(self.path, "r")
        except OSError as exc:
            raise ArgonicError(
                f"{self.path}: not a readable HDF5 file (truncated or foreign?): {exc}"
            ) from None
        if self._h5.attrs.get("format") != FORMAT:
            self._h5.close()
            raise ArgonicError(
                f"{self.path}: not an argonic event file (no format={FORMAT!r} attribute)"
            )
        version = int(self._h5.attrs.get("format_version", -1))
        if version not in READ_VERSIONS:
            self._h5.close()
            raise ArgonicError(
                f"{self.path}: event file format version {version}, expected "
                f"{' or '.join(map(str, READ_VERSIONS))} (this argonic reads those)"
            )
        self.detector_name = str(self._h5.attrs["detector"])
        self.detector: Detector = get_detector(self.detector_name)
        self.seed = int(self._h5.attrs["seed"])
        self._keys = sorted(self._h5["events"].keys())

    def __len__(self) -> int:
        return len(self._keys)

    def __getitem__(self, i: int) -> Event:
        if not -len(self) <= i < len(self):
            raise ArgonicError(f"event index {i} out of range: {self.path} has {len(self)} events")
        try:
            return self._read(self._h5["events"][self._keys[i]])
        except (OSError, KeyError) as exc:
            raise ArgonicError(
                f"{self.path}: event {i} is unreadable (truncated file?): {exc}"
            ) from None

    def __iter__(self) -> Iterator[Event]:
        for i in range(len(self)):
            yield self[i]

    def _read(self, g: h5py.Group) -> Event:
        fr = g["frames"]
        offset = fr["offset"][:]
        index = fr["index"][:]
        value = fr["value"][:]
        frames = []
        for f, (tpc, plane, nw, nt) in enumerate(
            zip(fr["tpc"][:], fr["plane"][:], fr["n_wires"][:], fr["n_ticks"][:], strict=True)
        ):
            idx = index[offset[f] : offset[f + 1]]
            frames.append(
                PlaneFrame(
                    int(tpc),
                    int(plane),
                    int(nw),
                    int(nt),
                    (idx // nt).astype(np.int32),
                    (idx % nt).astype(np.int32),
                    value[offset[f] : offset[f + 1]],
                )
            )
        hg = g["hits"]  # michel_id is absent from files of earlier versions: filled from michel
        hits = Hits(**{name: hg[name][:] for name in Hits.DTYPES if name in hg})
        raw = [self._raw_frame(name, data) for name, data in g["raw"].items()] if "raw" in g else []
        raw.sort(key=lambda r: (r.tpc, r.plane))
        a = g.attrs
        return Event(
            int(a["run"]), int(a["subrun"]), int(a["event"]), frames, hits, self.detector_name, raw
        )

    def _raw_frame(self, name: str, data: h5py.Dataset) -> RawFrame:
        """One raw frame, checked against the detector's channel map (wires x ticks)."""
        try:
            tpc, plane = (int(v) for v in name.split("_"))
            expected = (self.detector.planes[plane].n_wires, self.detector.n_ticks)
            self.detector.tpcs[tpc]
        except (ValueError, IndexError):
            raise ArgonicError(
                f"{self.path}: raw frame {name!r} names no (TPC, plane) of {self.detector_name}"
            ) from None
        if data.shape != expected:
            raise ArgonicError(
                f"{self.path}: raw frame of TPC {tpc} plane {plane} has {data.shape[0]} wires x "
                f"{data.shape[1]} ticks, but {self.detector_name} reads {expected[0]} x "
                f"{expected[1]}: the file does not match the detector's channel map"
            )
        return RawFrame(tpc, plane, data[:])

    def close(self) -> None:
        self._h5.close()

    def __enter__(self) -> EventFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
