"""Webhook delivery: the addresses a webhook may reach (`addresses.py`) and one signed send
(`delivery.py`), shared by the dispatcher (`api/background/webhook_dispatcher.py`) and the
`/v1/webhook_endpoints/{id}/test` route (`api/webhook_endpoints/`)."""
