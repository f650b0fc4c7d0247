"""A streaming `multipart/form-data` reader: file parts go to a sink chunk by chunk as they
arrive, so an upload is never held whole in memory or spooled to a temp file."""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from fastapi import Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from api.errors import APIError

# Starlette's kind of limits: a form is a few small fields and one file. (The parser itself
# bounds each part's header count and sizes.)
MAX_FIELD_BYTES = 64 * 1024
MAX_PARTS = 16
BINARY = {"type": "string", "format": "binary"}


def multipart_body(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI request body of a route that reads its form with `read_form` (FastAPI
    cannot see it)."""
    schema = {"type": "object", "required": required, "properties": properties}
    return {"requestBody": {"required": True,
                            "content": {"multipart/form-data": {"schema": schema}}}}


@dataclass
class FilePart:
    name: str
    filename: str
    content_type: str


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None
    content_type: str = "application/octet-stream"
    value: bytearray = field(default_factory=bytearray)


class FileSink(Protocol):
    """Receives one file part. `fields` holds the plain fields that came before it."""

    async def start(self, part: FilePart, fields: dict[str, str]) -> None: ...

    async def feed(self, data: bytes) -> None: ...

    async def end(self) -> None: ...


async def read_form(
    request: Request, sinks: Callable[[str], FileSink | None]
) -> dict[str, str]:
    """Streams the request's form: each file part goes to `sinks(field name)`, and plain
    fields come back as a dict. A file part with no sink is a 400."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise APIError(400, "The request must be multipart/form-data with a boundary.",
                       code="invalid_content_type")

    fields: dict[str, str] = {}
    # The parser calls back synchronously; the async sink runs on the events it queued.
    events: list[tuple[str, object]] = []
    current = _Part()
    header_field = bytearray()
    header_value = bytearray()
    headers: dict[str, bytes] = {}

    parts = 0

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        headers[header_field.decode("latin-1").lower()] = bytes(header_value)
        header_field.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        nonlocal current, parts
        parts += 1
        if parts > MAX_PARTS:
            raise APIError(400, f"The form has more than {MAX_PARTS} parts.",
                           code="invalid_multipart")
        _, disp = parse_options_header(headers.get("content-disposition", b""))
        filename = disp.get(b"filename")
        current = _Part(
            name=disp.get(b"name", b"").decode("utf-8", "replace"),
            filename=None if filename is None else filename.decode("utf-8", "replace"),
            content_type=headers.get("content-type", b"application/octet-stream").decode(
                "latin-1"
            ),
        )
        headers.clear()
        if current.filename is not None:
            events.append(("file", FilePart(current.name, current.filename, current.content_type)))

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if current.filename is not None:
            events.append(("data", data[start:end]))
        else:
            current.value.extend(data[start:end])
            if len(current.value) > MAX_FIELD_BYTES:
                raise APIError(400, f"Form field '{current.name}' is too long.",
                               param=current.name)

    def on_part_end() -> None:
        if current.filename is not None:
            events.append(("end", None))
        else:
            fields[current.name] = current.value.decode("utf-8", "replace")

    parser = MultipartParser(
        boundary,
        {
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    sink: FileSink | None = None
    async for chunk in request.stream():
        _parse(parser.write, chunk)
        for kind, payload in events:
            if kind == "file":
                assert isinstance(payload, FilePart)
                sink = sinks(payload.name)
                if sink is None:
                    raise APIError(400, f"Unexpected file field '{payload.name}'.",
                                   param=payload.name)
                await sink.start(payload, dict(fields))
            elif kind == "data" and sink is not None:
                assert isinstance(payload, bytes)
                await sink.feed(payload)
            elif kind == "end" and sink is not None:
                await sink.end()
                sink = None
        events.clear()
    _parse(lambda _: parser.finalize(), b"")
    if sink is not None:
        raise APIError(400, "The multipart body ended in the middle of a file.",
                       code="incomplete_body")
    return fields



def _parse(step: Callable[[bytes], object], data: bytes) -> None:
    try:
        step(data)
    except MultipartParseError as exc:
        raise APIError(400, f"The multipart body is malformed: {exc}",
                       code="invalid_multipart") from None
