"""Schemathesis over `openapi.yaml` against the real server (vLLM included), with a bounded
number of generated requests per route: no 5xx, no status the document does not list, and
no `/v1` route that answers without a valid key. Once more against a control plane on
PostgreSQL (no engine: the model routes answer 503), whose columns' lengths and refusal of
NUL characters SQLite does not have. (Driven through Hypothesis directly: schemathesis' own
pytest plugin does not run on this pytest.)"""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import ignored_auth, status_code_conformance

from tests.support import postgres
from tests.support.server import TuneserveServer

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parents[1]
# Per route in the suite; a deeper run: TUNESERVE_FUZZ_EXAMPLES=500 pytest tests/test_fuzz.py
EXAMPLES_PER_ROUTE = int(os.environ.get("TUNESERVE_FUZZ_EXAMPLES", "25"))
SCHEMA = schemathesis.openapi.from_path(ROOT / "openapi.yaml")
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]
# What a control plane answers without a model engine (503 by design).
ENGINE_ROUTES = {"/v1/chat/completions", "/v1/completions", "/v1/responses"}
CONTROL_OPERATIONS = [op for op in OPERATIONS if op.path not in ENGINE_ROUTES]


@pytest.fixture(scope="session")
def fuzz_key(local_server: TuneserveServer) -> str:
    """A project of its own: what the fuzzer creates is in no other test's way."""
    return local_server.cli("keys", "create", "--project", "fuzz").strip()


@pytest.fixture(scope="module")
def postgres_control_plane(tmp_path_factory: pytest.TempPathFactory
                           ) -> Iterator[TuneserveServer]:
    """tuneserve without a model engine on PostgreSQL and local blobs."""
    name, url = postgres.create_database()
    server = TuneserveServer(tmp_path_factory.mktemp("fuzz-postgresql"),
                             {"TUNESERVE_DATABASE_URL": url}).start()
    yield server
    server.stop()
    postgres.drop_database(name)


def _fuzz(operation: schemathesis.APIOperation, server: TuneserveServer, key: str) -> None:
    base_url = server.base_url.removesuffix("/v1")
    # The OpenAI-style routes take the key as a bearer token, the Tinker ones as X-API-Key.
    headers = {"Authorization": f"Bearer {key}", "X-API-Key": key}
    statuses: list[int] = []

    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES_PER_ROUTE, deadline=None, database=None,
              derandomize=True, suppress_health_check=list(HealthCheck))
    def answers(case: schemathesis.Case) -> None:
        response = case.call_and_validate(
            base_url=base_url, headers=headers, timeout=60,
            checks=[not_a_server_error, status_code_conformance, ignored_auth])
        statuses.append(response.status_code)

    answers()
    # The key was taken: the routes themselves answered (not all refused at the gate).
    assert statuses and set(statuses) != {401}, statuses


@pytest.mark.parametrize("operation", OPERATIONS, ids=[op.label for op in OPERATIONS])
def test_generated_requests_get_documented_answers(
        operation: schemathesis.APIOperation, local_server: TuneserveServer,
        fuzz_key: str) -> None:
    _fuzz(operation, local_server, fuzz_key)


@pytest.mark.parametrize("operation", CONTROL_OPERATIONS,
                         ids=[op.label for op in CONTROL_OPERATIONS])
def test_generated_requests_on_postgresql_get_documented_answers(
        operation: schemathesis.APIOperation,
        postgres_control_plane: TuneserveServer) -> None:
    _fuzz(operation, postgres_control_plane, postgres_control_plane.api_key)
