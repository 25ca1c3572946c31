"""System shared memory on both protocols, with tritonclient.utils.shared_memory: tensors in
and out of registered regions, and every size and offset checked (INVALID_ARGUMENT, the
server keeps serving)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from support.models import identity_onnx, tiny_repository
from support.servers import IDENTITY_CONFIG, add_model
from tritonclient.utils import InferenceServerException

from argonic.server import running_server

N = 5
NBYTES = N * 48 * 48 * 4
PROTOCOLS = {"grpc": grpcclient, "http": httpclient}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    repo = tiny_repository(tmp_path_factory.mktemp("shm_repo"), max_batch_size=8)
    add_model(
        repo, "identity", IDENTITY_CONFIG, versions={1: lambda d: identity_onnx(d / "model.onnx")}
    )
    with running_server(Path(repo), allow_metrics=False, http_port=0) as handle:
        yield handle


@pytest.fixture(params=sorted(PROTOCOLS))
def protocol(request, server):
    module = PROTOCOLS[request.param]
    url = server.url if request.param == "grpc" else server.http_url
    client = module.InferenceServerClient(url)
    handles = []

    def region(name: str, size: int):
        handle = shm.create_shared_memory_region(
            name, f"/argonic_test_{request.param}_{name}", size
        )
        handles.append(handle)
        return handle

    yield module, client, region
    client.unregister_system_shared_memory()
    for handle in handles:
        shm.destroy_shared_memory_region(handle)


def _input(module, region: str, byte_size: int, offset: int = 0, shape=(N, 48, 48, 1)):
    tensor = module.InferInput("main_input", list(shape), "FP32")
    tensor.set_shared_memory(region, byte_size, offset)
    return tensor


def test_inputs_and_outputs_in_shared_memory(protocol) -> None:
    module, client, region = protocol
    x = np.random.default_rng(1).random((N, 48, 48, 1), dtype=np.float32)
    inp = region("in", NBYTES + 64)
    out = region("out", NBYTES)
    shm.set_shared_memory_region(inp, [x], offset=64)
    client.register_system_shared_memory(
        "in", f"/argonic_test_{module.__name__.split('.')[-1]}_in", NBYTES + 64
    )
    client.register_system_shared_memory(
        "out", f"/argonic_test_{module.__name__.split('.')[-1]}_out", NBYTES
    )
    status = client.get_system_shared_memory_status()
    names = {r["name"] for r in status} if isinstance(status, list) else set(status.regions)
    assert names == {"in", "out"}
    requested = module.InferRequestedOutput("output")
    requested.set_shared_memory("out", NBYTES)
    result = client.infer("identity", [_input(module, "in", NBYTES, 64)], outputs=[requested])
    assert result.get_output("output") is not None
    got = shm.get_contents_as_numpy(out, np.float32, [N, 48, 48, 1])
    np.testing.assert_array_equal(got, x)
    # Input from shared memory, output over the wire.
    result = client.infer("identity", [_input(module, "in", NBYTES, 64)])
    np.testing.assert_array_equal(result.as_numpy("output"), x)


@pytest.mark.parametrize(
    ("byte_size", "offset", "message"),
    [
        (NBYTES, 128, "outside shared memory region"),  # past the end of the region
        (NBYTES + 4096, 0, "outside shared memory region"),  # larger than the region
        (NBYTES - 4, 0, "byte size"),  # too small for the tensor
        (NBYTES, -4, "outside shared memory region"),
    ],
)
def test_sizes_and_offsets_are_checked(protocol, byte_size: int, offset: int, message: str) -> None:
    module, client, region = protocol
    name = module.__name__.split(".")[-1]
    region("in", NBYTES + 64)
    client.register_system_shared_memory("in", f"/argonic_test_{name}_in", NBYTES + 64)
    with pytest.raises(InferenceServerException, match=message) as info:
        client.infer("identity", [_input(module, "in", byte_size, offset)])
    assert info.value.status() in ("StatusCode.INVALID_ARGUMENT", "400")
    # An output region too small, an unknown region, a window past the object's end.
    requested = module.InferRequestedOutput("output")
    requested.set_shared_memory("in", 16)
    with pytest.raises(InferenceServerException, match="should be at least"):
        client.infer("identity", [_input(module, "in", NBYTES, 64)], outputs=[requested])
    with pytest.raises(InferenceServerException, match="Unable to find shared memory region"):
        client.infer("identity", [_input(module, "nope", NBYTES)])
    with pytest.raises(InferenceServerException, match="past the end"):
        client.register_system_shared_memory("big", f"/argonic_test_{name}_in", NBYTES, offset=128)
    with pytest.raises(InferenceServerException, match="already in manager"):
        client.register_system_shared_memory("in", f"/argonic_test_{name}_in", 64)
    with pytest.raises(InferenceServerException, match="invalid shared memory key|Unable to open"):
        client.register_system_shared_memory("bad", "/../etc/passwd", 64)
    assert client.is_server_ready()
