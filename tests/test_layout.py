"""The API's file tree mirrors its URL tree, as openai-python's `resources/` does, and its
routers hold no SQL: a URL leads to its file, and the file to its service.

A `/v1/a/{id}/b/c` route lives in `api/a/b/c/router.py` if that package exists, else in
`api/a/b/router.py`, else `api/a/router.py`: the deepest package named by the URL's literal
segments (`{param}` segments skipped; a segment with no package under it is an action on its
parent, like `cancel` or `content`)."""

import ast
from collections.abc import Iterator
from pathlib import Path

from fastapi.routing import APIRoute

from api.app import create_app
from api.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
API = ROOT / "api"

# What a router may not do itself: build a statement, or run one on a session.
SQL_NAMES = {"select", "update", "delete", "insert", "text", "func", "or_", "and_"}
SESSION_QUERIES = {"scalar", "scalars", "execute", "query", "get", "delete"}


def _v1_routes() -> Iterator[APIRoute]:
    for route in create_app(Settings()).routes:
        if isinstance(route, APIRoute) and route.path.startswith("/v1/"):
            yield route


def _router_module(path: str) -> str | None:
    """The module that a `/v1/...` path's route should live in; None if no package matches."""
    segments = [s for s in path.removeprefix("/v1/").split("/") if s and not s.startswith("{")]
    for depth in range(len(segments), 0, -1):
        if (API.joinpath(*segments[:depth]) / "router.py").is_file():
            return ".".join(["api", *segments[:depth], "router"])
    return None


def _routers() -> list[Path]:
    return sorted(API.rglob("router.py"))


def test_every_route_lives_in_the_package_its_url_names() -> None:
    misplaced = []
    for route in _v1_routes():
        want = _router_module(route.path)
        have = route.endpoint.__module__
        if have != want:
            misplaced.append(f"{sorted(route.methods)} {route.path}: in {have}, "
                             f"expected {want or 'api/<its URL>/router.py'}")
    assert not misplaced, "\n".join(misplaced)


def _tinker_routes() -> Iterator[APIRoute]:
    for route in create_app(Settings()).routes:
        if isinstance(route, APIRoute) and route.path.startswith("/api/v1/"):
            yield route


def test_the_tinker_api_lives_in_its_own_package() -> None:
    # Tinker's paths are verbs on one flat URL space (`/api/v1/create_session`,
    # `/api/v1/forward_backward`, ...): one package, named for the API.
    assert {route.endpoint.__module__ for route in _tinker_routes()} == {"api.tinker.router"}


def test_every_router_serves_routes() -> None:
    served = {route.endpoint.__module__ for route in [*_v1_routes(), *_tinker_routes()]}
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts) for p in _routers()}
    assert modules - served == set(), "router.py files that the app does not include"


def test_routers_hold_no_sql() -> None:
    found = []
    for path in _routers():
        name = path.relative_to(ROOT)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found += [f"{name}:{node.lineno} imports {a.name}" for a in node.names
                          if a.name.split(".")[0] == "sqlalchemy"]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
                found += [f"{name}:{node.lineno} imports {a.name} from {node.module}"
                          for a in node.names if a.name in SQL_NAMES]
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                  and node.func.attr in SESSION_QUERIES
                  and isinstance(node.func.value, ast.Name) and node.func.value.id == "session"):
                found.append(f"{name}:{node.lineno} runs session.{node.func.attr}()")
    assert not found, "SQL belongs in the package's service.py:\n" + "\n".join(found)


def test_the_layout_rule_finds_the_deepest_package() -> None:
    assert _router_module("/v1/fine_tuning/jobs/{fine_tuning_job_id}/cancel") \
        == "api.fine_tuning.jobs.router"
    assert _router_module("/v1/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints") \
        == "api.fine_tuning.jobs.checkpoints.router"
    assert _router_module("/v1/fine_tuning/checkpoints/{fine_tuned_model_checkpoint}/"
                          "permissions/{permission_id}") \
        == "api.fine_tuning.checkpoints.permissions.router"
    assert _router_module("/v1/no_such_resource") is None
