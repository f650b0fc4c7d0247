"""A worker cut off from the DB past the heartbeat timeout comes back after the scheduler gave
its job to another attempt: minting its judge's key must not revoke the live attempt's key
(that job would fail grader_unavailable), and it must stop without touching the job."""

import pytest

from storage import api_keys
from storage.api_keys import list_keys
from storage.db import Database
from storage.ids import new_id
from storage.models import FineTuningJob, Project
from training import jobs
from training.graders import parse_grader
from training.judge import JobTakenOver, job_judge

JUDGE = {"type": "score_model", "name": "judge", "model": "m",
         "input": [{"role": "user", "content": "Score {{sample.output_text}}"}]}


def test_a_superseded_worker_leaves_the_live_attempt_s_judge_key(database: Database) -> None:
    with database.session() as s:
        project_id, job_id = new_id("proj_"), new_id("ftjob-")
        s.add(Project(id=project_id, name="p" + new_id(""), created_at=0))
        s.flush()
        # Attempt 2 holds the job now; its worker minted its judge's key.
        s.add(FineTuningJob(id=job_id, project_id=project_id, status=jobs.JobStatus.RUNNING,
                            model="m", base_model="m", training_file="file-x", seed=1,
                            method={"type": "reinforcement"}, created_at=0,
                            model_name="ft:m:p::abc", result_files=[], attempt=2))
        s.flush()
        api_keys.add_api_key(s, project_id, job_id=job_id)
    # Attempt 1's worker arrives late; nothing must answer at this URL for it to be asked.
    with pytest.raises(JobTakenOver), job_judge(database, "http://127.0.0.1:9", project_id,
                                                job_id, 1, parse_grader(JUDGE), timeout=1):
        pytest.fail("a superseded attempt must not judge")
    with database.session() as s:
        keys = [key for key, _ in list_keys(s) if key.job_id == job_id]
        job = jobs.get_job(s, job_id)
    assert [key.revoked_at for key in keys] == [None]
    assert job is not None and job.status == jobs.JobStatus.RUNNING and job.error is None
