"""Which fine-tuned models a project may use: its own, and those another project granted
it (checkpoint permissions). Using is chatting and fine-tuning from; managing (delete,
download, grant) stays the owner's. A model trained from another project's model is its
trainer's to use and manage, but its weights (practically the other project's) are not
its trainer's to take away: see `foreign_ancestor`."""

from sqlalchemy import Exists, exists, or_, select
from sqlalchemy.orm import Session

from storage.models import CheckpointPermission, FineTunedModel, FineTuningJob, TinkerCheckpoint

# A checkpoint's name is its job's final model name plus this and the step.
CHECKPOINT_MARK = ":ckpt-step-"


def granted_to(project_id: str) -> Exists:
    """A condition on FineTunedModel: another project granted it to `project_id`."""
    return exists().where(CheckpointPermission.model_id == FineTunedModel.id,
                          CheckpointPermission.project_id == project_id)


def usable_model(session: Session, project_id: str, model_id: str) -> FineTunedModel | None:
    return session.scalar(select(FineTunedModel).where(
        FineTunedModel.id == model_id,
        or_(FineTunedModel.project_id == project_id, granted_to(project_id))))


def usable_sampler_weights(session: Session, project_id: str,
                           path: str) -> TinkerCheckpoint | None:
    """A Tinker run's sampler weights (`tinker://...`), the project's own only."""
    return session.scalar(select(TinkerCheckpoint).where(
        TinkerCheckpoint.path == path, TinkerCheckpoint.project_id == project_id,
        TinkerCheckpoint.kind == "sampler"))


def _maker(session: Session, name: str) -> tuple[str, FineTuningJob | None] | None:
    """The project that made the model (or checkpoint) called `name`, and the job that
    trained it: from the model's row, or once the model is deleted, from its job's (which
    stays). None where no row tells."""
    row = session.scalar(select(FineTunedModel).where(FineTunedModel.id == name))
    if row is not None:
        return row.project_id, session.scalar(
            select(FineTuningJob).where(FineTuningJob.id == row.job_id))
    for final in dict.fromkeys((name, name.rsplit(CHECKPOINT_MARK, 1)[0])):
        job = session.scalar(select(FineTuningJob).where(FineTuningJob.model_name == final)
                             .limit(1))
        if job is not None:
            return job.project_id, job
    return None


def foreign_ancestor(session: Session, model: FineTunedModel) -> str | None:
    """The first model up `model`'s line (the model its job continued from, and so on) that
    another project made, or that no row accounts for any more (its project deleted): what
    keeps `model`'s weights from leaving the server. None where every ancestor is its
    project's own."""
    job = session.scalar(select(FineTuningJob).where(FineTuningJob.id == model.job_id))
    seen: set[str] = set()
    while job is not None and job.parent_model is not None and job.parent_model not in seen:
        parent = job.parent_model
        seen.add(parent)
        made = _maker(session, parent)
        if made is None or made[0] != model.project_id:
            return parent
        job = made[1]
    return None
