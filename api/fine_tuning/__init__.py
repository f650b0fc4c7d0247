"""`/v1/fine_tuning`."""
