"""Schemathesis over `openapi.yaml` against the real server (vLLM included), with a bounded
number of generated requests per route: no 5xx, no status the document does not list, and
no `/v1` route that answers without a valid key. (Driven through Hypothesis directly:
schemathesis' own pytest plugin does not run on this pytest.)"""

import os
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import ignored_auth, status_code_conformance

from tests.support.server import TuneserveServer

ROOT = Path(__file__).resolve().parents[1]
# Per route in the suite; a deeper run: TUNESERVE_FUZZ_EXAMPLES=500 pytest tests/test_fuzz.py
EXAMPLES_PER_ROUTE = int(os.environ.get("TUNESERVE_FUZZ_EXAMPLES", "25"))
SCHEMA = schemathesis.openapi.from_path(ROOT / "openapi.yaml")
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]


@pytest.fixture(scope="session")
def fuzz_key(local_server: TuneserveServer) -> str:
    """A project of its own: what the fuzzer creates is in no other test's way."""
    return local_server.cli("keys", "create", "--project", "fuzz").strip()


@pytest.mark.parametrize("operation", OPERATIONS, ids=[op.label for op in OPERATIONS])
def test_generated_requests_get_documented_answers(
        operation: schemathesis.APIOperation, local_server: TuneserveServer,
        fuzz_key: str) -> None:
    base_url = local_server.base_url.removesuffix("/v1")
    headers = {"Authorization": f"Bearer {fuzz_key}"}
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
