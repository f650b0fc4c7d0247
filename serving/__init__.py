"""vLLM engine management and the chat completions proxy."""
