"""`python -m training.worker JOB_ID`: trains one job. Needs only storage and the DB."""

import logging
import shutil
import sys
import tempfile
from pathlib import Path

from storage.blob import open_blob_store
from storage.db import Database
from training import jobs
from training.heartbeat import Heartbeat
from training.settings import TrainingSettings
from training.trainer import prepare_environment

log = logging.getLogger("tuneserve.worker")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    job_id = argv[0]
    settings = TrainingSettings()
    db = Database(settings.resolved_database_url)
    store = open_blob_store(settings)
    heartbeat = Heartbeat(db, job_id).start()
    workdir = Path(tempfile.mkdtemp(prefix=f"tuneserve-{job_id}-"))
    try:
        # Unsloth patches transformers and TRL, so it is imported before either of them.
        prepare_environment()
        import unsloth  # noqa: F401

        from training.run import run

        run(job_id, settings, db, store, heartbeat, workdir)
        return 0
    except Exception as exc:
        log.exception("training failed")
        with db.session() as s:
            jobs.fail(s, job_id, "training_failed", f"{type(exc).__name__}: {exc}",
                      expect=("running",))
        return 1
    finally:
        heartbeat.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
