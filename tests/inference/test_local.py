"""Local ModelInterface implementations: the contract, validation, chunking, configuration."""

import numpy as np
import pytest

from argonic import ArgonicError
from argonic.inference import InterfaceError, InvalidPatchesError, make_interface
from argonic.model.export import load_network
from argonic.model.network import predict_scores
from argonic.settings import load_settings

BACKENDS = ["onnxruntime", "torch"]


@pytest.fixture(scope="module")
def patches():
    rng = np.random.default_rng(4)
    x = rng.uniform(-5, 15, (23, 48, 48, 1)).astype(np.float32)
    x[rng.random(x.shape) < 0.6] = 0.0
    return x


@pytest.fixture(scope="module")
def reference(patches):
    """Scores of the shipped model's weights run by the PyTorch network in Keras layout."""
    return predict_scores(load_network(), patches)


@pytest.fixture(scope="module", params=BACKENDS)
def interface(request):
    with make_interface(
        {"interface": "local", "batch_size": 10, "local": {"backend": request.param, "threads": 2}}
    ) as i:
        yield i


def test_scores_match_reference_in_input_order(interface, patches, reference):
    scores = interface.predict(patches)
    assert scores.shape == (len(patches), 4) and scores.dtype == np.float32
    assert np.max(np.abs(scores - reference)) < 1e-4
    assert (scores[:, :3].argmax(1) == reference[:, :3].argmax(1)).all()
    reversed_scores = interface.predict(np.ascontiguousarray(patches[::-1]))
    # torch's CPU kernels depend on the batch's size and the CPU (2e-6 seen on an AMD EPYC)
    np.testing.assert_allclose(reversed_scores[::-1], scores, atol=1e-5)


def test_empty_input_gives_empty_scores(interface):
    scores = interface.predict(np.zeros((0, 48, 48, 1), np.float32))
    assert scores.shape == (0, 4) and scores.dtype == np.float32


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((2, 48, 48), np.float32), "shape"),
        (np.zeros((2, 48, 47, 1), np.float32), "shape"),
        (np.zeros((2, 48, 48, 1), np.float64), "float32"),
        ([[0.0]], "numpy array"),
    ],
)
def test_bad_input_is_refused_clearly(interface, bad, message):
    with pytest.raises(InvalidPatchesError, match=message):
        interface.predict(bad)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_patch_is_named(interface, patches, value):
    bad = patches.copy()
    bad[7, 3, 4, 0] = value
    with pytest.raises(InvalidPatchesError, match="patch 7 "):
        interface.predict(bad)
    assert issubclass(InvalidPatchesError, ValueError) and issubclass(
        InvalidPatchesError, ArgonicError
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_chunking_gives_the_same_scores_as_one_batch(backend, patches):
    with (
        make_interface(
            {"batch_size": 1000, "local": {"backend": backend, "execution_batch_size": 1000}}
        ) as one,
        make_interface(
            {"batch_size": 7, "local": {"backend": backend, "execution_batch_size": 3}}
        ) as chunked,
    ):
        a, b = one.predict(patches), chunked.predict(patches)
    np.testing.assert_allclose(b, a, atol=1e-5)
    assert (a[:, :3].argmax(1) == b[:, :3].argmax(1)).all()


def test_project_configuration_builds_the_local_interface(patches, reference):
    """The [inference] table of the default settings."""
    with make_interface(load_settings().inference) as interface:
        assert np.max(np.abs(interface.predict(patches) - reference)) < 1e-4


@pytest.mark.parametrize(
    "config, message",
    [
        ({"interface": "quantum"}, r"interface: Input should be 'local' or 'remote'"),
        ({"local": {"backend": "tensorflow"}}, "local.backend: Input should be 'onnxruntime'"),
        ({"local": {"colour": "red"}}, "unknown key 'local.colour'"),
        ({"batch_size": 0}, "batch_size"),
        ({"local": {"execution_batch_size": -1}}, "execution_batch_size"),
        ({"local": {"model": "/nonexistent/model.onnx"}}, "not found"),
    ],
)
def test_bad_configuration_is_refused_clearly(config, message):
    with pytest.raises(InterfaceError, match=message):
        make_interface(config)


def test_closed_interface_refuses_work(patches):
    with make_interface({"interface": "local"}) as interface:
        pass
    assert interface.closed
    with pytest.raises(InterfaceError, match="closed"):
        interface.predict(patches)
