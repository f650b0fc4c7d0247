"""`/v1/fine_tuning/alpha`: only its `graders/` are served."""
