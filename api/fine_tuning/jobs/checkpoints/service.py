"""A job's checkpoints: the one query behind their list."""

from sqlalchemy import Select, select

from storage.models import JobCheckpoint


def job_checkpoints(job_id: str) -> Select[JobCheckpoint]:
    return select(JobCheckpoint).where(JobCheckpoint.job_id == job_id)
