"""`python -m training.worker JOB_ID ATTEMPT`: trains one attempt of one job. Needs only
storage and the DB; every write it makes is conditional on still holding ATTEMPT."""

import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from storage.availability import unavailable_part
from storage.blob import open_blob_store
from training import jobs
from training.executors.base import EXIT_OUTAGE
from training.graders import GraderError
from training.heartbeat import Heartbeat
from training.judge import JobTakenOver, JudgeUnreachable
from training.settings import TrainingSettings
from training.trainer import prepare_environment

log = logging.getLogger("tuneserve.worker")

def workdir_prefix(job_id: str, attempt: int) -> str:
    return f"tuneserve-{job_id}-a{attempt}-"


def remove_stale_workdirs(job_id: str, attempt: int, root: Path) -> list[Path]:
    """The work dirs of this job's earlier attempts on this node: a worker killed outright
    (SIGKILL, out of memory, the node rebooted) leaves its gigabytes of checkpoints there.
    Removed by the next attempt, which alone may hold the job now."""
    stale = [path for earlier in range(1, attempt)
             for path in root.glob(workdir_prefix(job_id, earlier) + "*") if path.is_dir()]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # `force`: a worker forked from the preloaded launcher inherits the handlers its imports set.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        force=True)
    job_id, attempt = argv[0], int(argv[1])
    settings = TrainingSettings()
    os.umask(0o077)  # what it writes locally (work dir, blobs on a local store) is private
    db = settings.open_database()
    try:
        store = open_blob_store(settings)
        heartbeat = Heartbeat(db, job_id, attempt).start()  # its first beat writes the DB
    except Exception as exc:
        part = unavailable_part(exc)
        if part is None:
            raise
        log.exception("the %s is unreachable at the start; leaving the job to be resumed", part)
        return EXIT_OUTAGE
    for path in remove_stale_workdirs(job_id, attempt, Path(tempfile.gettempdir())):
        log.info("removed %s, left by an earlier attempt", path)
    workdir = Path(tempfile.mkdtemp(prefix=workdir_prefix(job_id, attempt)))
    try:
        # Unsloth patches transformers and TRL, so it is imported before either of them.
        prepare_environment()
        import unsloth  # noqa: F401

        from training.run import run

        run(job_id, attempt, settings, db, store, heartbeat, workdir)
        return 0
    except JobTakenOver:
        log.info("another attempt holds the job now; this one stops without a word")
        return 0
    except GraderError as exc:
        # A judge refused the grader's request (its model was deleted meanwhile, say): the
        # tenant's own grader, named, as the graders' run route answers it.
        log.warning("the grader failed: %s (%s)", exc.message, exc.param)
        with db.session() as s:
            jobs.fail(s, job_id, exc.code, exc.message, exc.param, expect=jobs.WORKING,
                      attempt=attempt)
        return 1
    except JudgeUnreachable as exc:
        log.exception("no API node to judge the grader's samples")
        with db.session() as s:
            jobs.fail(s, job_id, "grader_unavailable", exc.tenant_message, expect=jobs.WORKING,
                      attempt=attempt)
        return 1
    except Exception as exc:
        part = unavailable_part(exc)
        if part is not None:
            # An outage, not a bad job: exit without a last word, and the scheduler starts
            # another attempt from the newest saved state once the part is back.
            log.exception("the %s became unreachable; leaving the job to be resumed", part)
            return EXIT_OUTAGE
        # The details stay in this log; the tenant sees the kind of failure, never hosts,
        # paths or credentials from an exception's text.
        log.exception("training failed")
        with db.session() as s:
            jobs.fail(s, job_id, "training_failed",
                      f"Training failed with an internal error ({type(exc).__name__}).",
                      expect=jobs.WORKING, attempt=attempt)
        return 1
    finally:
        heartbeat.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
