"""The TorchScript backend's parameters on the CPU: precisions, CUDA-only options refused on a
CPU instance with the parameter named, CUDA-graph batch sizes, the device-side steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch  # noqa: F401 - the test extra: a broken install fails here, never skips
from support.models import head_weights, reference_heads, torchscript_heads
from support.servers import CNN_LIKE_CONFIG

from argonic.repository.model_config import InstanceSpec, bool_parameter, parse_config
from argonic.server.backends import cpu
from argonic.server.backends.registry import create_backend
from argonic.server.errors import HostUnsupported, InvalidArgument

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.script

from argonic.server.backends.torchscript import TorchScriptBackend, graph_batch_sizes  # noqa: E402


def config(extra: str = "", max_batch_size: int = 64):
    return parse_config(
        CNN_LIKE_CONFIG.format(
            name="net", platform="pytorch_libtorch", max_batch_size=max_batch_size, extra=extra
        )
    )


def params(**values: str) -> str:
    return "\n".join(
        f'parameters {{ key: "{k}" value {{ string_value: "{v}" }} }}' for k, v in values.items()
    )


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("torch_backend") / "model.pt"
    torchscript_heads(path, 4)
    return path


@pytest.mark.parametrize(("precision", "atol"), [("fp32", 1e-5), ("fp16", 5e-3), ("bf16", 3e-2)])
def test_precisions_answer_float32(model_file: Path, precision: str, atol: float) -> None:
    # allow_emulated: the numerics are checked on any CPU, native bf16/fp16 or not
    backend = TorchScriptBackend(
        config(params(precision=precision, allow_emulated="true")), model_file, InstanceSpec("cpu")
    )
    x = np.random.default_rng(2).random((37, 48, 48, 1), dtype=np.float32) * 0.2
    x.flags.writeable = False  # as the server hands over request buffers
    out = backend.run({"main_input": x})
    softmax, michel = reference_heads(x, head_weights(4))
    assert out["em_trk_none_netout"].dtype == np.float32 == out["michel_netout"].dtype
    np.testing.assert_allclose(out["em_trk_none_netout"], softmax, atol=atol)
    np.testing.assert_allclose(out["michel_netout"], michel, atol=atol)
    backend.close()


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (params(cuda_graphs="true"), "cuda_graphs"),
        ("optimization { cuda { graphs: true } }", "optimization.cuda.graphs"),
        (params(torch_compile="true"), "torch_compile"),
        (params(precision="int4"), "precision"),
        (params(cuda_graphs="maybe"), "cuda_graphs must be true or false"),
    ],
)
def test_unusable_options_are_refused_naming_the_parameter(
    model_file: Path, extra: str, named: str
) -> None:
    with pytest.raises(InvalidArgument, match=named.replace(".", r"\.")):
        create_backend(config(extra), model_file, InstanceSpec("cpu"))


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_without_native_kernels_is_refused(
    model_file: Path, precision: str
) -> None:
    """On a CPU without bf16/fp16 matrix instructions the model is refused, naming what
    is missing and the way out; where the CPU has them it loads."""
    if cpu.native(precision):
        TorchScriptBackend(config(params(precision=precision)), model_file, InstanceSpec("cpu"))
        return
    with pytest.raises(HostUnsupported, match=f"precision {precision} needs .*allow_emulated"):
        TorchScriptBackend(config(params(precision=precision)), model_file, InstanceSpec("cpu"))


def test_cuda_only_options_switched_off_load_on_the_cpu(model_file: Path) -> None:
    extra = params(cuda_graphs="false", torch_compile="0") + (
        "\noptimization { input_pinned_memory { enable: true } }"
    )
    backend = TorchScriptBackend(config(extra), model_file, InstanceSpec("cpu"))
    assert backend.graph_sizes == () and not backend.pin_inputs and backend.stream is None


def test_graph_batch_sizes() -> None:
    assert graph_batch_sizes(config(max_batch_size=100)) == (1, 2, 4, 8, 16, 32, 64, 100)
    assert graph_batch_sizes(config(params(execution_batch_size="48"), 64))[-3:] == (32, 48, 64)
    assert graph_batch_sizes(config(params(cuda_graph_batch_sizes="256, 16"), 4096)) == (16, 256)
    for bad in ("0", "8000", "a,b"):
        with pytest.raises(InvalidArgument, match="cuda_graph_batch_sizes"):
            graph_batch_sizes(config(params(cuda_graph_batch_sizes=bad), 4096))


def test_bool_parameter() -> None:
    cfg = config(params(a="TRUE", b="off", c="1"))
    assert (bool_parameter(cfg, "a", False), bool_parameter(cfg, "b", True)) == (True, False)
    assert bool_parameter(cfg, "c", False) and bool_parameter(cfg, "missing", True)


def test_device_steps_keep_tensors_on_the_device(model_file: Path) -> None:
    """to_device -> forward -> to_host equals run (the plane model's path)."""

    backend = TorchScriptBackend(config(), model_file, InstanceSpec("cpu"))
    x = np.random.default_rng(3).random((5, 48, 48, 1), dtype=np.float32)
    with backend.device_context():
        result = backend.forward([backend.to_device("x", x)])
        assert all(isinstance(t, torch.Tensor) for t in result.values())
        host = backend.to_host(result)
    for name, array in backend.run({"main_input": x}).items():
        np.testing.assert_array_equal(host[name], array)
