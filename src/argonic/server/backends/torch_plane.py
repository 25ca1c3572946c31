"""The plane model on the network's torch device: image and patches never leave it.

When the plane model's network runs on the TorchScript backend (CPU or CUDA), a plane
request is checked in numpy (:func:`argonic.patches.decode_plane_pixels`, the rules of
``decode_plane``), each hit's patch origin computed with :func:`argonic.patches.patch_origin`
(floor(tick / DRIFT_WINDOW) minus half a patch), and only the sparse pixels and the
origins are copied to the device. There the padded image is scattered from the pixels, each
hit's 48x48 patch gathered by index arithmetic (PointIdAlg rules of
:func:`argonic.patches.cut_patches`: zeros outside the plane, far-out hits clamped onto the
zero border) and the network run in chunks of ``execution_batch_size`` patches; only the
heads come back to the host.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from argonic.patches import PATCH_SIZE, decode_plane_pixels, patch_origin
from argonic.server.backends.torchscript import TorchScriptBackend

PAD = PATCH_SIZE  # zero border around the image: a clamped patch lies wholly inside it


def scatter_plane(shape: tuple[int, int], index: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """The float32 image [n_wires + 2*PAD, n_bins + 2*PAD] of sparse pixels (flat indices into
    the [n_wires, n_bins] plane), with a zero border of PAD pixels, on ``index``'s device."""
    n_wires, n_bins = shape
    width = n_bins + 2 * PAD
    padded = torch.zeros((n_wires + 2 * PAD) * width, dtype=torch.float32, device=index.device)
    padded[(index // n_bins + PAD) * width + index % n_bins + PAD] = value.to(torch.float32)
    return padded.view(n_wires + 2 * PAD, width)


def gather_patches(padded: torch.Tensor, w0: torch.Tensor, d0: torch.Tensor) -> torch.Tensor:
    """The [n, 48, 48] patches whose first wire/drift bin in the plane are ``w0``/``d0``,
    out of :func:`scatter_plane`'s padded image (hits outside by more than a patch see zeros)."""
    w0 = (w0 + PAD).clamp(0, padded.shape[0] - PATCH_SIZE)
    d0 = (d0 + PAD).clamp(0, padded.shape[1] - PATCH_SIZE)
    offsets = torch.arange(PATCH_SIZE, device=padded.device)
    return padded[(w0[:, None] + offsets)[:, :, None], (d0[:, None] + offsets)[:, None, :]]


def plane_on_device(
    backend: TorchScriptBackend, tensors: dict[str, np.ndarray]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(padded image, patch first wires, patch first bins) of a plane request, on the
    backend's device; PlaneRequestError for a bad request. Call inside ``device_context``."""
    shape, index, value, wire, tick = decode_plane_pixels(tensors)
    w0, d0 = patch_origin(wire, tick)
    origins = backend.to_device("origins", np.stack([w0, d0]))
    padded = scatter_plane(
        shape, backend.to_device("pixel_index", index), backend.to_device("pixel_value", value)
    )
    return padded, origins[0], origins[1]


class DevicePlane:
    """Runs plane requests with the image and patches on a TorchScript backend's device."""

    def __init__(
        self,
        backend: TorchScriptBackend,
        output_dims: dict[str, tuple[int, ...]],
        chunk: int,
    ) -> None:
        self.backend = backend
        self.output_dims = output_dims
        self.chunk = chunk

    def run(self, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Answer one plane request: outputs [N, ...] for its N hits (PlaneRequestError if bad)."""
        backend = self.backend
        with backend.device_context():
            padded, w0, d0 = plane_on_device(backend, tensors)
            n = len(w0)
            outputs: dict[str, Any] = {}
            for start in range(0, n, self.chunk):
                stop = min(start + self.chunk, n)
                patches = gather_patches(padded, w0[start:stop], d0[start:stop])
                result = backend.forward([patches[..., None]])
                for name in self.output_dims:
                    if name not in outputs:
                        outputs[name] = result[name].new_empty((n, *result[name].shape[1:]))
                    outputs[name][start:stop].copy_(result[name])
            if not n:  # no hits: empty heads, widths from the config
                return {
                    name: np.zeros((0, *dims), np.float32)
                    for name, dims in self.output_dims.items()
                }
            return backend.to_host(outputs)
