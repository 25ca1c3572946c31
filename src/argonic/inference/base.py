"""The ModelInterface contract: patches in, per-hit scores out, however the network runs.

Implementations (local in-process, remote server) only provide ``_predict_batch``; the
contract (validation, the caller's batching, empty input, closing) lives here once.
"""

from __future__ import annotations

import abc
import time
from types import TracebackType

import numpy as np

from argonic import ArgonicError
from argonic.patches import PATCH_SIZE, cut_patches

PATCH_SHAPE = (PATCH_SIZE, PATCH_SIZE, 1)
N_SCORES = 4  # track, em, none, michel
_CHECK_CHUNK = 4096  # patches per finiteness check: bounds the temporary mask


class InterfaceError(ArgonicError):
    """A ModelInterface cannot be built or used (bad configuration, closed, backend failure)."""


class InvalidPatchesError(ArgonicError, ValueError):
    """The patches given to ``predict`` have the wrong shape, dtype or values."""


def validate_patches(patches: np.ndarray) -> np.ndarray:
    """Return ``patches`` as a C-contiguous [N, 48, 48, 1] float32 array, or raise.

    Raises InvalidPatchesError naming the problem: not an array, wrong shape, dtype
    other than float32, or NaN/inf (with the index of the first bad patch).
    """
    if not isinstance(patches, np.ndarray):
        raise InvalidPatchesError(f"patches must be a numpy array, got {type(patches).__name__}")
    if patches.ndim != 4 or patches.shape[1:] != PATCH_SHAPE:
        raise InvalidPatchesError(
            f"patches must have shape [N, {', '.join(map(str, PATCH_SHAPE))}], "
            f"got {list(patches.shape)}"
        )
    if patches.dtype != np.float32:
        raise InvalidPatchesError(f"patches must be float32, got {patches.dtype}")
    patches = np.ascontiguousarray(patches)
    for start in range(0, len(patches), _CHECK_CHUNK):
        finite = (
            np.isfinite(patches[start : start + _CHECK_CHUNK])
            .reshape(-1, np.prod(PATCH_SHAPE))
            .all(axis=1)
        )
        if not finite.all():
            first = start + int(np.argmin(finite))
            raise InvalidPatchesError(f"patch {first} (of {len(patches)}) contains NaN or inf")
    return patches


class ModelInterface(abc.ABC):
    """Runs the EmTrackMichelId network on patches.

    ``predict`` splits the input into batches of ``batch_size`` patches (the caller's
    batch size: one request each for a remote interface) and returns [N, 4] float32
    scores [track, em, none, michel] in input order. Use as a context manager or call
    ``close()``.
    """

    def __init__(self, batch_size: int = 256) -> None:
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise InterfaceError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
        self.batch_size = int(batch_size)
        self._closed = False
        self.seconds_patches = 0.0  # time predict_plane spent cutting patches (the caller's CPU)

    @property
    def closed(self) -> bool:
        return self._closed

    def predict(self, patches: np.ndarray) -> np.ndarray:
        """Scores [N, 4] float32 (track, em, none, michel) of [N, 48, 48, 1] float32 patches."""
        if self._closed:
            raise InterfaceError(f"{type(self).__name__} is closed")
        patches = validate_patches(patches)
        out = np.empty((len(patches), N_SCORES), np.float32)
        for start in range(0, len(patches), self.batch_size):
            batch = patches[start : start + self.batch_size]
            scores = self._predict_batch(batch)
            if scores.shape != (len(batch), N_SCORES):
                raise InterfaceError(
                    f"{type(self).__name__} returned scores of shape {scores.shape} "
                    f"for {len(batch)} patches"
                )
            out[start : start + len(batch)] = scores
        return out

    def predict_plane(
        self, image: np.ndarray, wire: np.ndarray, peak_tick: np.ndarray
    ) -> np.ndarray:
        """Scores [N, 4] of the N hits (wire, peak tick) of one preprocessed (TPC, plane) image.

        The default cuts the hits' patches here (PointIdAlg rules, ``cut_patches``) and calls
        ``predict``; an interface that can ship the plane instead (the remote plane mode)
        overrides it. Either way the network sees the same patches.
        """
        t0 = time.perf_counter()
        patches = np.empty((len(wire), *PATCH_SHAPE), np.float32)
        cut_patches(
            np.asarray(image, np.float32),
            np.asarray(wire),
            np.asarray(peak_tick),
            out=patches[..., 0],
        )
        self.seconds_patches += time.perf_counter() - t0
        return self.predict(patches)

    @abc.abstractmethod
    def _predict_batch(self, batch: np.ndarray) -> np.ndarray:
        """Scores [n, 4] of one validated, non-empty batch of at most ``batch_size`` patches."""

    def close(self) -> None:
        """Release the backend; further ``predict`` calls raise InterfaceError."""
        self._closed = True

    def __enter__(self) -> ModelInterface:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
