"""Someone on the cluster's network (or a former grantee who knows an adapter's name) asks a
Ray-mode vLLM replica directly, past the API nodes' keys, tenancy and rate limits: vLLM's own
key guards only `/v1`-like prefixes, and `/invocations` (SageMaker's chat and completions),
`/tokenize` and `/metrics` answered anyone. The replica's vLLM app, built as the replica
builds it (its arguments, its middleware), answers nothing without the per-start key."""

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.ray_replicas import REPLICA_VLLM_ARGS

ROUTES = [("POST", "/invocations"), ("POST", "/tokenize"), ("POST", "/detokenize"),
          ("GET", "/metrics"), ("GET", "/ping"), ("GET", "/health"), ("GET", "/version"),
          ("GET", "/v1/models"), ("POST", "/v1/chat/completions"),
          ("POST", "/v1/load_lora_adapter")]
BODY = {"model": "lora-0123456789abcdef01234567",
        "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "prompt": "hi"}


@pytest.fixture(scope="module")
def replica_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str]]:
    from vllm.entrypoints.launchers.app import build_app
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.tasks import FALLBACK_SUPPORTED_TASKS
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    key = secrets.token_urlsafe(32)
    data: Path = tmp_path_factory.mktemp("replica")
    with pytest.MonkeyPatch.context() as env:
        # What the replica's vLLM process gets from serving/engine.py.
        env.setenv("VLLM_API_KEY", key)
        env.setenv("TUNESERVE_DATA_DIR", str(data))
        env.setenv("TUNESERVE_ADAPTER_CACHE_DIR", str(data / "adapter-cache"))
        args = make_arg_parser(FlexibleArgumentParser()).parse_args(REPLICA_VLLM_ARGS)
        app = build_app(args, FALLBACK_SUPPORTED_TASKS)
        # No engine behind it (nor its lifespan, which needs one): a request that gets past
        # the key fails further in.
        yield TestClient(app, raise_server_exceptions=False), key


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_a_replica_answers_no_route_without_its_key(
        replica_app: tuple[TestClient, str], method: str, path: str) -> None:
    client, key = replica_app
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": key}):
        answer = client.request(method, path, json=BODY, headers=headers)
        assert answer.status_code == 401, (path, headers, answer.status_code)
    # The key opens it (what lies behind needs an engine, absent here).
    answer = client.request(method, path, json=BODY, headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code != 401
