"""`openapi.yaml` is what the app serves (regenerate with `make openapi`)."""

from pathlib import Path

import yaml

from api.app import create_app
from api.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_openapi_yaml_matches_the_app() -> None:
    served = create_app(Settings()).openapi()
    committed = yaml.safe_load((ROOT / "openapi.yaml").read_text())
    assert committed == served, "openapi.yaml is stale: run `make openapi`"


def test_every_v1_route_documents_authentication() -> None:
    spec = create_app(Settings()).openapi()
    for path, ops in spec["paths"].items():
        if path.startswith("/v1/"):
            for op in ops.values():
                assert op.get("security"), f"{path} lacks the bearer security scheme"


def test_every_v1_route_documents_its_errors_in_openais_envelope() -> None:
    spec = create_app(Settings()).openapi()
    for path, ops in spec["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, op in ops.items():
            codes = set(op["responses"])
            # Validation errors are 400s in OpenAI's envelope here, never FastAPI's 422.
            assert {"400", "401", "413", "500", "503"} <= codes, (path, method)
            assert "422" not in codes, (path, method)
            for code in codes - {"200"}:
                schema = op["responses"][code]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (path, code)
    assert "HTTPValidationError" not in spec["components"]["schemas"]


def test_every_object_documents_its_fields() -> None:
    # A generated SDK (or the docs) gets nothing out of a bare `type: object`.
    schemas = create_app(Settings()).openapi()["components"]["schemas"]
    bare = [name for name, schema in schemas.items()
            if schema.get("type") == "object" and not schema.get("properties")]
    assert bare == []
