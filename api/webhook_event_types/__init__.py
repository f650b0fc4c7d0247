"""`/v1/webhook_event_types`: the event types a webhook endpoint may subscribe to."""
