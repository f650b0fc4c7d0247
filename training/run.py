"""A job's training run, from the DB row to the published adapter."""

import asyncio
import csv
import importlib.util
import io
import os
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import select

from storage.base_models import base_models
from storage.blob import BlobNotFound, BlobStore
from storage.db import Database
from storage.files import add_file
from storage.ids import new_id
from storage.keys import ADAPTER_FILES, adapter_prefix, file_key
from storage.models import FineTunedModel, FineTuningJob, JobEvent
from storage.sharing import usable_model
from training import evaluation_state, jobs
from training.data import dpo_row, read_records, sft_dataset_rows
from training.evaluation import (
    EvalExample,
    Scorer,
    answer_tokens,
    eval_examples,
    evaluate,
    headline,
    scorer_for,
)
from training.graders import parse_grader
from training.heartbeat import Heartbeat
from training.hyperparameters import Hyperparameters
from training.jobs import JobStatus
from training.judge import job_judge
from training.progress import (
    TOKENIZER_FILES,
    JobContext,
    JobProgress,
    load_state,
    metrics_interval,
)
from training.rewards import ERROR_RATE_METRIC, GRADER_PARAM, rft_rows
from training.settings import TrainingSettings
from training.trainer import RunConfig, build_trainer, load_model

RESULT_COLUMNS = ["step", "train_loss", "train_accuracy", "valid_loss",
                  "valid_mean_token_accuracy"]


def _rows(method: str, records: list[dict[str, Any]], tokenizer: Any) -> list[dict[str, Any]]:
    if method == "dpo":
        return [dpo_row(r) for r in records]
    if method == "reinforcement":
        return rft_rows(records, tokenizer)
    return sft_dataset_rows(records, tokenizer)


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
    hp = Hyperparameters.from_job(method, job.method[method]["hyperparameters"])
    spec = base_models(settings)[job.base_model]
    ctx = JobContext(job_id=job.id, project_id=job.project_id, model_name=job.model_name,
                     base_model=job.base_model, attempt=attempt, db=db, store=store,
                     heartbeat=heartbeat)

    train_records = read_records(store, file_key(job.project_id, job.training_file),
                                 "training_file")
    valid_records = read_records(store, file_key(job.project_id, job.validation_file),
                                 "validation_file") if job.validation_file else []
    # A job whose base the serving engine serves is evaluated there, after it succeeded.
    examples = ([] if evaluation_state.is_pending(job.evaluation)
                else eval_examples(method, valid_records, settings.eval_max_examples))
    output_dir = workdir / "out"
    resume_from, resume_step = (load_state(store, job.resume_state, output_dir)
                                if job.resume_state else (None, 0))
    with db.session() as s:
        if jobs.holds(s, job_id, attempt):
            jobs.add_event(s, job_id, f"Fine-tuning job resumed from step {resume_step}"
                           if resume_from else "Fine-tuning job started")
            if job.started_at is None:
                jobs.transition(s, job_id, jobs.WORKING, attempt, started_at=int(time.time()))
    initial_adapter = None
    if resume_from:
        # The trained adapter, loaded before the trainer is built. Transformers' resume loads
        # only the subfolder adapters of a checkpoint that has any, and a DPO checkpoint has
        # TRL's frozen reference copy in `ref/`: without this a resumed DPO job would go on
        # from a fresh adapter, its training before the pause lost. (The reference copy TRL
        # makes of this one is then replaced by the checkpoint's own `ref/`.)
        initial_adapter = resume_from / "adapter_model.safetensors"
    elif job.parent_model:
        initial_adapter = _parent_adapter(ctx, job.parent_model, workdir / "parent")
        if initial_adapter is None:
            return
    cfg = RunConfig(method=method, model_dir=spec.path, output_dir=output_dir,
                    hyperparameters=hp, seed=job.seed, initial_adapter=initial_adapter,
                    report_to=_report_to(job), grader=job.method[method].get("grader"))

    model, tokenizer = load_model(cfg)
    if heartbeat.should_stop:
        return
    # Rows need the tokenizer: a conversation is one row, its mask from the chat template.
    # A reinforcement run's validation prompts are answered and graded every eval_interval
    # steps.
    train_rows = _rows(method, train_records, tokenizer)
    valid_rows = _rows(method, valid_records, tokenizer)
    if heartbeat.should_stop:
        return  # taken over or cancelled while the rows were made: touch nothing
    steps_per_epoch = -(-len(train_rows) // hp.batch_size)
    cfg.eval_steps = (hp.eval_interval or max(1, steps_per_epoch // 2)) if valid_rows else None
    progress = JobProgress(ctx, metrics_every=metrics_interval(steps_per_epoch * hp.n_epochs),
                           state_every_seconds=settings.checkpoint_every_seconds)
    grader = parse_grader(cfg.grader, GRADER_PARAM) if cfg.grader else None
    with job_judge(db, settings.api_url, job.project_id, job_id, attempt, grader,
                   settings.judge_timeout_seconds) as cfg.judge:
        cfg.judge_timeout = settings.judge_timeout_seconds
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
        if valid_rows:  # inside the judge's block: its answers are graded with the job's key
            _full_validation(ctx, trainer)
        # So is the built-in evaluation of a reinforcement job (by its grader).
        scorer = scorer_for(job.method, cfg.judge, settings.judge_timeout_seconds)
        _finish(ctx, job, trainer, tokenizer, workdir,
                Evaluator(ctx, model, tokenizer, examples, settings.eval_batch_size, scorer,
                          answer_tokens(job.method), job.parent_model))


def _parent_adapter(ctx: JobContext, parent: str, local: Path) -> Path | None:
    """The weights of the fine-tuned model a job continues from; None (the job failed) when
    that model was deleted meanwhile."""
    prefix = _parent_prefix(ctx, parent)
    path = local / "adapter_model.safetensors"
    try:
        if prefix is None:
            raise BlobNotFound(parent)
        local.mkdir(parents=True, exist_ok=True)
        path.write_bytes(ctx.store.get(prefix + "adapter_model.safetensors"))
    except BlobNotFound:
        with ctx.db.session() as s:
            jobs.fail(s, ctx.job_id, "model_not_available",
                      f"The model '{parent}' this job continues from was deleted.", "model",
                      attempt=ctx.attempt)
        return None
    return path


def _parent_prefix(ctx: JobContext, parent: str) -> str | None:
    """Where the adapter of the fine-tuned model a job continues is stored; None if that
    model is gone. The project's own model or one shared with it (checkpoint permissions)."""
    with ctx.db.session() as s:
        row = usable_model(s, ctx.project_id, parent)
        return row.adapter_prefix if row is not None else None


def _report_to(job: FineTuningJob) -> list[str]:
    wants = any(i.get("type") == "wandb" for i in job.integrations or [])
    usable = importlib.util.find_spec("wandb") is not None and os.environ.get("WANDB_API_KEY")
    return ["wandb"] if wants and usable else []


@dataclass
class Evaluator:
    """The built-in evaluation of a finished run (nothing when there are no examples)."""

    ctx: JobContext
    model: Any
    tokenizer: Any
    examples: list[EvalExample]
    batch_size: int
    scorer: Scorer
    answer_tokens: int | None
    # The fine-tuned model the job continued from, if any: its answers are the "before".
    parent_model: str | None

    def __call__(self, final_step: int) -> tuple[dict[str, Any], bytes] | None:
        if not self.examples:
            return None
        ctx = self.ctx
        with ctx.db.session() as s:
            kept = evaluation_state.checkpoints(s, ctx.job_id, final_step)
        weights = {name: partial(self._weights, prefix) for name, _, prefix in kept}
        parent = self.parent_model
        result = evaluate(self.model, self.tokenizer, self.examples, weights, self.batch_size,
                          lambda: ctx.heartbeat.should_stop, self.answer_tokens,
                          base_model=ctx.base_model,
                          start_from=(parent, partial(self._parent_weights, parent))
                          if parent else None)
        if result is None:
            return None
        asyncio.run(result.grade(self.scorer))
        return result.summary({name: step for name, step, _ in kept}, "worker"), result.jsonl()

    def _weights(self, prefix: str) -> dict[str, Any] | None:
        from safetensors.torch import load

        try:
            return load(self.ctx.store.get(prefix + "adapter_model.safetensors"))
        except BlobNotFound:  # the checkpoint was deleted meanwhile
            return None

    def _parent_weights(self, parent: str) -> dict[str, Any] | None:
        """The adapter of the fine-tuned model the job continued from; None if it is gone."""
        prefix = _parent_prefix(self.ctx, parent)
        return self._weights(prefix) if prefix is not None else None


def _full_validation(ctx: JobContext, trainer: Any) -> None:
    """The metrics event of the whole validation file, after the last step."""
    step = trainer.state.global_step
    full = trainer.evaluate()
    if "eval_reward" in full:  # reinforcement: the validation answers' reward
        data = {"step": step, "full_valid_reward_mean": full["eval_reward"],
                "full_valid_grader_error_rate": full.get(f"eval_{ERROR_RATE_METRIC}", 0.0)}
        message = f"Full validation reward={full['eval_reward']:.4f}"
    else:
        data = {"step": step, "full_valid_loss": full.get("eval_loss"),
                "full_valid_mean_token_accuracy": full.get("eval_mean_token_accuracy")}
        message = f"Full validation loss={data['full_valid_loss']:.4f}"
    with ctx.db.session() as s:
        if jobs.holds(s, ctx.job_id, ctx.attempt):
            jobs.add_event(s, ctx.job_id, message, type="metrics", data=data)


def _finish(ctx: JobContext, job: FineTuningJob, trainer: Any, tokenizer: Any,
            workdir: Path, evaluator: Evaluator) -> None:
    db, store = ctx.db, ctx.store
    step = trainer.state.global_step
    final_dir = workdir / "final"
    trainer.save_model(str(final_dir))
    tokenizer.save_pretrained(str(final_dir))
    prefix = adapter_prefix(job.project_id, jobs.model_key(job.id, ctx.attempt))
    store.upload_dir(final_dir, prefix, names=ADAPTER_FILES + TOKENIZER_FILES)

    # After the adapter is safe: the evaluation loads each checkpoint's weights in turn.
    evaluation, eval_id = evaluator(step), None
    if ctx.heartbeat.should_stop:
        return
    if evaluation is not None:
        eval_id = new_id("file-")
        eval_size = store.put(file_key(job.project_id, eval_id), evaluation[1])
    summary = (evaluation_state.completed_by_worker(job.evaluation, evaluation[0], eval_id)
               if evaluation and eval_id else job.evaluation)
    results = results_csv(db, job.id)
    result_id = new_id("file-")
    store.put(file_key(job.project_id, result_id), results)
    now = int(time.time())
    hp = job.method[job.method["type"]]["hyperparameters"]
    with db.session() as s:
        done = jobs.transition(
            s, job.id, jobs.WORKING, ctx.attempt, status=JobStatus.SUCCEEDED, finished_at=now,
            step=step, fine_tuned_model=job.model_name,
            trained_tokens=(job.n_tokens or 0) * hp["n_epochs"],
            result_files=[result_id] + ([eval_id] if eval_id else []),
            estimated_finish=None, resume_state=None, evaluation=summary,
        )
        if done:
            add_file(s, file_id=result_id, project_id=job.project_id, filename="step_metrics.csv",
                     purpose="fine-tune-results", size=len(results))
            if summary is not None and eval_id is not None:
                add_file(s, file_id=eval_id, project_id=job.project_id,
                         filename="eval_results.jsonl", purpose="fine-tune-eval",
                         size=eval_size)
                jobs.add_event(s, job.id, headline(summary), type="metrics",
                               data={"step": step, "evaluation": summary})
            s.add(FineTunedModel(id=job.model_name, project_id=job.project_id, job_id=job.id,
                                 base_model=job.base_model, adapter_prefix=prefix,
                                 created_at=now))
            jobs.add_event(s, job.id, f"New fine-tuned model created: {job.model_name}")
            jobs.add_event(s, job.id, "The job has successfully completed")
    if done:
        store.delete_prefix(ctx.state_prefix)
    else:  # cancelled at the last moment, or taken over: remove only what this attempt made
        store.delete_prefix(prefix)
        for file_id in (result_id, eval_id):
            if file_id:
                store.delete(file_key(job.project_id, file_id))
