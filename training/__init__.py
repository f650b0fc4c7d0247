"""Dataset validation, trainers and the job worker."""
