"""`/v1/fine_tuning/checkpoints`: only its `permissions/` are served."""
