"""Backends and model-repository options: TorchScript (fp32, bf16), instance groups, policies."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from support.models import head_weights, reference_heads, torchscript_heads
from support.servers import CNN_LIKE_CONFIG, EXECUTIONS, GATES, add_model, gate_model, marked
from tritonclient.utils import InferenceServerException

from argonic.repository.model_config import ModelConfigError, parse_config, select_versions
from argonic.server import running_server
from argonic.server.errors import InvalidArgument


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("backends")
    for name, precision in (("torch_fp32", "fp32"), ("torch_bf16", "bf16")):
        add_model(
            root,
            name,
            CNN_LIKE_CONFIG,
            platform="pytorch_libtorch",
            # allow_emulated: bf16's numerics are checked on CPUs without native bf16 too
            extra=f'parameters {{ key: "precision" value {{ string_value: "{precision}" }} }}\n'
            'parameters { key: "allow_emulated" value { string_value: "true" } }',
            versions={1: lambda d: torchscript_heads(d / "model.pt", 4)},
        )
    gate_model(root, "two_instances", "instance_group [ { count: 2 kind: KIND_CPU } ]")
    add_model(
        root,
        "on_gpu",
        CNN_LIKE_CONFIG,
        platform="pytorch_libtorch",
        extra="instance_group [ { kind: KIND_GPU } ]",
        versions={1: lambda d: torchscript_heads(d / "model.pt", 4)},
    )
    return root


def infer(url: str, model: str, x: np.ndarray) -> grpcclient.InferResult:
    tensor = grpcclient.InferInput("main_input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return grpcclient.InferenceServerClient(url).infer(model, [tensor])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_backend_fp32_and_bf16(repo: Path) -> None:
    x = np.random.default_rng(11).random((300, 48, 48, 1), dtype=np.float32)
    softmax, michel = reference_heads(x, head_weights(4))
    with running_server(
        repo, allow_metrics=False, load_model=["torch_fp32", "torch_bf16"]
    ) as server:
        exact = infer(server.url, "torch_fp32", x)
        reduced = infer(server.url, "torch_bf16", x)
        assert (
            grpcclient.InferenceServerClient(server.url).get_model_metadata("torch_fp32").platform
            == "pytorch_libtorch"
        )
    np.testing.assert_allclose(exact.as_numpy("em_trk_none_netout"), softmax, atol=1e-5)
    np.testing.assert_allclose(exact.as_numpy("michel_netout"), michel, atol=1e-5)
    got = reduced.as_numpy("em_trk_none_netout")
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, softmax, atol=0.05)  # bf16 keeps ~3 significant digits
    margin = np.sort(softmax, axis=1)[:, -1] - np.sort(softmax, axis=1)[:, -2]
    clear = margin > 0.05
    assert (got.argmax(1) == softmax.argmax(1))[clear].all()


def test_instance_group_runs_executions_in_parallel(repo: Path) -> None:
    with running_server(repo, allow_metrics=False, load_model=["two_instances"]) as server:

        async def body():
            import tritonclient.grpc.aio as aioclient

            async with aioclient.InferenceServerClient(server.url) as client:
                calls = [
                    asyncio.create_task(
                        client.infer(
                            "two_instances",
                            [
                                grpcclient.InferInput(
                                    "main_input", [1, 48, 48, 1], "FP32"
                                ).set_data_from_numpy(marked(1, m))
                            ],
                        )
                    )
                    for m in (1, 2)
                ]
                for _ in range(4000):  # both requests inside the backend at once: two instances
                    if len(EXECUTIONS["two_instances"]) == 2:
                        break
                    await asyncio.sleep(0.005)
                both_running = len(EXECUTIONS["two_instances"]) == 2
                GATES["two_instances"].set()
                await asyncio.gather(*calls)
                return both_running

        assert asyncio.run(body())


def test_kind_gpu_without_cuda_is_refused_with_a_clear_reason(repo: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with running_server(
        repo, allow_metrics=False, load_model=["on_gpu"], model_control_mode="explicit"
    ) as server:
        client = grpcclient.InferenceServerClient(server.url)
        index = {m.name: m for m in client.get_model_repository_index().models}
        assert index["on_gpu"].state == "UNAVAILABLE" and "no CUDA device" in index["on_gpu"].reason
        with pytest.raises(InferenceServerException) as info:
            client.load_model("on_gpu")
        assert info.value.status() == "StatusCode.INVALID_ARGUMENT"


@pytest.mark.parametrize(
    "policy, expected",
    [
        ("", [5]),
        ("version_policy { latest { num_versions: 2 } }", [3, 5]),
        ("version_policy { all { } }", [1, 3, 5]),
        ("version_policy { specific { versions: [1, 5] } }", [1, 5]),
    ],
)
def test_version_policy(policy: str, expected: list[int]) -> None:
    assert select_versions(parse_config(policy, "m"), [1, 3, 5]) == expected


def test_version_policy_naming_a_missing_version_is_an_error() -> None:
    with pytest.raises(ModelConfigError, match=r"\[4\]"):
        select_versions(parse_config("version_policy { specific { versions: [4] } }", "m"), [1, 3])


@pytest.mark.parametrize(
    "groups, cuda, expected",
    [
        ("", 0, [("cpu", 0)]),
        ("", 2, [("cuda", 0), ("cuda", 1)]),
        ("instance_group [ { count: 2 kind: KIND_CPU } ]", 1, [("cpu", 0), ("cpu", 0)]),
        (
            "instance_group [ { count: 2 kind: KIND_GPU gpus: [1] }, { kind: KIND_CPU } ]",
            2,
            [("cuda", 1), ("cuda", 1), ("cpu", 0)],
        ),
    ],
)
def test_instance_group_expansion(groups: str, cuda: int, expected: list) -> None:
    from argonic.repository.model_config import instance_specs

    specs = instance_specs(parse_config(groups, "m"), cuda)
    assert [(s.device, s.index) for s in specs] == expected


def _os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc")
def test_cpu_instances_share_the_cores() -> None:
    """N CPU instances without intra_op_thread_count get cores / N ONNX Runtime threads each
    (counted as the OS threads a session starts: its pool has threads - 1); an explicit
    count wins; one instance keeps ONNX Runtime's default (every core)."""
    from argonic.repository import shipped_repository
    from argonic.repository.model_config import cpu_threads, instance_specs, load_config
    from argonic.server.backends.onnxruntime import OnnxRuntimeBackend

    cores = len(os.sched_getaffinity(0))
    network = shipped_repository() / "emtrkmichelid"
    base = load_config(network)

    def with_groups(text: str):
        config = type(base)()
        config.CopyFrom(base)
        del config.instance_group[:]
        parsed = parse_config(text, "m")
        config.instance_group.extend(parsed.instance_group)
        config.parameters.MergeFrom(parsed.parameters)
        return config

    def pool_threads(config) -> int:
        spec = instance_specs(config, 0)[0]
        before = _os_threads()
        backend = OnnxRuntimeBackend(config, network / "1" / "model.onnx", spec)
        started = _os_threads() - before
        backend.close()
        return started

    two = with_groups("instance_group [ { count: 2 kind: KIND_CPU } ]")
    assert [cpu_threads(two, s) for s in instance_specs(two, 0)] == [max(1, cores // 2)] * 2
    assert pool_threads(two) == max(1, cores // 2) - 1
    explicit = with_groups(
        "instance_group [ { count: 2 kind: KIND_CPU } ]\n"
        'parameters { key: "intra_op_thread_count" value { string_value: "3" } }'
    )
    assert cpu_threads(explicit, instance_specs(explicit, 0)[0]) == 3
    gpu = with_groups(
        "instance_group [ { count: 2 kind: KIND_GPU } ]\n"
        'parameters { key: "intra_op_thread_count" value { string_value: "3" } }'
    )
    assert [cpu_threads(gpu, s) for s in instance_specs(gpu, 1)] == [3, 3]  # honoured on GPU
    assert pool_threads(explicit) == 2
    one = with_groups("instance_group [ { count: 1 kind: KIND_CPU } ]")
    assert cpu_threads(one, instance_specs(one, 0)[0]) == 0  # ONNX Runtime's default
    assert pool_threads(one) == cores - 1


def test_execution_batch_size_defaults() -> None:
    from argonic.server.core.model_version import batch_policy

    config = parse_config(
        "max_batch_size: 4096\ndynamic_batching { preferred_batch_size: [64, 512] }", "m"
    )
    assert batch_policy(config, on_gpu=False).execution_batch_size == 256
    assert batch_policy(config, on_gpu=False).preferred_batch_sizes == (64,)
    assert batch_policy(config, on_gpu=True).execution_batch_size == 4096
    small = parse_config(
        'max_batch_size: 100\nparameters { key: "execution_batch_size" '
        'value { string_value: "1000" } }',
        "m",
    )
    assert batch_policy(small, on_gpu=False).execution_batch_size == 100


def test_python_backend_models_run_only_as_the_plane_model(tmp_path) -> None:
    """argonic serve never runs a Triton model.py: backend "python" needs parameters network."""
    from tritonclient.grpc import model_config_pb2 as mc

    from argonic.repository.model_config import InstanceSpec
    from argonic.server.backends.registry import create_backend

    (tmp_path / "model.py").write_text("raise SystemExit('never imported')\n")
    config = mc.ModelConfig(name="py", backend="python")
    with pytest.raises(InvalidArgument, match="only as the plane model"):
        create_backend(config, tmp_path / "model.py", InstanceSpec("cpu"))
