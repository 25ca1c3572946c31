"""Hostile input over a real socket: mutated messages of every RPC get documented statuses.

Valid seed messages of every RPC (tests/support/fuzz.py) are mutated byte-wise by
hypothesis and sent raw through a grpc channel (identity serializers). Every answer must be
a documented status (never UNKNOWN or INTERNAL), the server logs no traceback and a bounded
number of lines, and a valid request afterwards gets the same scores as before. The long
run: ``ARGONIC_FUZZ_EXAMPLES=10000 pytest tests/server/grpc/test_fuzz.py``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import fuzz

from argonic.server import running_server

# mutated messages per run; a long run (BENCHMARKS.md: 10,000) sets ARGONIC_FUZZ_EXAMPLES
EXAMPLES = int(os.environ.get("ARGONIC_FUZZ_EXAMPLES", "300"))
MUTATIONS = st.lists(
    st.tuples(st.sampled_from(fuzz.OPS), st.integers(0, 1 << 31), st.integers(0, 255)),
    min_size=1,
    max_size=6,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    repo = fuzz.make_repository(tmp_path_factory.mktemp("fuzzrepo"))
    with running_server(repo) as handle:
        yield handle


@pytest.fixture(scope="module")
def channel(server):
    options = [("grpc.max_receive_message_length", 1 << 26)]
    with grpc.insecure_channel(server.url, options=options) as ch:
        yield ch


@pytest.fixture(scope="module")
def before(channel) -> np.ndarray:
    return fuzz.scores(channel)


def test_seeds_are_valid(channel) -> None:
    for rpc, seeds in fuzz.SEEDS.items():
        for data in seeds:
            answer = fuzz.send(channel, rpc, data)
            assert answer.code in fuzz.DOCUMENTED, (rpc, answer)
            assert not answer.stream_error, (rpc, answer)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(rpc=st.sampled_from(fuzz.RPCS), seed=st.integers(0, 3), mutations=MUTATIONS)
def test_mutated_messages_get_documented_statuses(channel, before, rpc, seed, mutations) -> None:
    seeds = fuzz.SEEDS[rpc]
    answer = fuzz.send(channel, rpc, fuzz.mutate(seeds[seed % len(seeds)], mutations))
    assert answer.code in fuzz.DOCUMENTED, (rpc, mutations, answer)


@pytest.fixture(scope="module")
def explicit_channel(tmp_path_factory: pytest.TempPathFactory):
    """A server in explicit model-control mode: load and unload get past the gate."""
    repo = fuzz.make_repository(tmp_path_factory.mktemp("fuzzcontrol"))
    fuzz.add_victim(repo)
    with (
        running_server(repo, model_control_mode="explicit") as handle,
        grpc.insecure_channel(handle.url) as ch,
    ):
        yield ch


def test_control_seeds_pass_the_gate(explicit_channel) -> None:
    """The seeds reach the data plane: the victim is loaded and unloaded, the config
    override and the trace settings get their own answers, not the gate's."""
    for rpc, data, code in (
        ("RepositoryModelUnload", fuzz.CONTROL_SEEDS["RepositoryModelUnload"][0], "OK"),
        ("RepositoryModelLoad", fuzz.CONTROL_SEEDS["RepositoryModelLoad"][0], "OK"),
        ("RepositoryModelLoad", fuzz.CONTROL_SEEDS["RepositoryModelLoad"][1], "INVALID_ARGUMENT"),
        ("TraceSetting", fuzz.CONTROL_SEEDS["TraceSetting"][0], "UNIMPLEMENTED"),
    ):
        answer = fuzz.send(explicit_channel, rpc, data)
        assert answer.code == getattr(grpc.StatusCode, code), (rpc, answer)
    assert (
        "load parameters ['config'] are not supported"
        in fuzz.send(
            explicit_channel, "RepositoryModelLoad", fuzz.CONTROL_SEEDS["RepositoryModelLoad"][1]
        ).details
    )


@settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(rpc=st.sampled_from(tuple(fuzz.CONTROL_SEEDS)), seed=st.integers(0, 1), mutations=MUTATIONS)
def test_mutated_control_messages_past_the_gate(explicit_channel, rpc, seed, mutations) -> None:
    seeds = fuzz.CONTROL_SEEDS[rpc]
    answer = fuzz.send(explicit_channel, rpc, fuzz.mutate(seeds[seed % len(seeds)], mutations))
    assert answer.code in fuzz.DOCUMENTED, (rpc, mutations, answer)
    assert answer.code != grpc.StatusCode.UNAVAILABLE or "not allowed" not in answer.details


def test_no_internal_errors_and_no_traceback_per_request(server, channel, before, caplog) -> None:
    caplog.set_level(logging.INFO, logger="argonic.server")
    bad = fuzz.infer_request().SerializeToString()[:-7]  # truncated raw_input_contents
    for _ in range(200):
        answer = fuzz.send(channel, "ModelInfer", bad)
        assert answer.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "malformed ModelInferRequest" in answer.details
    lines = [r for r in caplog.records if r.name == "argonic.server"]
    assert len(lines) <= 1 and not any(r.exc_info for r in lines)
    assert not [k for k in server.server.errors.counts if "INTERNAL" in k]
    assert server.server.errors.counts["ModelInfer INVALID_ARGUMENT"] >= 200


def test_scores_unchanged_after_fuzzing(channel, before) -> None:
    np.testing.assert_array_equal(fuzz.scores(channel), before)


def test_repository_in_fuzz_repo(tmp_path: Path) -> None:
    repo = fuzz.make_repository(tmp_path)
    assert sorted(p.name for p in repo.iterdir()) == [fuzz.MODEL, fuzz.PLANE_MODEL]


def test_model_infer_carries_exactly_one_message(channel, before) -> None:
    """ModelInfer is unary in the protocol: a call with no message or with two (possible
    on the wire, as the server reads it as a stream) is refused INVALID_ARGUMENT."""
    call = channel.stream_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    one = fuzz.infer_request().SerializeToString()
    for messages in ([], [one, one]):
        with pytest.raises(grpc.RpcError) as info:
            call(iter(messages), timeout=20)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details() == "a ModelInfer call carries exactly one request message"
    np.testing.assert_array_equal(fuzz.scores(channel), before)


def test_absurd_plane_requests_are_refused_by_the_server(server, channel, before) -> None:
    """The plane model refuses a plane no detector has and ticks no event has, by name."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException, np_to_triton_dtype

    client = grpcclient.InferenceServerClient(server.url)
    for change, message in (
        ({"plane_shape": np.array([1 << 15, 1 << 14], np.int32)}, "is too large"),
        ({"plane_shape": np.array([0, 200], np.int32)}, "2 positive sizes"),
        ({"hit_tick": np.array([30.0, 3e9], np.float32)}, "absurd values"),
    ):
        inputs = []
        for name, value in fuzz.plane_tensors(**change).items():
            tensor = grpcclient.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
            tensor.set_data_from_numpy(value)
            inputs.append(tensor)
        with pytest.raises(InferenceServerException) as info:
            client.infer(fuzz.PLANE_MODEL, inputs)
        assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert message in info.value.message()
    np.testing.assert_array_equal(fuzz.scores(channel), before)
