"""The EmTrackMichelId network against the production definition (docs/reference.md, section 4)."""

import numpy as np
import pytest
import torch

from argonic.detector.event import EM, NONE, TRACK
from argonic.model.network import (
    N_PARAMETERS,
    ByteDropout,
    build_network,
    count_parameters,
    predict_scores,
)


@pytest.fixture(scope="module")
def network():
    return build_network(seed=3).eval()


def keras_reference(network, patches: np.ndarray) -> np.ndarray:
    """The Keras model in numpy (NHWC conv and flatten): [track, em, none, michel]."""
    w = {k: v.detach().numpy().astype(np.float64) for k, v in network.state_dict().items()}
    x = patches[..., 0].astype(np.float64)
    windows = np.lib.stride_tricks.sliding_window_view(x, (5, 5), axis=(1, 2))  # [N, 44, 44, 5, 5]
    conv = np.einsum("nhwij,fij->nhwf", windows, w["conv.weight"][:, 0]) + w["conv.bias"]
    h = np.maximum(conv, 0).reshape(len(x), -1)  # Keras Flatten of [N, 44, 44, 48]
    h = np.maximum(h @ w["dense1.weight"].T + w["dense1.bias"], 0)
    h = np.maximum(h @ w["dense2.weight"].T + w["dense2.bias"], 0)
    logits = h @ w["em_trk_none.weight"].T + w["em_trk_none.bias"]
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    softmax /= softmax.sum(1, keepdims=True)
    michel = 1 / (1 + np.exp(-(h @ w["michel.weight"].T + w["michel.bias"])))
    return np.concatenate([softmax, michel], axis=1)


def test_parameter_count_matches_production():
    assert count_parameters(build_network()) == N_PARAMETERS == 11_900_420


def test_output_shapes_and_ranges(network):
    x = torch.from_numpy(
        np.random.default_rng(0).uniform(-5, 15, (5, 48, 48, 1)).astype(np.float32)
    )
    em_trk_none, michel = network(x)
    assert em_trk_none.shape == (5, 3) and michel.shape == (5, 1)
    np.testing.assert_allclose(em_trk_none.sum(1).detach().numpy(), 1.0, atol=1e-6)
    assert ((michel > 0) & (michel < 1)).all()


def test_matches_keras_layout_reference(network):
    """Same scores as an independent numpy model that flattens in Keras's NHWC order."""
    patches = np.random.default_rng(1).uniform(-5, 15, (3, 48, 48, 1)).astype(np.float32)
    np.testing.assert_allclose(
        predict_scores(network, patches), keras_reference(network, patches), atol=2e-5
    )


@pytest.mark.parametrize("label", [TRACK, EM, NONE])
def test_output_order_follows_truth_labels(label):
    """Forcing the softmax head towards one class puts the top score at that label's index."""
    net = build_network(seed=0).eval()
    with torch.no_grad():
        net.em_trk_none.weight.zero_()
        net.em_trk_none.bias.copy_(torch.tensor([0.0, 0.0, 0.0]))
        net.em_trk_none.bias[label] = 10.0
        net.michel.weight.zero_()
        net.michel.bias.fill_(10.0)
    scores = predict_scores(net, np.zeros((2, 48, 48, 1), np.float32))
    assert scores.shape == (2, 4) and scores.dtype == np.float32
    assert (scores[:, :3].argmax(1) == label).all()
    assert (scores[:, 3] > 0.99).all()  # column 3 is the michel head


def test_byte_dropout_rate_and_scale():
    drop = ByteDropout(0.2)
    x = torch.ones(200_000)
    y = drop.train()(x)
    dropped = (y == 0).float().mean().item()
    assert drop.p == 51 / 256 and abs(dropped - drop.p) < 0.01
    np.testing.assert_allclose(y[y != 0].numpy(), 1 / (1 - drop.p), rtol=1e-6)
    assert abs(y.mean().item() - 1.0) < 0.01  # expectation preserved
    assert torch.equal(drop.eval()(x), x)
