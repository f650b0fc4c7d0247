"""`tuneserve files|jobs|models list|chat`: the user commands, beside the admin ones.

They talk HTTP to a running tuneserve at `OPENAI_BASE_URL` with `OPENAI_API_KEY`, the two
variables the openai client reads, so one environment serves scripts and this CLI alike.
What a script wants (an id) goes to stdout; progress and notes go to stderr."""

import argparse
import json
import math
import mimetypes
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

Json = dict[str, Any]

# `tuneserve serve` on its default host and port (api/settings.py; a test holds them equal):
# a constant, so that the user commands need none of the server's imports.
DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
# Uploads and generations can take minutes; a server that does not even accept the
# connection is down.
TIMEOUT = httpx.Timeout(600, connect=10)
# The job event stream pings every ~15 s: a read silent for much longer is a dead connection.
STREAM_TIMEOUT = httpx.Timeout(60, connect=10)
# `jobs follow` keeps trying to get a lost event stream back this long, this often.
RECONNECT_SECONDS = 120.0
RECONNECT_DELAY = 2.0
UPLOAD_CHUNK = 1 << 20
JOB_EXIT_CODES = {"succeeded": 0, "failed": 1, "cancelled": 2}


class CliError(Exception):
    """Said on stderr as `error: <message>`; the command exits 1."""


class ApiError(CliError):
    """An error answer of the API: its OpenAI-shaped message, and its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Api:
    http: httpx.Client
    base_url: str

    def call(self, method: str, path: str, **kwargs: Any) -> Json:
        response = self.http.request(method, path, **kwargs)
        raise_for_error(response)
        body: Json = response.json()
        return body


def raise_for_error(response: httpx.Response) -> None:
    if response.is_success:
        return
    response.read()  # a streamed answer has not read its body yet
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = f"HTTP {response.status_code}: {response.text[:500]}"
    raise ApiError(response.status_code, message)


def console(stderr: bool = False) -> Console:
    # Server text (event messages, file names) is printed as it is, never read as markup.
    out = Console(stderr=stderr, markup=False, highlight=False)
    if not out.is_terminal:
        # Piped output is for grep and scripts: no id is cut to fit a pretend 80 columns.
        out.width = 10_000
    return out


# Connection and error handling, shared by every command.

Command = Callable[[Api, argparse.Namespace], int]


def _base_url(args: argparse.Namespace) -> str:
    return args.base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL


def _connect(args: argparse.Namespace) -> Api:
    key = args.api_key or os.environ.get("OPENAI_API_KEY")
    if not key:
        raise CliError("no API key: set OPENAI_API_KEY or pass --api-key (a server's first "
                       "start writes one to $TUNESERVE_DATA_DIR/api_key; `tuneserve keys "
                       "create --project NAME` makes more)")
    base_url = _base_url(args)
    http = httpx.Client(base_url=base_url, timeout=TIMEOUT,
                        headers={"authorization": f"Bearer {key}"})
    return Api(http, base_url)


def _transport_message(base_url: str, exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.UnsupportedProtocol):
        return (f"cannot reach tuneserve at {base_url} ({exc}): is it running? "
                "OPENAI_BASE_URL or --base-url says where it is")
    return f"lost the connection to tuneserve at {base_url}: {str(exc) or type(exc).__name__}"


def _fail(message: str) -> NoReturn:
    console(stderr=True).print(f"error: {message}")
    sys.exit(1)


def _run(command: Command) -> Callable[[argparse.Namespace], None]:
    """The argparse handler of a command: connects, runs it, turns failures into exit 1."""

    def run(args: argparse.Namespace) -> None:
        try:
            api = _connect(args)
            with api.http:
                code = command(api, args)
        except CliError as exc:
            _fail(str(exc))
        except httpx.TransportError as exc:
            _fail(_transport_message(_base_url(args), exc))
        except KeyboardInterrupt:
            sys.exit(130)
        if code:
            sys.exit(code)

    return run


# Lists.

Column = tuple[str, Callable[[Json], str]]


def _when(ts: int | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _field(name: str) -> Callable[[Json], str]:
    return lambda row: "" if row.get(name) is None else str(row[name])


def _time(name: str) -> Callable[[Json], str]:
    return lambda row: _when(row.get(name))


def _print_list(args: argparse.Namespace, rows: list[Json], columns: list[Column]) -> int:
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    # Borderless, as `docker ps` prints: one greppable line a row, on a terminal or piped.
    table = Table(*(header for header, _ in columns), box=None, pad_edge=False,
                  header_style="bold")
    for row in rows:
        table.add_row(*(value(row) for _, value in columns))
    console().print(table)
    return 0


def _files_list(api: Api, args: argparse.Namespace) -> int:
    return _print_list(args, api.call("GET", "files")["data"], [
        ("id", _field("id")), ("filename", _field("filename")), ("bytes", _field("bytes")),
        ("status", _field("status")), ("created", _time("created_at"))])


def _jobs_list(api: Api, args: argparse.Namespace) -> int:
    jobs = api.call("GET", "fine_tuning/jobs", params=_given(args, "limit"))["data"]
    return _print_list(args, jobs, [
        ("id", _field("id")), ("model", _field("model")), ("status", _field("status")),
        ("fine_tuned_model", _field("fine_tuned_model")), ("created", _time("created_at"))])


def _models_list(api: Api, args: argparse.Namespace) -> int:
    return _print_list(args, api.call("GET", "models")["data"], [
        ("id", _field("id")), ("owned_by", _field("owned_by")), ("created", _time("created"))])


# files upload: a multipart body built by hand, so that the bar follows the bytes sent and
# the file is read from disk as it goes (the Content-Length is known up front).

# What browsers escape in a form's file name (HTML's multipart/form-data encoding).
_FILENAME_ESCAPES = str.maketrans({'"': "%22", "\r": "%0D", "\n": "%0A"})


def multipart_frame(boundary: str, filename: str, purpose: str) -> tuple[bytes, bytes]:
    """The form's bytes before the file's (the `purpose` field, the file part's headers)
    and after them."""
    kind = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    head = (f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="purpose"\r\n\r\n'
            f"{purpose}\r\n"
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="file"; '
            f'filename="{filename.translate(_FILENAME_ESCAPES)}"\r\n'
            f"Content-Type: {kind}\r\n\r\n")
    return head.encode(), f"\r\n--{boundary}--\r\n".encode()


def _form_body(head: bytes, source: BinaryIO, size: int, tail: bytes,
               sent: Callable[[int], None]) -> Iterator[bytes]:
    yield head
    left = size
    while left:
        chunk = source.read(min(UPLOAD_CHUNK, left))
        if not chunk:
            # The declared length can no longer be met: stop rather than leave the server
            # waiting for it.
            raise CliError(f"{source.name} got shorter while it was being sent")
        left -= len(chunk)
        sent(len(chunk))
        yield chunk
    yield tail


def _files_upload(api: Api, args: argparse.Namespace) -> int:
    path: Path = args.path
    try:
        source = path.open("rb")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    boundary = secrets.token_hex(16)
    head, tail = multipart_frame(boundary, path.name, args.purpose)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                   TransferSpeedColumn(), TimeRemainingColumn(), console=console(stderr=True))
    with source, bar:
        size = os.fstat(source.fileno()).st_size
        task = bar.add_task(path.name, total=size)
        file = api.call(
            "POST", "files",
            content=_form_body(head, source, size, tail, lambda n: bar.advance(task, n)),
            headers={"content-type": f"multipart/form-data; boundary={boundary}",
                     "content-length": str(len(head) + size + len(tail))})
    print(file["id"])
    console(stderr=True).print(f"{file['id']}: {file['filename']}, {file['bytes']} bytes, "
                               f"purpose {file['purpose']}, {file['status']}")
    return 0


# jobs create.

def _given(args: argparse.Namespace, *names: str) -> Json:
    """The options that were set, under their API names (unset ones are the server's auto)."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _jobs_create(api: Api, args: argparse.Namespace) -> int:
    for name in ("beta", "rpo_alpha"):
        if getattr(args, name) is not None and args.method != "dpo":
            option = "--" + name.replace("_", "-")
            raise CliError(f"{option} is a DPO hyperparameter: add --method dpo")
    hyperparameters = _given(args, "n_epochs", "batch_size", "learning_rate_multiplier", "beta",
                             "rpo_alpha")
    body = {"model": args.model, "training_file": args.training_file,
            **_given(args, "validation_file", "suffix", "seed"),
            "method": {"type": args.method, args.method: {"hyperparameters": hyperparameters}}}
    job = api.call("POST", "fine_tuning/jobs", json=body)
    print(job["id"])
    console(stderr=True).print(f"{job['id']}: {job['model']}, {job['status']}; "
                               f"`tuneserve jobs follow {job['id']}` shows its progress")
    return 0


# Server-sent events, for the job event stream and streamed chat completions.

@dataclass
class Sse:
    event: str
    data: str
    id: str | None


def read_sse(lines: Iterator[str]) -> Iterator[Sse]:
    """The events of a `text/event-stream` body, from its lines."""
    event, last_id = "message", None
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield Sse(event, "\n".join(data), last_id)
            event, data = "message", []
        elif not line.startswith(":"):  # a comment: the server's keep-alive ping
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            elif name == "event":
                event = value
            elif name == "id":
                last_id = value


# jobs follow.

def follow_events(api: Api, job_id: str, on_event: Callable[[Json], None]) -> Json:
    """Hands each of the job's events to `on_event`, oldest first, until the job is over;
    returns the final job. A lost stream (or a 5xx, as in a storage outage) is resumed after
    the last event seen, for up to RECONNECT_SECONDS without getting a stream back."""
    after: str | None = None
    lost_since: float | None = None
    while True:
        params = {"stream": "true", **({"after": after} if after else {})}
        try:
            with api.http.stream("GET", f"fine_tuning/jobs/{job_id}/events", params=params,
                                 timeout=STREAM_TIMEOUT) as response:
                _check_event_stream(api, response)
                lost_since = None
                for message in read_sse(response.iter_lines()):
                    if message.event == "done":
                        job: Json = json.loads(message.data)
                        return job
                    event = json.loads(message.data)
                    after = message.id or event["id"]
                    on_event(event)
            problem = "the stream ended before the job did"
        except httpx.TransportError as exc:
            problem = str(exc) or type(exc).__name__
        except ApiError as exc:
            if exc.status < 500:
                raise
            problem = str(exc)
        lost_since = lost_since or time.monotonic()
        if time.monotonic() - lost_since > RECONNECT_SECONDS:
            raise CliError(f"lost the event stream of {job_id}: {problem}")
        time.sleep(RECONNECT_DELAY)


def _check_event_stream(api: Api, response: httpx.Response) -> None:
    raise_for_error(response)
    if not response.headers.get("content-type", "").startswith("text/event-stream"):
        raise CliError(f"tuneserve at {api.base_url} does not stream job events: it is older "
                       "than this CLI")


def _known(value: Any) -> int | None:
    """A resolved hyperparameter; None while it is still `auto` (before validation)."""
    return value if isinstance(value, int) else None


class JobProgress:
    """What `jobs follow` shows: a bar of step/total with the epoch, the latest loss and the
    ETA; other events as lines above it. Piped (no terminal), each metrics event is a line
    too, since the bar is only drawn once, at the end."""

    def __init__(self, api: Api, job: Json, out: Console) -> None:
        self.api = api
        self.job_id: str = job["id"]
        self.n_epochs = _known(job["hyperparameters"].get("n_epochs"))
        self.estimated_finish: int | None = job.get("estimated_finish")
        self.out = out
        # The first metrics event seen: the step rate is measured from it.
        self.first: tuple[int, int] | None = None
        self.bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("epoch {task.fields[epoch]}"), TextColumn("loss {task.fields[loss]}"),
            TextColumn("ETA {task.fields[eta]}"), console=out)
        self.task = self.bar.add_task(self.job_id, total=None, epoch="-", loss="-", eta="-")

    def __enter__(self) -> "JobProgress":
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def on_event(self, event: Json) -> None:
        data = event.get("data") or {}
        is_metrics = event["type"] == "metrics" and "step" in data and "total_steps" in data
        if is_metrics:
            self._update(data, event["created_at"])
        if not is_metrics or not self.out.is_terminal:
            self.bar.console.print(f"{_when(event['created_at'])}  {event['message']}")

    def _update(self, data: Json, at: int) -> None:
        step, total = data["step"], data["total_steps"]
        self.bar.update(self.task, completed=step, total=total, epoch=self._epoch(step, total),
                        loss=_loss(data), eta=self._eta(step, total, at))

    def _epoch(self, step: int, total: int) -> str:
        if self.n_epochs is None:
            # `auto` when the job was read: validation has resolved it by the first step.
            job = self.api.call("GET", f"fine_tuning/jobs/{self.job_id}")
            self.n_epochs = _known(job["hyperparameters"].get("n_epochs"))
        if self.n_epochs is None or total <= 0:
            return "-"
        epoch = min(self.n_epochs, max(1, math.ceil(step * self.n_epochs / total)))
        return f"{epoch}/{self.n_epochs}"

    def _eta(self, step: int, total: int, at: int) -> str:
        # A resumed attempt may start over from an earlier step: measure from there.
        if self.first is None or step <= self.first[0]:
            self.first = (step, at)
        first_step, first_at = self.first
        if step > first_step:
            left: float | None = (at - first_at) / (step - first_step) * (total - step)
        elif self.estimated_finish:
            left = self.estimated_finish - time.time()
        else:
            left = None
        return "-" if left is None else str(timedelta(seconds=round(max(0.0, left))))


def _loss(data: Json) -> str:
    text = f"{data['train_loss']:.4f}" if "train_loss" in data else "-"
    if "valid_loss" in data:
        text += f" (valid {data['valid_loss']:.4f})"
    return text


def _report(job: Json, out: Console) -> int:
    """Says how the job ended; its exit code."""
    status = job["status"]
    if status == "succeeded":
        out.print(f"{job['id']} succeeded: fine_tuned_model {job['fine_tuned_model']}")
    else:
        out.print(f"{job['id']} {status}")
    if status == "failed":
        error = job.get("error") or {}
        console(stderr=True).print(f"error: {error.get('message') or 'no reason given'}")
    return JOB_EXIT_CODES.get(status, 1)


def _jobs_follow(api: Api, args: argparse.Namespace) -> int:
    job = api.call("GET", f"fine_tuning/jobs/{args.job_id}")
    out = console()
    try:
        with JobProgress(api, job, out) as view:
            final = follow_events(api, job["id"], view.on_event)
    except KeyboardInterrupt:
        console(stderr=True).print(f"stopped following {job['id']}; the job goes on")
        return 130
    return _report(final, out)


# chat.

def _ask(api: Api, args: argparse.Namespace, history: list[Json], text: str) -> None:
    """Sends the conversation with `text` added, prints the answer as it streams in, and
    adds both to `history`."""
    history.append({"role": "user", "content": text})
    body = {"model": args.model, "messages": history, "stream": True,
            **_given(args, "max_tokens")}
    answer = []
    with api.http.stream("POST", "chat/completions", json=body) as response:
        raise_for_error(response)
        for message in read_sse(response.iter_lines()):
            if message.data == "[DONE]":
                break
            chunk = json.loads(message.data)
            if "error" in chunk:  # failed after the stream began
                raise CliError(chunk["error"].get("message") or "the stream failed")
            choices = chunk.get("choices") or [{}]  # the usage chunk has none
            piece = (choices[0].get("delta") or {}).get("content")
            if piece:
                answer.append(piece)
                sys.stdout.write(piece)
                sys.stdout.flush()
    sys.stdout.write("\n")
    history.append({"role": "assistant", "content": "".join(answer)})


def _chat(api: Api, args: argparse.Namespace) -> int:
    history = [{"role": "system", "content": args.system}] if args.system else []
    if args.message is not None:
        _ask(api, args, history, args.message)
        return 0
    prompt = "> " if sys.stdin.isatty() else ""
    while True:
        try:
            line = input(prompt)
        except EOFError:
            return 0
        if line.strip():
            _ask(api, args, history, line)


# The parsers.

def _connection() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--base-url", help="the API, e.g. http://host:8000/v1 (default: "
                         f"$OPENAI_BASE_URL, else {DEFAULT_BASE_URL})")
    options.add_argument("--api-key", help="default: $OPENAI_API_KEY")
    return options


def _lister() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False, parents=[_connection()])
    options.add_argument("--json", action="store_true", help="print the API's objects as JSON")
    return options


def add_models_list(models: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    listing = models.add_parser("list", parents=[_lister()],
                                help="the models the API serves: bases and fine-tuned")
    listing.set_defaults(run=_run(_models_list))


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Adds the user commands (`files`, `jobs`, `chat`) to `tuneserve`'s subcommands."""
    files = commands.add_parser("files", help="upload and list files").add_subparsers(
        dest="files_command", required=True)
    upload = files.add_parser("upload", parents=[_connection()], help="upload a file")
    upload.add_argument("path", type=Path)
    upload.add_argument("--purpose", default="fine-tune")
    upload.set_defaults(run=_run(_files_upload))
    files.add_parser("list", parents=[_lister()], help="list files").set_defaults(
        run=_run(_files_list))

    jobs = commands.add_parser("jobs", help="create, list and follow fine-tuning jobs")
    job_commands = jobs.add_subparsers(dest="jobs_command", required=True)
    create = job_commands.add_parser("create", parents=[_connection()],
                                     help="start a fine-tuning job; prints its id")
    create.add_argument("--model", required=True)
    create.add_argument("--training-file", required=True, help="a file id")
    create.add_argument("--validation-file", help="a file id")
    create.add_argument("--method", choices=["supervised", "dpo"], default="supervised")
    create.add_argument("--n-epochs", type=int)
    create.add_argument("--batch-size", type=int)
    create.add_argument("--learning-rate-multiplier", type=float)
    create.add_argument("--beta", type=float, help="DPO only")
    create.add_argument("--rpo-alpha", type=float,
                        help="DPO only: the weight of an SFT term on the preferred answer")
    create.add_argument("--suffix")
    create.add_argument("--seed", type=int)
    create.set_defaults(run=_run(_jobs_create))
    listing = job_commands.add_parser("list", parents=[_lister()], help="list jobs")
    listing.add_argument("--limit", type=int)
    listing.set_defaults(run=_run(_jobs_list))
    follow = job_commands.add_parser(
        "follow", parents=[_connection()],
        help="show a job's progress live; exits 0 succeeded, 1 failed, 2 cancelled")
    follow.add_argument("job_id")
    follow.set_defaults(run=_run(_jobs_follow))

    chat = commands.add_parser("chat", parents=[_connection()],
                               help="chat with a model (one message with -m, else a REPL)")
    chat.add_argument("model")
    chat.add_argument("-m", "--message", help="send this one message, print the answer, exit")
    chat.add_argument("--system", help="a system message")
    chat.add_argument("--max-tokens", type=int)
    chat.set_defaults(run=_run(_chat))
