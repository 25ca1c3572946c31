"""The EmTrackMichelId CNN of ProtoDUNE-SP (larrecodnn PointIdAlg), in PyTorch.

Input "main_input" [N, 48, 48, 1] float32, NHWC as in Keras (first patch axis: wire,
second: drift). Conv2D 48x5x5 valid + ReLU -> Dropout -> Flatten (Keras NHWC order, so
Keras weights map one to one) -> Dense 128 ReLU -> Dropout -> Dense 32 ReLU -> Dropout ->
heads "em_trk_none_netout" (Dense 3 softmax: [track, em, none]) and "michel_netout"
(Dense 1 sigmoid). 11,900,420 trainable parameters.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from argonic.repository import INPUT_NAME, OUTPUT_NAMES, PATCH_SIZE

__all__ = ["INPUT_NAME", "OUTPUT_NAMES", "PATCH_SIZE"]  # re-exported: the network's signature
N_PARAMETERS = 11_900_420
FLOP_PER_PATCH = 28.4e6  # 2 x 14.2 M multiply-adds
DEFAULT_DROPOUT = 0.2
_CONV_SHAPE = (48, 44, 44)  # filters, wire, drift after the valid 5x5 convolution


class ByteDropout(nn.Module):
    """Dropout with masks from random bytes: drop probability round(256 p) / 256.

    Same function as ``nn.Dropout`` (up to that rounding), cheaper on the CPU: the
    44x44x48 feature map needs 93k random numbers per patch, and with ``nn.Dropout``
    (``bernoulli_``) a training step ran ~1.3x slower than with this.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.threshold = round(256 * p)
        self.p = self.threshold / 256

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.threshold == 0:
            return x
        n = x.numel()
        words = torch.empty((n + 7) // 8, dtype=torch.int64, device=x.device).random_(
            -(2**63), None
        )
        keep = words.view(torch.uint8)[:n].view(x.shape) >= self.threshold
        return x * (keep.to(x.dtype) * (1.0 / (1.0 - self.p)))


class EmTrackMichelNet(nn.Module):
    """The production network; ``forward`` returns (softmax [N, 3], sigmoid [N, 1])."""

    def __init__(self, dropout: float = DEFAULT_DROPOUT) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 48, kernel_size=5, stride=1, padding=0)
        self.dense1 = nn.Linear(44 * 44 * 48, 128)
        self.dense2 = nn.Linear(128, 32)
        self.em_trk_none = nn.Linear(32, 3)
        self.michel = nn.Linear(32, 1)
        self.dropout = ByteDropout(dropout)

    def features(self, main_input: torch.Tensor) -> torch.Tensor:
        """The 32 features after the last hidden layer, for [N, 48, 48, 1] patches."""
        x = main_input.permute(0, 3, 1, 2)  # NHWC -> NCHW view (C = 1: same memory order)
        x = self.dropout(torch.relu(self.conv(x)))
        # Keras flattens NHWC: index (wire * 44 + drift) * 48 + filter.
        x = x.permute(0, 2, 3, 1).flatten(1)
        x = self.dropout(torch.relu(self.dense1(x)))
        return self.dropout(torch.relu(self.dense2(x)))

    def logits(self, main_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-activation heads: ([N, 3] softmax logits, [N, 1] sigmoid logit), for training."""
        f = self.features(main_input)
        return self.em_trk_none(f), self.michel(f)

    def forward(self, main_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        em_trk_none, michel = self.logits(main_input)
        return torch.softmax(em_trk_none, dim=1), torch.sigmoid(michel)


def keras_to_nchw_rows(weight: torch.Tensor) -> torch.Tensor:
    """Dense 128 weight [128, 44*44*48] from NHWC input order to NCHW input order."""
    f, h, w = _CONV_SHAPE
    return weight.reshape(-1, h, w, f).permute(0, 3, 1, 2).reshape(weight.shape[0], -1)


def nchw_to_keras_rows(weight: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`keras_to_nchw_rows`."""
    f, h, w = _CONV_SHAPE
    return weight.reshape(-1, f, h, w).permute(0, 2, 3, 1).reshape(weight.shape[0], -1)


class InferenceGraph(nn.Module):
    """Inference-only form of the network: the same function, no dropout, and the Dense 128
    weight rows permuted to NCHW input order so that the convolution output is flattened
    without a transpose (ONNX Runtime on CPU: ~1.3x faster than the NHWC graph)."""

    def __init__(self, network: EmTrackMichelNet) -> None:
        super().__init__()
        self.conv = network.conv
        self.dense1 = nn.Linear(network.dense1.in_features, network.dense1.out_features)
        with torch.no_grad():
            self.dense1.weight.copy_(keras_to_nchw_rows(network.dense1.weight))
            self.dense1.bias.copy_(network.dense1.bias)
        self.dense2, self.em_trk_none, self.michel = (
            network.dense2,
            network.em_trk_none,
            network.michel,
        )

    def forward(self, main_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = main_input.reshape(-1, 1, PATCH_SIZE, PATCH_SIZE)  # NHWC with C = 1 is NCHW
        x = torch.relu(self.conv(x)).flatten(1)
        x = torch.relu(self.dense2(torch.relu(self.dense1(x))))
        return torch.softmax(self.em_trk_none(x), dim=1), torch.sigmoid(self.michel(x))


def build_network(seed: int | None = 0, dropout: float = DEFAULT_DROPOUT) -> EmTrackMichelNet:
    """A network with seeded random initial weights (``seed=None``: torch's global RNG)."""
    if seed is None:
        return EmTrackMichelNet(dropout)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return EmTrackMichelNet(dropout)


def count_parameters(network: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in network.parameters() if p.requires_grad)


def predict_scores(
    network: nn.Module, patches: np.ndarray | torch.Tensor, batch_size: int = 256
) -> np.ndarray:
    """[N, 4] float32 scores [track, em, none, michel] of [N, 48, 48, 1] patches (eval mode)."""
    x = torch.as_tensor(np.ascontiguousarray(patches, dtype=np.float32))
    out = np.empty((len(x), 4), np.float32)
    was_training = network.training
    network.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(x), batch_size):
                em_trk_none, michel = network(x[start : start + batch_size])
                out[start : start + batch_size, :3] = em_trk_none.numpy()
                out[start : start + batch_size, 3:] = michel.numpy()
    finally:
        network.train(was_training)
    return out
