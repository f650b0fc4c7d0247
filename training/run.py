"""A job's training run, from the DB row to the published adapter."""

import csv
import importlib.util
import io
import os
import time
from pathlib import Path

from sqlalchemy import select

from storage.base_models import base_models
from storage.blob import BlobStore
from storage.db import Database
from storage.files import add_file
from storage.ids import new_id
from storage.keys import adapter_prefix, file_key
from storage.models import FineTunedModel, FineTuningJob, JobEvent
from training import jobs
from training.data import dpo_row, read_records, sft_rows
from training.heartbeat import Heartbeat
from training.hyperparameters import Hyperparameters
from training.jobs import JobStatus
from training.progress import (
    ADAPTER_FILES,
    TOKENIZER_FILES,
    JobContext,
    JobProgress,
    load_state,
    metrics_interval,
)
from training.settings import TrainingSettings
from training.trainer import RunConfig, build_trainer, load_model

RESULT_COLUMNS = ["step", "train_loss", "train_accuracy", "valid_loss",
                  "valid_mean_token_accuracy"]


def _rows(method: str, records: list[dict]) -> list[dict]:  # type: ignore[type-arg]
    if method == "dpo":
        return [dpo_row(r) for r in records]
    return [row for r in records for row in sft_rows(r)]


def results_csv(db: Database, job_id: str) -> bytes:
    """OpenAI's `fine-tune-results` file, from the metrics events (they survive resumes)."""
    with db.session() as s:
        events = list(s.scalars(select(JobEvent).where(JobEvent.job_id == job_id,
                                                       JobEvent.type == "metrics")
                                .order_by(JobEvent.seq)))
    # A step trained again after a resume from an older state counts once: its latest run.
    by_step = {d["step"]: d for d in (e.data or {} for e in events) if "train_loss" in d}
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(RESULT_COLUMNS)
    for step in sorted(by_step):
        d = by_step[step]
        writer.writerow([step, d["train_loss"], d.get("train_mean_token_accuracy", ""),
                         d.get("valid_loss", ""), d.get("valid_mean_token_accuracy", "")])
    return out.getvalue().encode()


def run(job_id: str, attempt: int, settings: TrainingSettings, db: Database, store: BlobStore,
        heartbeat: Heartbeat, workdir: Path) -> None:
    with db.session() as s:
        job = jobs.get_job(s, job_id)
        if job is None or not jobs.holds(s, job_id, attempt):
            return
    method = job.method["type"]
    hp = Hyperparameters(**job.method[method]["hyperparameters"])
    spec = base_models(settings)[job.model]
    ctx = JobContext(job_id=job.id, project_id=job.project_id, model_name=job.model_name,
                     base_model=job.model, attempt=attempt, db=db, store=store,
                     heartbeat=heartbeat)

    train_rows = _rows(method, read_records(store, file_key(job.project_id, job.training_file),
                                            "training_file"))
    valid_rows = _rows(method, read_records(store, file_key(job.project_id, job.validation_file),
                                            "validation_file")) if job.validation_file else []
    output_dir = workdir / "out"
    resume_from, resume_step = (load_state(store, job.resume_state, output_dir)
                                if job.resume_state else (None, 0))
    with db.session() as s:
        if jobs.holds(s, job_id, attempt):
            jobs.add_event(s, job_id, f"Fine-tuning job resumed from step {resume_step}"
                           if resume_from else "Fine-tuning job started")
            if job.started_at is None:
                jobs.transition(s, job_id, jobs.WORKING, attempt, started_at=int(time.time()))
    steps_per_epoch = -(-len(train_rows) // hp.batch_size)
    progress = JobProgress(ctx, metrics_every=metrics_interval(steps_per_epoch * hp.n_epochs),
                           state_every_seconds=settings.checkpoint_every_seconds)
    cfg = RunConfig(method=method, model_dir=spec.path, output_dir=output_dir,
                    hyperparameters=hp, seed=job.seed,
                    eval_steps=max(1, steps_per_epoch // 2) if valid_rows else None,
                    report_to=_report_to(job))

    model, tokenizer = load_model(cfg)
    if heartbeat.should_stop:
        return
    trainer = build_trainer(cfg, model, tokenizer, train_rows, valid_rows, [progress])
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)

    if heartbeat.should_stop:
        return  # cancelled (the scheduler removes its outputs) or taken over: touch nothing
    if trainer.state.global_step < trainer.state.max_steps:
        # Stopped early with its state saved: a pause, or a stop (SIGTERM) after which the
        # scheduler starts another attempt from that state.
        with db.session() as s:
            if jobs.transition(s, job_id, (JobStatus.PAUSING,), attempt,
                               status=JobStatus.PAUSED, estimated_finish=None):
                jobs.add_event(s, job_id, f"Fine-tuning job paused at step "
                               f"{trainer.state.global_step}")
        return
    _finish(ctx, job, trainer, tokenizer, bool(valid_rows), workdir)


def _report_to(job: FineTuningJob) -> list[str]:
    wants = any(i.get("type") == "wandb" for i in job.integrations or [])
    usable = importlib.util.find_spec("wandb") is not None and os.environ.get("WANDB_API_KEY")
    return ["wandb"] if wants and usable else []


def _finish(ctx: JobContext, job: FineTuningJob, trainer: object, tokenizer: object,
            has_valid: bool, workdir: Path) -> None:
    db, store = ctx.db, ctx.store
    step = trainer.state.global_step  # type: ignore[attr-defined]
    if has_valid:
        full = trainer.evaluate()  # type: ignore[attr-defined]
        data = {"step": step, "full_valid_loss": full.get("eval_loss"),
                "full_valid_mean_token_accuracy": full.get("eval_mean_token_accuracy")}
        with db.session() as s:
            if jobs.holds(s, job.id, ctx.attempt):
                jobs.add_event(s, job.id,
                               f"Full validation loss={data['full_valid_loss']:.4f}",
                               type="metrics", data=data)
    final_dir = workdir / "final"
    trainer.save_model(str(final_dir))  # type: ignore[attr-defined]
    tokenizer.save_pretrained(str(final_dir))  # type: ignore[attr-defined]
    prefix = adapter_prefix(job.project_id, jobs.model_key(job.model_name, ctx.attempt))
    store.upload_dir(final_dir, prefix, names=ADAPTER_FILES + TOKENIZER_FILES)

    results = results_csv(db, job.id)
    result_id = new_id("file-")
    store.put(file_key(job.project_id, result_id), results)
    now = int(time.time())
    hp = job.method[job.method["type"]]["hyperparameters"]
    with db.session() as s:
        done = jobs.transition(
            s, job.id, jobs.WORKING, ctx.attempt, status=JobStatus.SUCCEEDED, finished_at=now,
            step=step, fine_tuned_model=job.model_name,
            trained_tokens=(job.n_tokens or 0) * hp["n_epochs"], result_files=[result_id],
            estimated_finish=None, resume_state=None,
        )
        if done:
            add_file(s, file_id=result_id, project_id=job.project_id, filename="step_metrics.csv",
                     purpose="fine-tune-results", size=len(results))
            s.add(FineTunedModel(id=job.model_name, project_id=job.project_id, job_id=job.id,
                                 base_model=job.model, adapter_prefix=prefix, created_at=now))
            jobs.add_event(s, job.id, f"New fine-tuned model created: {job.model_name}")
            jobs.add_event(s, job.id, "The job has successfully completed")
    if done:
        store.delete_prefix(ctx.state_prefix)
    else:  # cancelled at the last moment, or taken over: remove only what this attempt made
        store.delete_prefix(prefix)
        store.delete(file_key(job.project_id, result_id))
