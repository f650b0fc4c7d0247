"""Names that collide: with a `:` in a base model's name (Ollama's `qwen2.5:7b`) or in a
project's (`acme:prod`), parsing a model name for its short id picks the wrong part, so two
models would share one adapter folder: a later job overwrites an earlier model's weights,
and cancelling or deleting one deletes the other's. Adapter folders are named after job ids,
and such names work end to end."""

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from api.background.orphans import sweep_orphans
from api.tenancy import get_or_create_project
from storage.blob import LocalBlobStore
from storage.db import Database
from storage.ids import new_id
from storage.keys import adapter_prefix
from storage.models import FineTunedModel, FineTuningJob
from tests.support.in_process import InProcessControlPlane, control_plane_in_process
from tests.support.training import jsonl, sft_example
from training import jobs
from training.heartbeat import Heartbeat
from training.progress import JobContext, JobProgress

ALIAS = "qwen2.5:7b"
GRACE = 3600.0
# Pairs that parse to one short id: no suffix under a base with `:`, and one suffix under a
# project with `:` (`split(":")[4]` is "" and "prod" for all of them).
COLLIDING = [("default", "ft:qwen2.5:7b:default::Ab3dEf9h"),
             ("default", "ft:qwen2.5:7b:default::Zz8yXw7v"),
             ("acme:prod", "ft:SmolLM2-135M-Instruct:acme:prod:bot:Qm4pLk2s"),
             ("acme:prod", "ft:SmolLM2-135M-Instruct:acme:prod:bot:Tt7rNb1c")]


def _running_jobs(db: Database) -> list[FineTuningJob]:
    with db.session() as s:
        rows = []
        for project, name in COLLIDING:
            rows.append(FineTuningJob(
                id=new_id("ftjob-"), project_id=get_or_create_project(s, project).id,
                model=ALIAS, base_model=ALIAS, training_file="file-t", seed=1,
                status="running", created_at=0, result_files=[], attempt=1,
                method={"type": "supervised", "supervised": {"hyperparameters": {}}},
                model_name=name))
        s.add_all(rows)
    return rows


def _publish(db: Database, store: LocalBlobStore, job: FineTuningJob, tmp: Path) -> None:
    """What the job's worker does at an epoch's end: publishes its checkpoint's adapter."""
    local = tmp / job.id
    local.mkdir()
    (local / "adapter_config.json").write_text(json.dumps({"job": job.id}))
    ctx = JobContext(job_id=job.id, project_id=job.project_id, model_name=job.model_name,
                     base_model=job.base_model, attempt=1, db=db, store=store,
                     heartbeat=Heartbeat(db, job.id, 1))
    JobProgress(ctx)._publish_checkpoint(local, step=3)


def _adapters(db: Database, store: LocalBlobStore) -> dict[str, str | None]:
    """Each model's adapter, as the job that wrote it (None: gone)."""
    with db.session() as s:
        models = list(s.scalars(select(FineTunedModel)))
    out: dict[str, str | None] = {}
    for model in models:
        key = model.adapter_prefix + "adapter_config.json"
        out[model.id] = json.loads(store.get(key))["job"] if store.exists(key) else None
    return out


def test_models_whose_names_parse_alike_keep_their_own_adapters(
        database: Database, tmp_path: Path) -> None:
    db = database
    store = LocalBlobStore(tmp_path / "blobs")
    running = _running_jobs(db)
    for job in running:
        _publish(db, store, job, tmp_path)
    written = _adapters(db, store)
    assert written == {f"{job.model_name}:ckpt-step-3": job.id for job in running}
    with db.session() as s:
        prefixes = list(s.scalars(select(FineTunedModel.adapter_prefix)))
    assert len(set(prefixes)) == len(running)

    # Cancelling one job takes its own adapter only.
    cancelled, *kept = running
    with db.session() as s:
        jobs.discard_outputs(s, store, cancelled)
    assert _adapters(db, store) == {f"{job.model_name}:ckpt-step-3": job.id for job in kept}


def test_the_sweeper_keeps_every_active_job_s_adapters(database: Database,
                                                        tmp_path: Path) -> None:
    """Each running job's final adapter is written before its row (it waits through the
    evaluation): kept, whatever its model's name; an adapter no job or row accounts for goes."""
    db = database
    store = LocalBlobStore(tmp_path / "blobs")
    running = _running_jobs(db)
    finals = [adapter_prefix(job.project_id, jobs.model_key(job.id, 1)) + "adapter_config.json"
              for job in running]
    assert len(set(finals)) == len(running)
    project = running[0].project_id
    orphan = adapter_prefix(project, jobs.model_key("ftjob-gone", 1)) + "adapter_config.json"
    for key in [*finals, orphan]:
        store.put(key, b"{}")
    removed = sweep_orphans(db, store, GRACE, now=time.time() + GRACE + 60)
    assert removed == [orphan]
    assert sorted(store.list_keys("adapters/")) == sorted(finals)


# End to end: a base alias and a project name with `:` on a control plane.


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def aliased(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessControlPlane]:
    """A control plane offering `qwen2.5:7b` (a folder with a config.json is a prepared
    base; nothing here loads it)."""
    data = tmp_path_factory.mktemp(f"colliding-{request.param}")
    model_dir = data / "qwen2.5-7b"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps({"max_position_embeddings": 4096}))
    offered = json.dumps([{"name": ALIAS, "path": str(model_dir)}])
    with control_plane_in_process(request, request.param, data / "server",
                                  base_models=offered) as plane:
        yield plane


def test_a_base_alias_and_a_project_with_colons_work_end_to_end(
        aliased: InProcessControlPlane) -> None:
    key = aliased.cli("keys", "create", "--project", "acme:prod").strip()
    assert "acme:prod" in {row["project"] for row in aliased.api_keys()}
    for client in (aliased.client(), aliased.client(key)):
        assert ALIAS in {m.id for m in client.models.list()}
        assert client.models.retrieve(ALIAS).id == ALIAS
        training = client.files.create(
            file=("t.jsonl", jsonl([sft_example(i) for i in range(8)])), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model=ALIAS, training_file=training.id)
        assert job.model == ALIAS
        assert client.fine_tuning.jobs.retrieve(job.id).model == ALIAS
        client.fine_tuning.jobs.cancel(job.id)
