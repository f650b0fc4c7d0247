"""A worker's last output reaches the tenant (as a job event) without the operator's paths,
hosts, buckets or keys, and still says what went wrong."""

from storage.redact import redact

TAIL = """Traceback (most recent call last):
  File "/opt/tuneserve/.venv/lib/python3.11/site-packages/torch/nn/modules/module.py", line 1
botocore.exceptions.EndpointConnectionError: Could not connect to "http://10.0.3.7:8333/bucket"
psycopg.OperationalError: connection to postgresql://tuneserve:pw@db.internal:5432/ts failed
  at 192.168.1.20:6379 with key AKIAABCDEFGHIJKLMNOP and sk-test-0123456789abcdef
torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"""


def test_the_tail_keeps_the_error_and_drops_the_operators_details() -> None:
    out = redact(TAIL)
    for secret in ("/opt/tuneserve", "site-packages", "10.0.3.7", "bucket", "db.internal",
                   "pw@", "192.168.1.20", "AKIAABCDEFGHIJKLMNOP", "sk-test-0123"):
        assert secret not in out, secret
    assert 'File "module.py", line 1' in out
    assert "CUDA out of memory. Tried to allocate 2.00 GiB" in out
    assert "EndpointConnectionError: Could not connect to" in out
