"""Hostile input over a real socket: mutated messages of every RPC get documented statuses.

Valid seed messages of every RPC (tests/support/fuzz.py) are mutated byte-wise by
hypothesis and sent raw through a grpc channel (identity serializers). Every answer must be
a documented status (never UNKNOWN or INTERNAL), the server logs no traceback and a bounded
number of lines, and a valid request afterwards gets the same scores as before. The long
run (>= 10,000 requests) is benchmarks/fuzz_server.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import fuzz

from argonic.server import running_server

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
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(rpc=st.sampled_from(fuzz.RPCS), seed=st.integers(0, 3), mutations=MUTATIONS)
def test_mutated_messages_get_documented_statuses(channel, before, rpc, seed, mutations) -> None:
    seeds = fuzz.SEEDS[rpc]
    answer = fuzz.send(channel, rpc, fuzz.mutate(seeds[seed % len(seeds)], mutations))
    assert answer.code in fuzz.DOCUMENTED, (rpc, mutations, answer)


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
