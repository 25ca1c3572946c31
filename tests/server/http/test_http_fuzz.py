"""Fuzz the HTTP/REST endpoint from its OpenAPI description (docs/openapi/kserve-v2.yaml)
with schemathesis: no 5xx, and every response matches the description. Bounded: a few
examples per operation, against an in-process server on the tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from support.models import tiny_repository

from argonic.server import running_server
from argonic.server.core import shm

SPEC = Path(__file__).parents[3] / "docs" / "openapi" / "kserve-v2.yaml"
schema = schemathesis.openapi.from_path(SPEC)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory):
    repo = tiny_repository(tmp_path_factory.mktemp("fuzz_repo"), max_batch_size=4)
    shm_dir = tmp_path_factory.mktemp("fuzz_shm")  # fuzzed keys never reach the real /dev/shm
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(shm, "SHM_DIR", shm_dir)
        # explicit model control: load and unload run (the default refuses them with 503)
        with running_server(
            repo, allow_metrics=False, http_port=0, model_control_mode="explicit"
        ) as handle:
            yield f"http://{handle.http_url}"


@schema.parametrize()
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_endpoint_matches_its_openapi_description(case, base_url: str) -> None:
    case.call_and_validate(base_url=base_url, checks=CHECKS, timeout=30)
