"""Creating jobs and acting on them on behalf of a client."""

import json
import secrets
import time
from collections.abc import Collection
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from api.errors import APIError, not_found
from api.files.service import get_file
from api.fine_tuning.jobs.schemas import (
    MAX_METADATA_PAIRS,
    CreateFineTuningJobRequest,
    Reinforcement,
)
from storage.base_models import BaseModelSpec
from storage.blob import BlobNotFound, BlobStore
from storage.ids import new_id
from storage.models import FineTuningJob, JobEvent, Project
from storage.sharing import usable_model
from training import evaluation_state, jobs
from training.graders import GraderError, judge_models, parse_grader, validate_grader
from training.hyperparameters import DEFAULT_LORA_RANK
from training.jobs import JobStatus


def get_job(session: Session, project_id: str, job_id: str) -> FineTuningJob:
    job = jobs.get_job(session, job_id)
    if job is None or job.project_id != project_id:
        raise not_found("fine-tuning job", job_id, "fine_tuning_job_id")
    return job


def _method(body: CreateFineTuningJobRequest) -> dict[str, Any]:
    method = body.method
    kind = method.type if method else "supervised"
    for other in ("supervised", "dpo", "reinforcement"):
        if other != kind and method is not None and getattr(method, other) is not None:
            raise APIError(400, f"'method.{other}' does not go with method.type '{kind}'.",
                           param=f"method.{other}", code="invalid_value")
    # The top-level hyperparameters (deprecated by OpenAI in favour of `method`) stand for
    # the method's own, never beside them: nothing given is silently ignored.
    legacy = body.hyperparameters.model_dump(exclude_unset=True) if body.hyperparameters else {}
    block = getattr(method, kind, None) if method else None
    if legacy and block is not None and block.hyperparameters.model_fields_set:
        raise APIError(400, f"Give the hyperparameters once: in 'method.{kind}."
                       "hyperparameters' (the top-level 'hyperparameters' is deprecated).",
                       param="hyperparameters", code="invalid_value")
    if kind == "supervised":
        hp = (block.hyperparameters.model_dump(exclude_none=True) if block else {}) | legacy
        return {"type": "supervised", "supervised": {"hyperparameters": hp}}
    if kind == "dpo":
        hp = (block.hyperparameters.model_dump(exclude_none=True) if block else {}) | legacy
        return {"type": "dpo", "dpo": {"hyperparameters": hp}}
    reinforcement = _reinforcement(method.reinforcement if method else None)
    reinforcement["hyperparameters"] |= legacy
    return {"type": "reinforcement", "reinforcement": reinforcement}


def _reinforcement(given: Reinforcement | None) -> dict[str, Any]:
    """The grader, checked as far as it can be before training, and the hyperparameters."""
    where = "method.reinforcement"
    if given is None:
        raise APIError(400, f"Missing required parameter: '{where}.grader'.",
                       param=f"{where}.grader", code="missing_required_parameter")
    if given.response_format is not None:
        raise APIError(400, "Structured outputs during reinforcement fine-tuning are not "
                       "supported by this server.", param=f"{where}.response_format",
                       code="unsupported_value")
    try:
        validate_grader(given.grader, f"{where}.grader")
    except GraderError as err:
        raise APIError(400, err.message, param=err.param, code=err.code) from None
    hp = given.hyperparameters.model_dump(exclude_none=True)
    return {"grader": given.grader, "hyperparameters": hp}


def _check_judges(session: Session, project_id: str, method: dict[str, Any],
                  bases: Collection[str]) -> None:
    """Each score_model grader's model is one the project may chat with: a base served here
    (`bases`), or its own or a shared fine-tuned model on one. The job's worker asks it
    through this API (training/judge.py)."""
    if method["type"] != "reinforcement":
        return
    param = "method.reinforcement.grader"
    for model, field in judge_models(parse_grader(method["reinforcement"]["grader"], param),
                                     param):
        row = usable_model(session, project_id, model)
        if row is None and model not in bases:
            raise APIError(400, f"The model '{model}' does not exist or you do not have "
                           "access to it.", param=field, code="model_not_found")
        if row is not None and row.base_model not in bases:
            raise APIError(400, f"The model '{model}' is not served by this server, so it "
                           "cannot judge samples.", param=field, code="model_not_served")


def _training_file(session: Session, project_id: str, file_id: str, param: str) -> None:
    row = get_file(session, project_id, file_id, param)
    if row.purpose != "fine-tune":
        raise APIError(400, f"File '{file_id}' has purpose '{row.purpose}'; fine-tuning "
                       "needs a file uploaded with purpose 'fine-tune'.",
                       param=param, code="invalid_file_purpose")


# A job waiting to run: counted against TUNESERVE_MAX_QUEUED_JOBS_PER_PROJECT. A paused job
# counts too: resuming it queues it again without asking.
WAITING = (JobStatus.VALIDATING_FILES, JobStatus.QUEUED, JobStatus.PAUSED)


def _check_queue_room(session: Session, project_id: str, max_queued: int) -> None:
    """A 429 when the project already has `max_queued` jobs waiting (0: no limit). The
    project's row stays locked until the job is committed (on PostgreSQL; SQLite has one
    writer), so concurrent creates cannot all pass the count."""
    if not max_queued:
        return
    session.execute(select(Project.id).where(Project.id == project_id).with_for_update())
    waiting = session.scalar(select(func.count()).select_from(FineTuningJob).where(
        FineTuningJob.project_id == project_id, FineTuningJob.status.in_(WAITING))) or 0
    if waiting >= max_queued:
        # Retrying at once cannot help: the queue drains as jobs start or are cancelled.
        raise APIError(429, f"This project has {waiting} fine-tuning jobs waiting to run, "
                       f"the most it may have (TUNESERVE_MAX_QUEUED_JOBS_PER_PROJECT is "
                       f"{max_queued}); wait for some to start, or cancel some, then try "
                       "again.", code="rate_limit_exceeded",
                       headers={"x-should-retry": "false"})


def _check_rank(method: dict[str, Any], max_rank: int) -> None:
    """A rank the server cannot serve is refused; the default never exceeds what it serves."""
    hyperparameters = method[method["type"]]["hyperparameters"]
    rank = hyperparameters.get("lora_rank")
    if rank is None:
        hyperparameters["lora_rank"] = min(DEFAULT_LORA_RANK, max_rank)
    elif rank > max_rank:
        raise APIError(400, f"lora_rank {rank} is more than this server serves "
                       f"({max_rank}, TUNESERVE_MAX_LORA_RANK).",
                       param=f"method.{method['type']}.hyperparameters.lora_rank",
                       code="invalid_value")


# What continuing from an adapter fixes: its shape, from its adapter_config.json.
ADAPTER_SHAPE = {"lora_rank": "r", "lora_alpha": "lora_alpha", "target_modules": "target_modules"}


def _continue_from(session: Session, store: BlobStore, project: Project, name: str,
                   method: dict[str, Any]) -> str:
    """For `model: "ft:…"`: the fine-tuned model (the project's own, or one shared with it)
    whose adapter training starts from. Its LoRA shape becomes the job's (a different one
    is a 400); returns its base."""
    parent = usable_model(session, project.id, name)
    if parent is None:
        raise APIError(400, f"Model '{name}' is not one of this project's fine-tuned models.",
                       param="model", code="model_not_available")
    try:
        config = json.loads(store.get(parent.adapter_prefix + "adapter_config.json"))
    except BlobNotFound:
        raise APIError(400, f"Model '{name}' is being deleted.", param="model",
                       code="model_not_available") from None
    hyperparameters = method[method["type"]]["hyperparameters"]
    for ours, peft_key in ADAPTER_SHAPE.items():
        value = config[peft_key]
        if ours == "target_modules" and isinstance(value, list):
            value = sorted(value)
        given = hyperparameters.get(ours)
        if given is not None and (sorted(given) if ours == "target_modules" else given) != value:
            raise APIError(400, f"{ours} must be {value}, as in '{name}', whose adapter this "
                           "job continues to train.",
                           param=f"method.{method['type']}.hyperparameters.{ours}",
                           code="invalid_value")
        hyperparameters[ours] = value
    return parent.base_model


def create_job(session: Session, store: BlobStore, project: Project,
               body: CreateFineTuningJobRequest, models: dict[str, BaseModelSpec],
               max_lora_rank: int, served: list[str] | None = None,
               evaluated_on_engine: Collection[str] = (),
               judged_on: Collection[str] | None = None, max_queued: int = 0) -> FineTuningJob:
    """`served`: the bases models can be served on; a job on another one is a 400 (None:
    no check). `judged_on`: the bases this deployment serves, whose models a score_model
    grader may ask (None: not known here). A job with a validation file on a base in
    `evaluated_on_engine` is evaluated by the serving engine after it succeeded, not by its
    worker. `max_queued`: jobs the project may have waiting to run (0: no limit)."""
    method = _method(body)
    base = body.model
    if body.model.startswith("ft:"):
        base = _continue_from(session, store, project, body.model, method)
    _check_rank(method, max_lora_rank)
    if base not in models:
        raise APIError(400, f"Model '{body.model}' is not available for fine-tuning; choose "
                       f"one of: {', '.join(sorted(models))}, or one of this project's "
                       "fine-tuned models.", param="model", code="model_not_available")
    if served is not None and base not in served:
        raise APIError(400, f"Model '{base}' is not served by this server, so a model trained "
                       f"on it could not be used; bases served: {', '.join(sorted(served))}.",
                       param="model", code="model_not_served")
    # A node that serves nothing cannot tell what is served: any base may judge then.
    _check_judges(session, project.id, method, judged_on or models)
    _training_file(session, project.id, body.training_file, "training_file")
    if body.validation_file:
        _training_file(session, project.id, body.validation_file, "validation_file")
    _check_queue_room(session, project.id, max_queued)
    job = FineTuningJob(
        id=new_id("ftjob-"), project_id=project.id, model=body.model, base_model=base,
        training_file=body.training_file, validation_file=body.validation_file,
        suffix=body.suffix,
        seed=body.seed if body.seed is not None else secrets.randbelow(2**31),
        method=method, user_metadata=body.metadata,
        integrations=[i.model_dump(exclude_none=True) for i in body.integrations or []] or None,
        status=JobStatus.VALIDATING_FILES, created_at=int(time.time()),
        model_name=jobs.fine_tuned_model_name(base, project.name, body.suffix),
        result_files=[],
        # DPO pairs are scored by log-probabilities, which the worker computes: vLLM's
        # prompt_logprobs on an adapter kill its engine (on the CPU build, vLLM 0.2x).
        evaluation=(evaluation_state.pending()
                    if body.validation_file and base in evaluated_on_engine
                    and method["type"] != "dpo" else None),
    )
    session.add(job)
    session.flush()
    jobs.add_event(session, job.id, f"Validating training file: {body.training_file}"
                   + (f" and validation file: {body.validation_file}"
                      if body.validation_file else ""))
    return job


def _conflict(session: Session, job: FineTuningJob, action: str) -> APIError:
    # The status the job has in the DB now, read as a column (not through the loaded object:
    # the refused UPDATE may have set its status in memory, the ORM evaluating the statement's
    # criteria on it), since the job may have moved on after it was read (a validation that
    # failed meanwhile).
    status = session.scalar(select(FineTuningJob.status).where(FineTuningJob.id == job.id))
    return APIError(409, f"Job {job.id} is {status}; it cannot be {action}.",
                    param="fine_tuning_job_id", code=f"job_not_{action.replace(' ', '_')}")


def cancel_job(session: Session, store: BlobStore, job: FineTuningJob) -> None:
    if not jobs.transition(session, job.id, jobs.ACTIVE, status=JobStatus.CANCELLED,
                           finished_at=int(time.time()), estimated_finish=None):
        raise _conflict(session, job, "cancelled")
    jobs.add_event(session, job.id, "Fine-tuning job cancelled")
    if job.worker is None:
        # No worker holds it: its outputs (a paused job's state) go now. A worker's go once
        # the scheduler has stopped it.
        jobs.discard_outputs(session, store, job)


def pause_job(session: Session, job: FineTuningJob) -> None:
    """A running job answers `pausing` at once; its worker saves a checkpoint, then the job
    is `paused`. A job no worker holds yet is paused at once."""
    if jobs.transition(session, job.id, (JobStatus.RUNNING,), status=JobStatus.PAUSING):
        jobs.add_event(session, job.id, "Pause requested; saving a checkpoint")
        return
    if jobs.transition(session, job.id, (JobStatus.VALIDATING_FILES, JobStatus.QUEUED),
                       status=JobStatus.PAUSED, heartbeat_at=None):
        jobs.add_event(session, job.id, "Fine-tuning job paused")
        return
    raise _conflict(session, job, "paused")


def resume_job(session: Session, job: FineTuningJob) -> None:
    # A job paused before its files were validated is validated again first.
    validated = job.n_examples is not None
    target = JobStatus.QUEUED if validated else JobStatus.VALIDATING_FILES
    if not jobs.transition(session, job.id, (JobStatus.PAUSED,), status=target,
                           heartbeat_at=None):
        raise _conflict(session, job, "resumed")
    jobs.add_event(session, job.id, "Fine-tuning job resumed; moving job to "
                   + ("queued state" if validated else "validating files"))


def project_jobs(project_id: str, metadata: list[tuple[str, str]]) -> Select[FineTuningJob]:
    """The project's jobs whose metadata holds every (key, value) of `metadata`."""
    if len(metadata) > MAX_METADATA_PAIRS:
        # No job has more keys; each filter is a JSON path in the query (SQLite refuses an
        # expression some 1,000 deep).
        raise APIError(400, f"At most {MAX_METADATA_PAIRS} metadata filters: a job has at "
                       f"most {MAX_METADATA_PAIRS} metadata keys.", param="metadata",
                       code="invalid_value")
    query = select(FineTuningJob).where(FineTuningJob.project_id == project_id)
    for key, value in metadata:
        if '"' in key or "\\" in key:
            # A JSON path cannot quote them on every database.
            raise APIError(400, f"Cannot filter on the metadata key {key!r}: keys "
                           "with '\"' or '\\' are not supported in filters.",
                           param=f"metadata[{key}]", code="invalid_value")
        query = query.where(FineTuningJob.user_metadata[key].as_string() == value)
    return query


def job_events(job_id: str) -> Select[JobEvent]:
    return select(JobEvent).where(JobEvent.job_id == job_id)
