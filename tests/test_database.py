"""Schema and tenancy on SQLite and on PostgreSQL."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select

from api.tenancy import get_or_create_project
from storage.api_keys import add_api_key, hash_key, project_for_key
from storage.db import Database
from storage.ids import new_id
from storage.models import ApiKey, Base


def test_migrations_build_exactly_the_models(database: Database) -> None:
    with database.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_migrate_twice_is_harmless(database: Database) -> None:
    database.migrate()


def test_keys_are_stored_hashed_and_resolve_to_their_project(database: Database) -> None:
    with database.session() as s:
        alpha = get_or_create_project(s, "alpha")
        beta = get_or_create_project(s, "beta")
        key_a = add_api_key(s, alpha.id)
        key_b = add_api_key(s, beta.id)
        assert get_or_create_project(s, "alpha").id == alpha.id
    assert key_a.startswith("sk-") and key_a != key_b
    with database.session() as s:
        stored = set(s.scalars(select(ApiKey.key_hash)))
        assert stored == {hash_key(key_a), hash_key(key_b)}
        assert key_a not in stored
        assert project_for_key(s, hash_key(key_a)).name == "alpha"
        assert project_for_key(s, hash_key(key_b)).name == "beta"
        assert project_for_key(s, hash_key("sk-wrong")) is None


def test_ids_are_prefixed_random_and_url_safe() -> None:
    ids = {new_id("file-") for _ in range(1000)}
    assert len(ids) == 1000
    for i in ids:
        assert i.startswith("file-") and len(i) == 29 and i[5:].isalnum()
