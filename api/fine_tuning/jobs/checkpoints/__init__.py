"""`/v1/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints`: a job's saved checkpoints."""
