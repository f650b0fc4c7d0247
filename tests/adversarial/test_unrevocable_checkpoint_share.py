"""The owner of a fine-tuned model revokes another project's grant, and the grant must go.
Deleting a permission leaves a cursor tombstone scoped to the model's id (up to 512
characters); its column once held 64, so on PostgreSQL the delete failed (500) and the
grantee kept the model, for any name longer than the suite's usual ones (a suffix like
`support-bot` makes a checkpoint name of 66 characters).

No training here: the model's row is written straight into the control plane's database."""

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import String, select

from api.tenancy import get_or_create_project
from storage.db import Database
from storage.ids import new_id, random_token
from storage.models import CheckpointPermission, CursorTombstone, FineTunedModel
from storage.tombstones import SCOPES, deleted_position
from tests.support.in_process import InProcessControlPlane

BASE = "SmolLM2-135M-Instruct"


def _checkpoint_name() -> str:
    """A checkpoint of a job with suffix `support-bot`: 66 characters, past the old 64."""
    name = f"ft:{BASE}:default:support-bot:{random_token(8)}:ckpt-step-12"
    assert len(name) == 66
    return name


def _add_model(db: Database, project_id: str, name: str) -> None:
    with db.session() as s:
        s.add(FineTunedModel(id=name, project_id=project_id, job_id=new_id("ftjob-"),
                             base_model=BASE, adapter_prefix=f"adapters/{project_id}/x/",
                             created_at=int(time.time())))


def test_revoking_a_grant_on_a_long_model_name_leaves_its_tombstone(database: Database) -> None:
    with database.session() as s:
        owner = get_or_create_project(s, "default").id
        grantee = get_or_create_project(s, "other-team").id
    name = _checkpoint_name()
    _add_model(database, owner, name)
    with database.session() as s:
        grant = CheckpointPermission(id=new_id("cp_"), model_id=name, project_id=grantee,
                                     created_at=int(time.time()))
        s.add(grant)
    with database.session() as s:  # what DELETE .../permissions/{id} does
        s.delete(s.get(CheckpointPermission, grant.seq))
    with database.session() as s:
        assert s.scalar(select(CheckpointPermission).where(
            CheckpointPermission.model_id == name)) is None
        assert deleted_position(s, "checkpoint_permissions", name, grant.id) == grant.seq


def test_every_tombstone_fits_the_rows_it_buries() -> None:
    """What a tombstone copies (the row's id, its list's owner) fits its columns, for every
    kind of row that leaves one: so no id, however long a user may make it, fails a
    delete."""
    columns = CursorTombstone.__table__.c
    for model, scope in SCOPES.items():
        for source, column in ((model.__table__.c.id, columns.id),
                               (model.__table__.c[scope], columns.scope)):
            assert isinstance(source.type, String) and isinstance(column.type, String)
            assert source.type.length <= column.type.length, (model.__tablename__, source.name)
        assert len(model.__tablename__) <= columns.kind.type.length


def _project_id(server: InProcessControlPlane, name: str) -> str:
    return next(row["project_id"] for row in server.api_keys() if row["project"] == name)


@pytest.fixture
def shared_model(control_plane: InProcessControlPlane) -> Iterator[str]:
    """A model of the control plane's default project with a 66-character name."""
    db = Database(control_plane.database_url)
    name = _checkpoint_name()
    _add_model(db, _project_id(control_plane, "default"), name)
    yield name
    with db.session() as s:  # its grants go with it
        s.delete(s.scalar(select(FineTunedModel).where(FineTunedModel.id == name)))
    db.dispose()


def test_the_owner_revokes_a_grant_and_the_grantee_loses_the_model(
        control_plane: InProcessControlPlane, attacker_key: str, shared_model: str) -> None:
    owner, grantee = control_plane.http(), control_plane.http(attacker_key)
    permissions = f"/fine_tuning/checkpoints/{shared_model}/permissions"
    granted = owner.post(permissions, json={
        "project_ids": [_project_id(control_plane, "other-team")]})
    assert granted.status_code == 200, granted.text
    assert shared_model in {m["id"] for m in grantee.get("/models").json()["data"]}

    revoked = owner.delete(f"{permissions}/{granted.json()['data'][0]['id']}")
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["deleted"] is True
    assert shared_model not in {m["id"] for m in grantee.get("/models").json()["data"]}
    assert owner.get(permissions).json()["data"] == []
