"""The training set: patches of hits sampled from simulated, truth-labelled event files.

Every ordinary hit is kept with one probability (``hit_fraction``), so track and em keep the
natural mix of the events (~3:1); Michel hits and "none" hits (real noise hits) are kept with
higher probabilities. Each patch remembers its keep probability (``PatchSet.keep``), its
weight in the natural mix being ``1 / keep``. ``PatchSet.save``/``load`` are the HDF5
dataset cache; ``flip_batch`` the augmentation (random flips along wire and drift).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import numpy as np
import torch

from argonic import ArgonicError
from argonic._util import atomic_output, progress, release_free_memory
from argonic.detector.event import EM, NONE, TRACK, Hits
from argonic.model.network import PATCH_SIZE


@dataclass
class PatchSet:
    """Labelled patches: [N, 48, 48, 1] (float16 or float32), label (TRACK/EM/NONE) uint8,
    michel bool, keep float32 (the probability with which the hit was sampled)."""

    patches: np.ndarray
    label: np.ndarray
    michel: np.ndarray
    keep: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.keep is None:
            self.keep = np.ones(len(self.label), np.float32)

    def __len__(self) -> int:
        return len(self.label)

    @property
    def weight(self) -> np.ndarray:
        """Weight of each patch in the natural mix of hits (1 / keep probability)."""
        return 1.0 / np.asarray(self.keep, np.float64)

    def select(self, idx: np.ndarray) -> PatchSet:
        return PatchSet(self.patches[idx], self.label[idx], self.michel[idx], self.keep[idx])

    @classmethod
    def concat(cls, parts: list[PatchSet]) -> PatchSet:
        """One set of ``parts``, which are emptied on the way: each part is freed once copied
        and the pages given back, so a training set of several GB needs its own size in
        memory, not twice that."""
        if not parts:
            return cls(
                np.zeros((0, PATCH_SIZE, PATCH_SIZE, 1), np.float16),
                np.zeros(0, np.uint8),
                np.zeros(0, bool),
                np.zeros(0, np.float32),
            )
        keys = ("patches", "label", "michel", "keep")
        n = sum(len(p) for p in parts)
        out = {
            k: np.empty((n, *getattr(parts[0], k).shape[1:]), getattr(parts[0], k).dtype)
            for k in keys
        }
        start = 0
        parts.reverse()
        while parts:
            part = parts.pop()
            for k in keys:
                out[k][start : start + len(part)] = getattr(part, k)
            start += len(part)
            del part
        release_free_memory()  # glibc would keep the parts' pages: ~2x the set's size in RSS
        return cls(*(out[k] for k in keys))

    def capped(self, max_patches: int | None, rng: np.random.Generator) -> PatchSet:
        """At most ``max_patches`` of these, a uniform draw folded into the keep
        probabilities (None or enough: unchanged)."""
        if max_patches is None or len(self) <= max_patches:
            return self
        data = self.select(np.sort(rng.permutation(len(self))[:max_patches]))
        data.keep = (data.keep * (max_patches / len(self))).astype(np.float32)
        return data

    def counts(self) -> dict[str, int]:
        return {
            "track": int(np.sum(self.label == TRACK)),
            "em": int(np.sum(self.label == EM)),
            "none": int(np.sum(self.label == NONE)),
            "michel": int(self.michel.sum()),
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        import h5py

        with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
            for k in ("patches", "label", "michel", "keep"):
                f.create_dataset(k, data=getattr(self, k))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PatchSet:
        import h5py

        try:
            with h5py.File(path, "r") as f:
                keep = f["keep"][:] if "keep" in f else None
                return cls(f["patches"][:], f["label"][:], f["michel"][:], keep)
        except (OSError, KeyError) as exc:
            raise ArgonicError(f"{path}: not a readable training-set cache: {exc}") from None


# --- training set from events ---------------------------------------------------------------


def keep_probability(
    hits: Hits, hit_fraction: float, michel_keep: float = 1.0, none_keep: float = 1.0
) -> np.ndarray:
    """Per hit, the probability to take it into a patch set: Michel hits ``michel_keep``,
    none (noise) hits ``none_keep``, every other hit ``hit_fraction`` (the natural mix)."""
    if not 0 < hit_fraction <= 1 or not 0 < michel_keep <= 1 or not 0 < none_keep <= 1:
        raise ArgonicError(
            f"keep probabilities must be in (0, 1]: hit_fraction {hit_fraction}, "
            f"michel_keep {michel_keep}, none_keep {none_keep}"
        )
    p = np.where(hits.label == NONE, none_keep, hit_fraction)
    return np.where(hits.michel, michel_keep, p).astype(np.float32)


EventSource = tuple[str | os.PathLike[str], range]  # an event file and events of it


def build_patch_set(
    events_file: str | os.PathLike[str] | list[EventSource],
    event_indices: range | None = None,
    seed: int = 1,
    hit_fraction: float = 0.1,
    michel_keep: float = 1.0,
    none_keep: float = 1.0,
    max_patches: int | None = None,
    dtype: type = np.float16,
    show_progress: bool = True,
) -> PatchSet:
    """Patches of hits sampled from the events ``event_indices`` of ``events_file``, or from
    several files: a list of (file, event range) (see ``keep_probability``).

    The draw of the k-th file is seeded by ``seed`` (k = 0) or ``[seed, k]``.
    ``max_patches``: a uniform cut to at most that many, folded into the keep probabilities.
    Patches are stored as ``dtype`` (float16 halves the memory; the values, 0.5 x clipped
    ke-, keep 3 significant digits).
    """
    from argonic.detector.eventfile import EventFile
    from argonic.patches import event_patches

    if isinstance(events_file, list):
        sources = events_file
    else:
        if event_indices is None:
            raise ArgonicError("build_patch_set: give the event range of the file")
        sources = [(events_file, event_indices)]
    parts: list[PatchSet] = []
    events = [(k, i) for k, (_, indices) in enumerate(sources) for i in indices]
    rngs = [np.random.default_rng(seed if k == 0 else [seed, k]) for k in range(len(sources))]
    with contextlib.ExitStack() as stack:
        files: dict[int, EventFile] = {}
        for k, i in progress(events, len(events), "patches", show_progress):
            if k not in files:
                stack.close()  # one file open at a time
                files = {k: stack.enter_context(EventFile(sources[k][0]))}
            f, rng = files[k], rngs[k]
            event = f[i]
            p = keep_probability(event.hits, hit_fraction, michel_keep, none_keep)
            sel = np.flatnonzero(rng.random(len(p)) < p)
            hits = event.hits.select(sel)
            patches = event_patches(event, f.detector, hits).astype(dtype)
            parts.append(PatchSet(patches, hits.label, hits.michel, p[sel]))
    rng = rngs[-1] if rngs else np.random.default_rng(seed)
    return PatchSet.concat(parts).capped(max_patches, rng)


def flip_batch(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Flip each patch [N, 48, 48, 1] along the wire and/or drift axis, each with p 0.5."""
    n = x.shape[0]
    fw = torch.from_numpy(rng.random(n) < 0.5)
    fd = torch.from_numpy(rng.random(n) < 0.5)
    x = torch.where(fw[:, None, None, None], x.flip(1), x)
    return torch.where(fd[:, None, None, None], x.flip(2), x)
