"""A grantee tries to take the owner's weights home: given a checkpoint of another project's
model, it fine-tunes a child from it (one step at a tiny learning rate leaves practically the
owner's adapter) and downloads or exports the child, its own model, keeping the weights past
any revocation. The child is the grantee's to use, never to take away, at any remove.

No training here: the rows a finished run leaves (the owner's job, model, checkpoint and
grant, the grantee's child jobs and models) are written straight into the control plane's
database, and the adapters into its blob store."""

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from storage.blob import LocalBlobStore
from storage.db import Database
from storage.ids import new_id, random_token
from storage.keys import adapter_prefix
from storage.models import CheckpointPermission, FineTunedModel, FineTuningJob, JobCheckpoint
from tests.support.in_process import InProcessControlPlane
from training.jobs import fine_tuned_model_name, model_key

BASE = "SmolLM2-135M-Instruct"


def _project_id(server: InProcessControlPlane, name: str) -> str:
    return next(row["project_id"] for row in server.api_keys() if row["project"] == name)


@dataclass
class Lineage:
    owner_model: str  # the owner's final model
    shared: str  # its checkpoint, granted to the grantee
    child: str  # the grantee's, trained from `shared`
    grandchild: str  # the grantee's, trained from `child`
    own: str  # the grantee's, trained from the base alone


class Rows:
    """Writes what finished jobs leave behind into the control plane's DB and blobs."""

    def __init__(self, server: InProcessControlPlane) -> None:
        self.db = Database(server.database_url)
        self.store = LocalBlobStore(server.data_dir / "blobs")

    def job(self, project_id: str, project: str, parent: str | None) -> tuple[str, str]:
        """A succeeded job (continuing from `parent`, if any) and its model; returns both."""
        job_id, name = new_id("ftjob-"), fine_tuned_model_name(BASE, project, "w")
        now = int(time.time())
        with self.db.session() as s:
            s.add(FineTuningJob(
                id=job_id, project_id=project_id, model=parent or BASE, base_model=BASE,
                training_file="file-" + random_token(), seed=1, status="succeeded",
                method={"type": "supervised", "supervised": {"hyperparameters": {}}},
                model_name=name, fine_tuned_model=name, created_at=now, finished_at=now,
                result_files=[], attempt=1))
            s.flush()
            self.model(s, project_id, job_id, name, model_key(job_id, 1))
        return job_id, name

    def model(self, s, project_id: str, job_id: str, name: str, key: str,  # type: ignore[no-untyped-def]
              checkpoint_id: str | None = None) -> None:
        prefix = adapter_prefix(project_id, key)
        for file in ("adapter_config.json", "adapter_model.safetensors"):
            self.store.put(prefix + file, f"{name} {file}".encode())
        s.add(FineTunedModel(id=name, project_id=project_id, job_id=job_id, base_model=BASE,
                             adapter_prefix=prefix, checkpoint_id=checkpoint_id,
                             created_at=int(time.time())))


@pytest.fixture(scope="module")
def lineage(control_plane: InProcessControlPlane, attacker_key: str) -> Iterator[Lineage]:
    rows = Rows(control_plane)
    owner_id = _project_id(control_plane, "default")
    grantee_id = _project_id(control_plane, "other-team")
    owner_job, owner_model = rows.job(owner_id, "default", None)
    shared = owner_model + ":ckpt-step-3"
    with rows.db.session() as s:
        ckpt_id = new_id("ftckpt_")
        s.add(JobCheckpoint(id=ckpt_id, job_id=owner_job, created_at=int(time.time()),
                            step_number=3, metrics={}, fine_tuned_model_checkpoint=shared))
        rows.model(s, owner_id, owner_job, shared, model_key(owner_job, 1, 3), ckpt_id)
        s.flush()
        s.add(CheckpointPermission(id=new_id("cp_"), model_id=shared, project_id=grantee_id,
                                   created_at=int(time.time())))
    _, child = rows.job(grantee_id, "other-team", shared)
    _, grandchild = rows.job(grantee_id, "other-team", child)
    _, own = rows.job(grantee_id, "other-team", None)
    yield Lineage(owner_model, shared, child, grandchild, own)
    rows.db.dispose()


def _download(server: InProcessControlPlane, key: str, model: str):  # type: ignore[no-untyped-def]
    with server.http(key) as http:
        return http.get(f"/models/{model}/adapter")


def test_the_grantee_cannot_download_a_model_trained_from_the_shared_one(
        control_plane: InProcessControlPlane, attacker_key: str, lineage: Lineage) -> None:
    for model in (lineage.child, lineage.grandchild):  # at any remove
        response = _download(control_plane, attacker_key, model)
        assert response.status_code == 403, (model, response.text)
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert error["code"] == "model_weights_not_owned" and error["param"] == "model"
        assert model in error["message"]
    # Using it stays allowed: it is the grantee's model.
    listed = {m.id for m in control_plane.client(attacker_key).models.list()}
    assert {lineage.child, lineage.grandchild, lineage.shared} <= listed


def test_weights_of_ones_own_line_still_download(
        control_plane: InProcessControlPlane, attacker_key: str, lineage: Lineage) -> None:
    for key, model in ((control_plane.api_key, lineage.owner_model),
                       (control_plane.api_key, lineage.shared),
                       (attacker_key, lineage.own)):
        response = _download(control_plane, key, model)
        assert response.status_code == 200, (model, response.text)
        assert f"{model} adapter_model.safetensors".encode() in response.content


def test_the_operator_export_refuses_it_too(
        control_plane: InProcessControlPlane, lineage: Lineage) -> None:
    with pytest.raises(RuntimeError, match="another project owns"):
        control_plane.cli("export", lineage.child)


def test_deleting_the_shared_checkpoint_does_not_free_the_child(
        control_plane: InProcessControlPlane, attacker_key: str, lineage: Lineage) -> None:
    """Once the owner deletes its checkpoint no model row says whose it was: its job's does."""
    assert control_plane.client().models.delete(lineage.shared).deleted
    response = _download(control_plane, attacker_key, lineage.child)
    assert response.status_code == 403, response.text
    assert _download(control_plane, control_plane.api_key, lineage.owner_model).status_code == 200
