"""A tenant floods a request with parts the server expands into work: a job listing with a
thousand `metadata[...]` filters (each a JSON path in the query: SQLite refused the
expression and the node answered 503 "database unreachable"), or a chat request with a
hundred thousand tools for the engine to render. Both are bounded as OpenAI bounds them (16
metadata keys, 128 tools): past that, a 400 naming the field."""

from typing import Any

import pytest

from tests.support.in_process import InProcessControlPlane

TOOLS_ALLOWED = 128


@pytest.mark.parametrize("filters", [17, 1_100])
def test_more_metadata_filters_than_a_job_has_keys_are_a_400(
        control_plane: InProcessControlPlane, filters: int) -> None:
    query = "&".join(f"metadata[k{i}]=v" for i in range(filters))
    with control_plane.http() as http:
        listed = http.get(f"/fine_tuning/jobs?{query}")
        assert listed.status_code == 400, listed.text[:500]
        assert listed.json()["error"]["param"] == "metadata"
        within = "&".join(f"metadata[k{i}]=v" for i in range(16))
        assert http.get(f"/fine_tuning/jobs?{within}").json()["data"] == []


def _tools(count: int) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": f"f{i}", "parameters": {}}}
            for i in range(count)]


@pytest.mark.parametrize(("path", "body"), [
    ("/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
    ("/responses", {"model": "m", "input": "hi"}),
])
def test_more_tools_than_openai_allows_are_a_400_naming_tools(
        control_plane: InProcessControlPlane, path: str, body: dict[str, Any]) -> None:
    with control_plane.http() as http:
        flooded = http.post(path, json=body | {"tools": _tools(100_000)})
        assert flooded.status_code == 400, flooded.text[:500]
        assert flooded.json()["error"]["param"] == "tools"
        # As many as OpenAI takes pass on (to an engine this control plane does not have).
        allowed = http.post(path, json=body | {"tools": _tools(TOOLS_ALLOWED)})
        assert allowed.json()["error"]["param"] != "tools", allowed.text[:500]
