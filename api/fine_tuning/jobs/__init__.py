"""`/v1/fine_tuning/jobs`: create, list, retrieve, cancel, pause, resume, events."""
