"""`/v1/chat`: only its `completions/` are served."""
