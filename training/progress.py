"""Reports a running trainer to the DB: metrics events, step and ETA, resumable state and
checkpoints, and the pause/cancel/stop requests it must act on. Every write is made only while
this attempt still holds the job."""

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from transformers import TrainerCallback

from storage.blob import BlobStore
from storage.db import Database
from storage.ids import new_id
from storage.keys import ADAPTER_FILES, adapter_prefix, job_prefix
from storage.models import FineTunedModel, JobCheckpoint
from training import jobs
from training.heartbeat import Heartbeat
from training.rewards import ERROR_RATE_METRIC

log = logging.getLogger("tuneserve.worker")

KEEP_CHECKPOINTS = 3
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja", "generation_config.json")


@dataclass
class JobContext:
    job_id: str
    project_id: str
    model_name: str
    base_model: str
    attempt: int
    db: Database
    store: BlobStore
    heartbeat: Heartbeat

    @property
    def state_prefix(self) -> str:
        return job_prefix(self.project_id, self.job_id) + "state/"


# Resumable state: the trainer's checkpoint directory (optimizer, scheduler, RNG, adapter) is
# uploaded under `state/a{attempt}-step{N}/`, then a manifest naming every file and its size
# is written beside it, then the job row points at that manifest. A state whose manifest is
# missing was cut short and is never used; the row always names a complete one.


def commit_state(ctx: JobContext, local: Path, step: int) -> bool:
    """Uploads one resumable state and makes it the job's; False if this attempt lost the
    job (what it uploaded is removed)."""
    store, name = ctx.store, f"a{ctx.attempt}-step{step}"
    staging = f"{ctx.state_prefix}{name}/"
    files = {p.relative_to(local).as_posix(): p.stat().st_size
             for p in sorted(local.rglob("*")) if p.is_file()}
    store.upload_dir(local, staging)
    manifest = f"{ctx.state_prefix}{name}.manifest.json"
    store.put(manifest, json.dumps({"step": step, "attempt": ctx.attempt,
                                    "files": files}).encode())
    with ctx.db.session() as s:
        held = jobs.transition(s, ctx.job_id, jobs.WORKING, ctx.attempt, resume_state=manifest)
    if not held:
        store.delete_prefix(staging)
        store.delete(manifest)
        return False
    # Older states, and any an interrupted attempt left half-written, go only now.
    for key in store.list_keys(ctx.state_prefix):
        if not (key.startswith(staging) or key == manifest):
            store.delete(key)
    return True


def load_state(store: BlobStore, manifest_key: str, local_dir: Path) -> tuple[Path, int]:
    """Downloads the committed state `manifest_key` names; returns (checkpoint dir, step)."""
    manifest = json.loads(store.get(manifest_key))
    staging = manifest_key.removesuffix(".manifest.json") + "/"
    target = local_dir / f"checkpoint-{manifest['step']}"
    store.download_prefix(staging, target)
    for name, size in manifest["files"].items():
        if (target / name).stat().st_size != size:
            raise RuntimeError(f"resumable state file {name} is incomplete")
    return target, int(manifest["step"])


class JobProgress(TrainerCallback):
    def __init__(self, ctx: JobContext, metrics_every: int = 1,
                 state_every_seconds: float = 600.0) -> None:
        self.ctx = ctx
        self.metrics_every = metrics_every
        self.state_every_seconds = state_every_seconds
        self.last_valid: dict[str, float] = {}
        self.last_train: dict[str, float] = {}
        self._started = time.monotonic()
        self._last_state = time.monotonic()
        self._first_step: int | None = None

    # Requests: cancel and pause through the DB (the heartbeat), stop through SIGTERM.

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
        hb = self.ctx.heartbeat
        if self._first_step is None:
            self._first_step = state.global_step - 1
        if hb.stop_requested and not hb.should_stop:
            hb.beat()  # a stop may be a pause or a cancel: learn which before saving
        if hb.should_stop:
            control.should_training_stop = True
        elif hb.pause_requested or hb.stop_requested:
            control.should_save = True
            control.should_training_stop = True
        elif time.monotonic() - self._last_state >= self.state_every_seconds:
            control.should_save = True
        return control

    # Metrics.

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        with self.ctx.db.session() as s:
            jobs.transition(s, self.ctx.job_id, jobs.WORKING, self.ctx.attempt,
                            total_steps=state.max_steps)

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
        logs = logs or {}
        if "eval_loss" in logs:
            self.last_valid = {"valid_loss": logs["eval_loss"]}
            if "eval_mean_token_accuracy" in logs:
                self.last_valid["valid_mean_token_accuracy"] = logs["eval_mean_token_accuracy"]
            self.last_valid |= {f"valid_{k}": v for k, v in _rewards(logs, "eval_").items()}
        if "loss" not in logs:
            return
        step = state.global_step
        self.last_train = {"train_loss": logs["loss"]}
        if "mean_token_accuracy" in logs:
            self.last_train["train_mean_token_accuracy"] = logs["mean_token_accuracy"]
        data = {"step": step, **self.last_train, **self.last_valid, **_rewards(logs),
                "total_steps": state.max_steps}
        values = {"step": step, "estimated_finish": self._eta(step, state.max_steps)}
        message = f"Step {step}/{state.max_steps}: training loss={logs['loss']:.4f}"
        if "reward_mean" in data:
            message += f", reward={data['reward_mean']:.4f}"
        with self.ctx.db.session() as s:
            held = jobs.transition(s, self.ctx.job_id, jobs.WORKING, self.ctx.attempt, **values)
            if held and (step % self.metrics_every == 0 or step == state.max_steps):
                jobs.add_event(s, self.ctx.job_id, message, type="metrics", data=data)

    def _eta(self, step: int, total: int) -> int | None:
        done = step - (self._first_step or 0)
        if done <= 0:
            return None
        per_step = (time.monotonic() - self._started) / done
        return int(time.time() + per_step * (total - step))

    # Checkpoints: resumable state at every save; a servable checkpoint at each epoch end.

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.ctx.heartbeat.should_stop:
            return
        step = state.global_step
        local = Path(args.output_dir) / f"checkpoint-{step}"
        at_epoch_end = abs(state.epoch - round(state.epoch)) < 1e-6
        # Published before the state that follows it is committed: a resume from an older
        # state publishes this step again, replacing it, rather than never.
        if at_epoch_end:
            self._publish_checkpoint(local, step)
        if commit_state(self.ctx, local, step):
            self._last_state = time.monotonic()
        else:
            self.ctx.heartbeat.lost = True
            control.should_training_stop = True
        # Only the newest is needed locally (an older one may be resumed from: keep `local`).
        for old in Path(args.output_dir).glob("checkpoint-*"):
            if old != local:
                shutil.rmtree(old, ignore_errors=True)

    def _publish_checkpoint(self, local: Path, step: int) -> None:
        ctx = self.ctx
        name = f"{ctx.model_name}:ckpt-step-{step}"
        prefix = adapter_prefix(ctx.project_id, jobs.model_key(ctx.job_id, ctx.attempt, step))
        ctx.store.upload_dir(local, prefix, names=ADAPTER_FILES + TOKENIZER_FILES)
        metrics = {"step": step, **self.last_train, **self.last_valid}
        now = int(time.time())
        stale: list[str] = []
        with ctx.db.session() as s:
            if not jobs.holds(s, ctx.job_id, ctx.attempt):
                held = False
            else:
                held = True
                # An earlier attempt may have published this step before it was lost.
                stale += self._drop_checkpoints(s, s.scalars(select(JobCheckpoint).where(
                    JobCheckpoint.job_id == ctx.job_id,
                    JobCheckpoint.fine_tuned_model_checkpoint == name)))
                s.flush()
                ckpt_id = new_id("ftckpt_")
                s.add(JobCheckpoint(id=ckpt_id, job_id=ctx.job_id, created_at=now,
                                    step_number=step, metrics=metrics,
                                    fine_tuned_model_checkpoint=name))
                s.add(FineTunedModel(id=name, project_id=ctx.project_id, job_id=ctx.job_id,
                                     base_model=ctx.base_model, adapter_prefix=prefix,
                                     checkpoint_id=ckpt_id, created_at=now))
                jobs.add_event(s, ctx.job_id, f"Checkpoint created at step {step}",
                               data={"checkpoint": ckpt_id, "step": step})
                s.flush()
                stale += self._drop_checkpoints(s, s.scalars(
                    select(JobCheckpoint).where(JobCheckpoint.job_id == ctx.job_id)
                    .order_by(JobCheckpoint.step_number.desc()).offset(KEEP_CHECKPOINTS)))
        if not held:
            ctx.store.delete_prefix(prefix)
        for old_prefix in stale:
            if old_prefix != prefix:
                ctx.store.delete_prefix(old_prefix)

    @staticmethod
    def _drop_checkpoints(s: Any, checkpoints: Any) -> list[str]:
        """Deletes checkpoint rows and their models; returns the adapter prefixes to remove."""
        prefixes = []
        for ckpt in list(checkpoints):
            model = s.scalar(select(FineTunedModel).where(
                FineTunedModel.id == ckpt.fine_tuned_model_checkpoint))
            s.delete(ckpt)
            if model is not None:
                prefixes.append(model.adapter_prefix)
                s.delete(model)
        return prefixes


def metrics_interval(total_steps: int) -> int:
    """About a hundred metrics events per job, and every step for short ones."""
    return max(1, math.ceil(total_steps / 100))


def _rewards(logs: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A reinforcement step's reward: the mean and spread over its sampled answers, each
    grader's mean (TRL logs `rewards/<grader>/mean`), and the share of answers whose
    grading failed (a judge that did not answer: their reward is 0). `prefix`: TRL's
    `eval_` for the validation prompts' answers."""
    if f"{prefix}reward" not in logs:
        return {}
    head = f"{prefix}rewards/"
    per_grader = {key[len(head):-len("/mean")]: value for key, value in logs.items()
                  if key.startswith(head) and key.endswith("/mean")}
    return {"reward_mean": logs[f"{prefix}reward"], "reward_std": logs.get(f"{prefix}reward_std"),
            "rewards": per_grader,
            "grader_error_rate": logs.get(prefix + ERROR_RATE_METRIC, 0.0)}
