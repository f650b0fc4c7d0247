"""Bounded input before anything else: a request without a valid key is answered before its
body is read, a body over its route's cap is refused as it arrives, and a malformed or
oversized multipart form is a 400, never a 500."""

import socket
import time

import httpx
import psutil

from tests.support.server import TuneserveServer

MiB = 1 << 20


def _send_head(server: TuneserveServer, path: str, headers: dict[str, str],
               body_start: bytes) -> tuple[int, bytes]:
    """Sends a request's headers and the start of its body, then reads the answer without
    sending the rest: the status and body the server answered with."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        sock.sendall(head.encode() + body_start)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    return status, answer.split(b"\r\n\r\n", 1)[1]


def test_a_request_without_a_valid_key_is_answered_before_its_body_is_read(
        local_server: TuneserveServer) -> None:
    server_process = psutil.Process(local_server.proc.pid)
    before = server_process.memory_info().rss
    for authorization, code in ((None, b"missing_api_key"),
                                ("Bearer sk-not-a-key", b"invalid_api_key")):
        headers = {"Content-Type": "application/json", "Content-Length": str(300 * MiB)}
        if authorization:
            headers["Authorization"] = authorization
        started = time.monotonic()
        status, body = _send_head(local_server, "/v1/chat/completions", headers,
                                  b'{"messages": [' + b" " * MiB)
        assert status == 401 and code in body
        assert time.monotonic() - started < 10  # it did not wait for 300 MB that never came
    assert server_process.memory_info().rss - before < 32 * MiB


def test_a_body_over_its_routes_cap_is_refused(local_server: TuneserveServer) -> None:
    headers = {"Content-Type": "application/json",
               "Authorization": f"Bearer {local_server.api_key}"}
    # Declared: refused before a byte is read.
    status, body = _send_head(local_server, "/v1/chat/completions",
                              headers | {"Content-Length": str(17 * MiB)}, b"{")
    assert status == 413 and b"request_too_large" in body

    def chunks(size: int):  # type: ignore[no-untyped-def]
        yield b'{"model": "x", "messages": [], "pad": "'
        for _ in range(size // MiB):
            yield b"x" * MiB
        yield b'"}'

    with local_server.http() as http:
        # Sent without a length (chunked): refused once the count passes the cap.
        too_big = http.post("/fine_tuning/jobs", content=chunks(2 * MiB),
                            headers={"Content-Type": "application/json"})
        assert too_big.status_code == 413, too_big.text
        assert too_big.json()["error"]["code"] == "request_too_large"
        # Under the cap, the route itself answers (here: it wants real fields).
        small = http.post("/fine_tuning/jobs", content=b'{"model": 1}',
                          headers={"Content-Type": "application/json"})
        assert small.status_code == 400 and small.json()["error"]["param"] == "model"
    assert httpx.get(f"http://127.0.0.1:{local_server.port}/health").status_code == 200


def test_malformed_and_oversized_forms_are_a_400(local_server: TuneserveServer) -> None:
    form = {"Content-Type": "multipart/form-data; boundary=zz"}
    many_parts = b"".join(b'--zz\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nv\r\n' % i
                          for i in range(20)) + b"--zz--\r\n"
    long_header = (b'--zz\r\nContent-Disposition: form-data; name="purpose"\r\nX-Pad: '
                   + b"p" * (32 * 1024) + b"\r\n\r\nfine-tune\r\n--zz--\r\n")
    with local_server.http() as http:
        for body, fragment in ((b"--zz\r\nthis is not a part header\r\n\r\n", "malformed"),
                               (b"--yy\r\n\r\n--yy--\r\n", "malformed"),
                               (many_parts, "more than 16 parts"),
                               (long_header, "header size exceeded")):
            answer = http.post("/files", content=body, headers=form)
            assert answer.status_code == 400, (body[:40], answer.text)
            error = answer.json()["error"]
            assert error["code"] == "invalid_multipart" and fragment in error["message"], error


def test_a_request_without_its_body_is_told_so(local_server: TuneserveServer) -> None:
    with local_server.http() as http:
        for path in ("/fine_tuning/jobs", "/chat/completions"):
            answer = http.post(path, headers={"content-type": "application/json"})
            assert answer.status_code == 400, (path, answer.text)
            assert answer.json()["error"]["code"] == "missing_body", answer.text
