"""The API node's background loops: the work a node does besides answering requests.
api/services.py starts them (and stops them in reverse) with the node's other parts.

- `key_cache`: the key listener, which hears API key revocations (PostgreSQL LISTEN) so
  every node's cache of keys drops a revoked one at once (a thread).
- `reaper`: removes expired files and uploads, old rate windows, cursor tombstones and logs,
  and runs the orphan sweeper (`orphans`) now and then (an asyncio task).
- `webhook_dispatcher`: claims due webhook deliveries, sends them (with
  `api/webhooks/delivery.py`, which the test route shares), records each attempt and
  retries with backoff (an asyncio task).
- `evaluator`: answers the built-in evaluations of succeeded jobs on the bases this node
  serves (an asyncio task, only when serving)."""
