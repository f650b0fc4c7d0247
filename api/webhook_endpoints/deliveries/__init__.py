"""`/v1/webhook_endpoints/{webhook_endpoint_id}/deliveries`: the events sent to an endpoint
and each attempt to send them."""
