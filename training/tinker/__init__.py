"""The Tinker API's training side: the trainer process that holds one run's LoRA and
executes its requests in order, and what the API uses to start it and read its answers."""
