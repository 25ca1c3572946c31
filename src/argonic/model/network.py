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

PATCH_SIZE = 48
INPUT_NAME = "main_input"
OUTPUT_NAMES = ("em_trk_none_netout", "michel_netout")
N_PARAMETERS = 11_900_420
FLOP_PER_PATCH = 28.4e6  # 2 x 14.2 M multiply-adds
SCORE_NAMES = ("track", "em", "none", "michel")
DEFAULT_DROPOUT = 0.2


class EmTrackMichelNet(nn.Module):
    """The production network; ``forward`` returns (softmax [N, 3], sigmoid [N, 1])."""

    def __init__(self, dropout: float = DEFAULT_DROPOUT) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 48, kernel_size=5, stride=1, padding=0)
        self.dense1 = nn.Linear(44 * 44 * 48, 128)
        self.dense2 = nn.Linear(128, 32)
        self.em_trk_none = nn.Linear(32, 3)
        self.michel = nn.Linear(32, 1)
        self.dropout = nn.Dropout(dropout)

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


def predict_scores(network: nn.Module, patches: np.ndarray | torch.Tensor,
                   batch_size: int = 256) -> np.ndarray:
    """[N, 4] float32 scores [track, em, none, michel] of [N, 48, 48, 1] patches (eval mode)."""
    x = torch.as_tensor(np.ascontiguousarray(patches, dtype=np.float32))
    out = np.empty((len(x), 4), np.float32)
    was_training = network.training
    network.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(x), batch_size):
                em_trk_none, michel = network(x[start:start + batch_size])
                out[start:start + batch_size, :3] = em_trk_none.numpy()
                out[start:start + batch_size, 3:] = michel.numpy()
    finally:
        network.train(was_training)
    return out
