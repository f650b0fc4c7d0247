"""`/v1/fine_tuning`: `jobs/` (and their `checkpoints/`), `checkpoints/permissions/` and
`alpha/graders/`, as openai-python's `resources/fine_tuning/` tree has them."""
