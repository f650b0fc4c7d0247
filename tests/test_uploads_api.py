"""`/v1/uploads` through the official openai client, on both storage configurations."""

import hashlib
import os

import openai
import pytest

from tests.conftest import SMALL_PART_LIMIT
from tests.support.openai_spec import assert_matches
from tests.support.server import TuneserveServer


def test_upload_file_chunked_round_trips(client: openai.OpenAI, server: TuneserveServer) -> None:
    data = os.urandom(5_000_000)
    upload = client.uploads.upload_file_chunked(
        file=data, filename="big.bin", bytes=len(data), mime_type="application/octet-stream",
        purpose="assistants", part_size=1_000_000, md5=hashlib.md5(data).hexdigest(),
    )
    assert upload.status == "completed"
    assert upload.file is not None and upload.file.bytes == len(data)
    assert client.files.content(upload.file.id).read() == data
    assert client.files.retrieve(upload.file.id).filename == "big.bin"


def test_parts_are_assembled_in_part_ids_order(server: TuneserveServer) -> None:
    chunks = [b"first-", b"second-", b"third"]
    with server.http() as http:
        upload = http.post("/uploads", json={"bytes": sum(map(len, chunks)), "filename": "o.txt",
                                             "mime_type": "text/plain", "purpose": "batch"})
        assert_matches("Upload", upload.json())
        upload_id = upload.json()["id"]
        parts = [http.post(f"/uploads/{upload_id}/parts", files={"data": ("blob", c)}).json()
                 for c in chunks]
        for part in parts:
            assert_matches("UploadPart", part)
            assert part["upload_id"] == upload_id and part["id"].startswith("part_")
        done = http.post(f"/uploads/{upload_id}/complete",
                         json={"part_ids": [parts[2]["id"], parts[0]["id"], parts[1]["id"]]})
        assert_matches("Upload", done.json())
        file_id = done.json()["file"]["id"]
        assert http.get(f"/files/{file_id}/content").content == b"thirdfirst-second-"


def test_large_parts_assemble_server_side(client: openai.OpenAI) -> None:
    # Parts of 5 MiB and up are copied inside the store (S3 UploadPartCopy), not streamed back.
    parts = [os.urandom(SMALL_PART_LIMIT) for _ in range(3)]
    upload = client.uploads.create(bytes=sum(map(len, parts)), filename="l.bin",
                                   mime_type="application/octet-stream", purpose="user_data")
    ids = [client.uploads.parts.create(upload_id=upload.id, data=p).id for p in parts]
    done = client.uploads.complete(upload_id=upload.id, part_ids=ids)
    assert client.files.content(done.file.id).read() == b"".join(parts)


def test_complete_checks_md5_sizes_and_parts(client: openai.OpenAI, other_key: str,
                                             server: TuneserveServer) -> None:
    upload = client.uploads.create(bytes=10, filename="c.txt", mime_type="text/plain",
                                   purpose="user_data")
    a = client.uploads.parts.create(upload_id=upload.id, data=b"01234")
    with pytest.raises(openai.BadRequestError) as info:
        client.uploads.complete(upload_id=upload.id, part_ids=[a.id])
    assert info.value.body["param"] == "part_ids"  # 5 bytes of 10
    b = client.uploads.parts.create(upload_id=upload.id, data=b"56789")
    with pytest.raises(openai.BadRequestError) as info:
        client.uploads.complete(upload_id=upload.id, part_ids=[a.id, a.id])
    assert info.value.body["param"] == "part_ids"
    with pytest.raises(openai.BadRequestError) as info:
        client.uploads.complete(upload_id=upload.id, part_ids=[a.id, "part_unknown"])
    assert info.value.body["param"] == "part_ids"
    with pytest.raises(openai.BadRequestError) as info:
        client.uploads.complete(upload_id=upload.id, part_ids=[a.id, b.id], md5="0" * 32)
    assert info.value.body["param"] == "md5"
    # A failed completion leaves the upload pending, so a corrected call still works.
    with pytest.raises(openai.NotFoundError):
        server.client(other_key).uploads.complete(upload_id=upload.id, part_ids=[a.id, b.id])
    done = client.uploads.complete(upload_id=upload.id, part_ids=[a.id, b.id],
                                   md5=hashlib.md5(b"0123456789").hexdigest())
    assert client.files.content(done.file.id).read() == b"0123456789"
    with pytest.raises(openai.ConflictError) as info:
        client.uploads.complete(upload_id=upload.id, part_ids=[a.id, b.id])
    assert info.value.response.headers["x-should-retry"] == "false"
    with pytest.raises(openai.ConflictError):
        client.uploads.parts.create(upload_id=upload.id, data=b"more")


def test_a_part_sent_again_still_lets_the_upload_complete(client: openai.OpenAI) -> None:
    # The client retries a part whose answer it lost: two copies recorded, one listed.
    upload = client.uploads.create(bytes=8, filename="r.txt", mime_type="text/plain",
                                   purpose="user_data")
    first = client.uploads.parts.create(upload_id=upload.id, data=b"0123")
    client.uploads.parts.create(upload_id=upload.id, data=b"0123")  # the lost answer's copy
    second = client.uploads.parts.create(upload_id=upload.id, data=b"4567")
    done = client.uploads.complete(upload_id=upload.id, part_ids=[first.id, second.id])
    assert client.files.content(done.file.id).read() == b"01234567"


def test_cancel(client: openai.OpenAI) -> None:
    upload = client.uploads.create(bytes=4, filename="x.txt", mime_type="text/plain",
                                   purpose="user_data")
    part = client.uploads.parts.create(upload_id=upload.id, data=b"abcd")
    cancelled = client.uploads.cancel(upload_id=upload.id)
    assert cancelled.status == "cancelled"
    with pytest.raises(openai.ConflictError):
        client.uploads.complete(upload_id=upload.id, part_ids=[part.id])
    with pytest.raises(openai.ConflictError):
        client.uploads.cancel(upload_id=upload.id)


def test_bad_uploads(client: openai.OpenAI, server: TuneserveServer) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.uploads.create(bytes=0, filename="x", mime_type="text/plain", purpose="batch")
    assert info.value.body["param"] == "bytes"
    with pytest.raises(openai.BadRequestError) as info:
        client.uploads.create(bytes=10, filename="x", mime_type="text/plain",
                              purpose="nonsense")  # type: ignore[arg-type]
    assert info.value.body["param"] == "purpose"
    with server.http() as http:
        missing = http.post("/uploads", json={"bytes": 3, "filename": "x", "purpose": "batch"})
        assert missing.status_code == 400
        assert missing.json()["error"]["param"] == "mime_type"
        assert missing.json()["error"]["code"] == "missing_required_parameter"
    with pytest.raises(openai.NotFoundError):
        client.uploads.parts.create(upload_id="upload_nope", data=b"x")
    upload = client.uploads.create(bytes=SMALL_PART_LIMIT * 2, filename="x", purpose="batch",
                                   mime_type="text/plain")
    with pytest.raises(openai.BadRequestError) as info:
        client.uploads.parts.create(upload_id=upload.id, data=b"\0" * (SMALL_PART_LIMIT + 1))
    assert info.value.body["param"] == "data"
    with pytest.raises(openai.BadRequestError) as info:
        client.uploads.parts.create(upload_id=upload.id, data=b"")
    assert info.value.body["param"] == "data"
    small = client.uploads.create(bytes=3, filename="x", purpose="batch", mime_type="text/plain")
    with pytest.raises(openai.BadRequestError) as info:  # more bytes than the upload declared
        client.uploads.parts.create(upload_id=small.id, data=b"four")
    assert info.value.body["param"] == "data"


def test_fine_tune_upload_is_checked_as_jsonl(client: openai.OpenAI) -> None:
    data = b'{"a": 1}\n{oops\n'
    with pytest.raises(openai.BadRequestError) as info:
        client.uploads.upload_file_chunked(file=data, filename="t.jsonl", bytes=len(data),
                                           mime_type="text/jsonl", purpose="fine-tune")
    assert "Line 2" in info.value.body["message"]
