"""`tuneserve`: serve the API, manage keys, write the OpenAPI document."""

import argparse
import logging
import sys
from pathlib import Path

import uvicorn
import yaml

from api.app import create_app
from api.settings import Settings
from api.tenancy import add_api_key, get_or_create_project


def openapi_yaml() -> str:
    return yaml.safe_dump(create_app(Settings()).openapi(), sort_keys=False, allow_unicode=True)


def _serve(args: argparse.Namespace) -> None:
    settings = Settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # httpx logs every request at INFO: the engine's health checks and every proxied chat.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    uvicorn.run(
        create_app(settings),
        host=args.host or settings.host,
        port=args.port or settings.port,
        log_level="info",
        timeout_graceful_shutdown=10,
    )


def _keys_create(args: argparse.Namespace) -> None:
    settings = Settings()
    settings.prepare_data_dir()
    db = settings.open_database()
    db.migrate()
    with db.session() as session:
        secret = add_api_key(session, get_or_create_project(session, args.project))
    db.dispose()
    print(secret)


def _models_prepare(args: argparse.Namespace) -> None:
    from storage.base_models import default_model_dir
    from training.prepare import prepare_default_model

    print(prepare_default_model(default_model_dir(Settings())))


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
    create.add_argument("--project", required=True)
    create.set_defaults(run=_keys_create)

    models = commands.add_parser("models", help="manage base models").add_subparsers(
        dest="models_command", required=True
    )
    prepare = models.add_parser("prepare", help="build the default base model (no network)")
    prepare.set_defaults(run=_models_prepare)

    spec = commands.add_parser("openapi", help="write the OpenAPI document the app serves")
    spec.add_argument("--out", default="openapi.yaml")
    spec.set_defaults(run=_openapi)

    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
