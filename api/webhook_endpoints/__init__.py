"""`/v1/webhook_endpoints`: where a project is told that its jobs ended."""
