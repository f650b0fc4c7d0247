"""Writes docs/settings.md from the settings classes: one table per class (its variable, its
default, its `Field` description), so the page cannot drift from the code.

`python -m api.settings_doc` (or `make docs`) rewrites the page; `--check` fails if it is
stale, as `tests/test_settings_doc.py` does."""

import argparse
import json
import sys
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings

from api.settings import Settings
from serving.settings import ServingSettings
from storage.settings import StorageSettings
from training.settings import TrainingSettings

PAGE = Path(__file__).resolve().parent.parent / "docs" / "settings.md"

# In the order they build on each other; each table shows the fields its class declares.
CLASSES: tuple[tuple[type[BaseSettings], str], ...] = (
    (StorageSettings, "Where data lives: the blob store and the metadata DB. Every process "
     "reads these: API nodes, training workers, serving replicas."),
    (TrainingSettings, "The job system: the scheduler in every API node and the training "
     "workers (a GPU node running workers needs only these and the storage settings)."),
    (ServingSettings, "The inference side: the vLLM engine this node supervises or the "
     "cluster's replicas, the adapter cache, routing."),
    (Settings, "The API node itself: listening, keys, request and project limits, the "
     "background loops (reaper, orphan sweeper, evaluator, webhook dispatcher)."),
)

HEADER = """\
# Settings reference

Every setting is an environment variable (`TUNESERVE_` + its name in capitals), read by
pydantic-settings; a JSON value (a list or an object) is given as JSON text. The settings are
layered like the packages: `StorageSettings` <- `TrainingSettings`, `ServingSettings` <-
`Settings` (the API node reads them all).

This page is generated from the classes' `Field(description=...)` by `make docs`
(`python -m api.settings_doc`); `tests/test_settings_doc.py` fails when it is stale. To add or
change a setting, edit its class and run `make docs`.
"""

_MiB = 1 << 20


def _default(name: str, value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, Path) and not value.is_absolute():
        value = f"./{value}"
    if isinstance(value, str | Path):
        return f"`{value}`" if str(value) else "empty"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and name.endswith("_bytes") and value >= _MiB and not value % _MiB:
        mib = value // _MiB
        size = f"{mib // 1024} GiB" if not mib % 1024 else f"{mib} MiB"
        return f"`{value}` ({size})"
    if isinstance(value, list | dict):
        return f"`{json.dumps(value)}`"
    return f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def own_fields(cls: type[BaseSettings]) -> list[str]:
    """The fields `cls` declares itself, in declaration order."""
    declared = cls.__dict__.get("__annotations__", {})
    return [name for name in declared if name in cls.model_fields]


def render() -> str:
    parts = [HEADER.rstrip("\n")]
    parts.append("| class | file | settings |\n| --- | --- | --- |")
    for cls, _ in CLASSES:
        where = cls.__module__.replace(".", "/") + ".py"
        parts[-1] += (f"\n| [`{cls.__name__}`](#{cls.__name__.lower()}) | "
                      f"`{where}` | {len(own_fields(cls))} |")
    for cls, about in CLASSES:
        prefix = str(cls.model_config.get("env_prefix", ""))
        rows = ["| variable | default | description |", "| --- | --- | --- |"]
        for name in own_fields(cls):
            field = cls.model_fields[name]
            rows.append(f"| `{prefix}{name.upper()}` | {_cell(_default(name, field.default))} "
                        f"| {_cell(field.description or '')} |")
        where = cls.__module__.replace(".", "/") + ".py"
        parts.append(f"## {cls.__name__}\n\n{about} Declared in `{where}`.\n\n"
                     + "\n".join(rows))
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api.settings_doc", description=__doc__)
    parser.add_argument("--out", type=Path, default=PAGE, help="where to write the page")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the page differs from what the classes give")
    args = parser.parse_args(argv)
    page = render()
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != page:
            print(f"{args.out} is stale: run `make docs`", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
