"""Reports a running trainer to the DB: metrics events, step and ETA, checkpoints (uploaded
to storage, last 3 kept), and the pause/cancel requests it must act on."""

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from transformers import TrainerCallback

from storage.blob import BlobStore
from storage.db import Database
from storage.ids import new_id
from storage.keys import adapter_prefix, job_prefix
from storage.models import FineTunedModel, JobCheckpoint
from training import jobs
from training.heartbeat import Heartbeat

KEEP_CHECKPOINTS = 3
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja", "generation_config.json")


@dataclass
class JobContext:
    job_id: str
    project_id: str
    model_name: str
    base_model: str
    db: Database
    store: BlobStore
    heartbeat: Heartbeat

    @property
    def state_prefix(self) -> str:
        return job_prefix(self.project_id, self.job_id) + "state/"


class JobProgress(TrainerCallback):
    def __init__(self, ctx: JobContext, metrics_every: int = 1) -> None:
        self.ctx = ctx
        self.metrics_every = metrics_every
        self.pausing = False
        self.last_valid: dict[str, float] = {}
        self.last_train: dict[str, float] = {}
        self._started = time.monotonic()
        self._first_step: int | None = None

    # Requests from the API, seen through the heartbeat.

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
        if self._first_step is None:
            self._first_step = state.global_step - 1
        if self.ctx.heartbeat.cancelled:
            control.should_training_stop = True
        elif self.ctx.heartbeat.pause_requested and not self.pausing:
            self.pausing = True
            control.should_save = True
            control.should_training_stop = True
        return control

    # Metrics.

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        with self.ctx.db.session() as s:
            jobs.transition(s, self.ctx.job_id, ("running",), total_steps=state.max_steps)

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
        logs = logs or {}
        if "eval_loss" in logs:
            self.last_valid = {"valid_loss": logs["eval_loss"]}
            if "eval_mean_token_accuracy" in logs:
                self.last_valid["valid_mean_token_accuracy"] = logs["eval_mean_token_accuracy"]
        if "loss" not in logs:
            return
        step = state.global_step
        self.last_train = {"train_loss": logs["loss"]}
        if "mean_token_accuracy" in logs:
            self.last_train["train_mean_token_accuracy"] = logs["mean_token_accuracy"]
        data = {"step": step, **self.last_train, **self.last_valid, "total_steps": state.max_steps}
        values = {"step": step, "estimated_finish": self._eta(step, state.max_steps)}
        with self.ctx.db.session() as s:
            jobs.transition(s, self.ctx.job_id, ("running",), **values)
            if step % self.metrics_every == 0 or step == state.max_steps:
                jobs.add_event(s, self.ctx.job_id,
                               f"Step {step}/{state.max_steps}: training loss={logs['loss']:.4f}",
                               type="metrics", data=data)

    def _eta(self, step: int, total: int) -> int | None:
        done = step - (self._first_step or 0)
        if done <= 0:
            return None
        per_step = (time.monotonic() - self._started) / done
        return int(time.time() + per_step * (total - step))

    # Checkpoints.

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        step = state.global_step
        local = Path(args.output_dir) / f"checkpoint-{step}"
        # The full trainer state (optimizer, scheduler, RNG) so a pause or a lost worker
        # resumes exactly here; only the newest is kept.
        prefix = f"{self.ctx.state_prefix}checkpoint-{step}/"
        self.ctx.store.upload_dir(local, prefix)
        for key in self.ctx.store.list_keys(self.ctx.state_prefix):
            if not key.startswith(prefix):
                self.ctx.store.delete(key)
        at_epoch_end = abs(state.epoch - round(state.epoch)) < 1e-6
        if at_epoch_end and not self.ctx.heartbeat.cancelled:
            self._publish_checkpoint(local, step)

    def _publish_checkpoint(self, local: Path, step: int) -> None:
        ctx = self.ctx
        name = f"{ctx.model_name}:ckpt-step-{step}"
        prefix = adapter_prefix(ctx.project_id, jobs.model_key(name))
        ctx.store.upload_dir(local, prefix, names=ADAPTER_FILES + TOKENIZER_FILES)
        metrics = {"step": step, **self.last_train, **self.last_valid}
        now = int(time.time())
        with ctx.db.session() as s:
            ckpt_id = new_id("ftckpt_")
            s.add(JobCheckpoint(id=ckpt_id, job_id=ctx.job_id, created_at=now, step_number=step,
                                metrics=metrics, fine_tuned_model_checkpoint=name))
            s.add(FineTunedModel(id=name, project_id=ctx.project_id, job_id=ctx.job_id,
                                 base_model=ctx.base_model, adapter_prefix=prefix,
                                 checkpoint_id=ckpt_id, created_at=now))
            jobs.add_event(s, ctx.job_id, f"Checkpoint created at step {step}",
                           data={"checkpoint": ckpt_id, "step": step})
            s.flush()
            old = list(s.scalars(
                select(JobCheckpoint).where(JobCheckpoint.job_id == ctx.job_id)
                .order_by(JobCheckpoint.step_number.desc()).offset(KEEP_CHECKPOINTS)
            ))
            stale = []
            for ckpt in old:
                model = s.scalar(select(FineTunedModel).where(
                    FineTunedModel.id == ckpt.fine_tuned_model_checkpoint))
                s.delete(ckpt)
                if model is not None:
                    stale.append(model.adapter_prefix)
                    s.delete(model)
        for old_prefix in stale:
            ctx.store.delete_prefix(old_prefix)


def metrics_interval(total_steps: int) -> int:
    """About a hundred metrics events per job, and every step for short ones."""
    return max(1, math.ceil(total_steps / 100))
