"""Reading a job submission off the wire: a multipart JSONL upload streamed to disk
in chunks (never held whole in memory), or a small inline JSON body.

Either way the result is a spooled JSONL file the engine validates and stores
(exactly as `kiln submit FILE` does), the submit options, and a fingerprint of
the payload's *meaning* (options + request bytes), so a client retrying with the
same Idempotency-Key and the same content is recognised even though a new
multipart boundary changes the raw body.

python-multipart's streaming parser is driven directly (rather than Starlette's
`request.form()`) so the file part goes straight to a named spool file while it
is hashed, with no second copy.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from batchkiln.intake.keys import canonical_json
from batchkiln.service.problems import ProblemError

MAX_INLINE_BYTES = 10 * 1024 * 1024
MAX_FIELD_BYTES = 64 * 1024
TICK_BYTES = 8 * 1024 * 1024  # the caller's heartbeat runs every 8 MB of upload


#: every provider name a Job may carry (`providers.WIRE_FORMATS`; a test keeps them equal)
ProviderName = Literal[
    "anthropic", "gemini", "openai", "simulator", "simulator-anthropic", "simulator-gemini"
]


class SubmitOptions(BaseModel):
    """The options of `kiln submit`, plus the callback."""

    model_config = ConfigDict(extra="forbid")

    provider: ProviderName = Field(
        description="the vendor (or its simulator); a name not configured here is 422"
    )
    model: str | None = Field(None, description="model for every request (else from the lines)")
    endpoint: str | None = Field(None, description="OpenAI endpoint for plain lines")
    budget_usd: float | None = Field(
        None, gt=0, description="most the job may cost at batch prices, retries included"
    )
    max_attempts: int = Field(3, ge=1, le=20, description="attempts per request")
    auto_retry: bool = Field(True, description="retry retryable failures as child batches")
    delete_vendor_files: bool = Field(False, description="delete vendor files after ingest")
    callback_url: str | None = Field(
        None, description="where to POST signed webhooks (https; see the callback rules)"
    )
    callback_secret: str | None = Field(
        None,
        description="this job's own whsec_ signing secret (write-only; default"
        " KILN_CALLBACK_SECRET)",
        json_schema_extra={"writeOnly": True},
    )
    callback_events: Literal["final", "all"] = Field(
        "final", description="final: job.done only; all: every batch transition too"
    )


class InlineJob(SubmitOptions):
    requests: list[dict[str, Any]] = Field(
        min_length=1, description="request lines in any accepted input format (small jobs)"
    )


@dataclass
class Upload:
    path: Path  # the spooled JSONL file
    display: str  # the name bad lines are reported under
    options: SubmitOptions
    fingerprint: str
    spool: Path  # the directory to remove afterwards
    fields: dict[str, str] = field(default_factory=dict)

    def cleanup(self) -> None:
        shutil.rmtree(self.spool, ignore_errors=True)


def _fingerprint(options: SubmitOptions, content_sha: str) -> str:
    meaning = options.model_dump(exclude={"callback_secret"})
    meaning["callback_secret_sha"] = (
        hashlib.sha256(options.callback_secret.encode()).hexdigest()
        if options.callback_secret
        else None
    )
    digest = hashlib.sha256(b"kiln-api-submit-v1\n")
    digest.update(canonical_json(meaning))
    digest.update(b"\n" + content_sha.encode())
    return digest.hexdigest()


def _options(raw: dict[str, Any], model: type[SubmitOptions] = SubmitOptions) -> SubmitOptions:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        errors = [
            {
                "file": "request",
                "line": None,
                "reason": f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}",
            }
            for e in exc.errors()[:20]
        ]
        raise ProblemError(
            422,
            "request_validation",
            "; ".join(str(e["reason"]) for e in errors),
            errors=errors,
        ) from None


async def read_submission(
    request: Request,
    spool_root: Path | None,
    tick: Callable[[], Awaitable[None]] | None = None,
) -> Upload:
    """The submission in `request` (multipart with a `file` part, or JSON)."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    spool = Path(tempfile.mkdtemp(prefix="kiln-upload-", dir=spool_root))
    try:
        if content_type == b"multipart/form-data":
            boundary = params.get(b"boundary")
            if not boundary:
                raise ProblemError(400, "request_validation", "multipart body without a boundary")
            return await _multipart(request, boundary, spool, tick)
        if content_type in (b"application/json", b""):
            return await _inline(request, spool)
        raise ProblemError(
            415,
            "request_validation",
            "send multipart/form-data (a `file` part) or application/json",
        )
    except BaseException:
        shutil.rmtree(spool, ignore_errors=True)
        raise


async def _inline(request: Request, spool: Path) -> Upload:
    size = 0
    chunks = []
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_INLINE_BYTES:
            raise ProblemError(
                413,
                "request_validation",
                f"inline JSON bodies are limited to {MAX_INLINE_BYTES} bytes;"
                " upload a JSONL file as multipart/form-data instead",
            )
        chunks.append(chunk)
    try:
        raw = orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError as exc:
        raise ProblemError(422, "request_validation", f"body is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ProblemError(422, "request_validation", "body must be a JSON object")
    job = _options(raw, InlineJob)
    assert isinstance(job, InlineJob)
    path = spool / "requests.jsonl"
    content = hashlib.sha256()
    with path.open("wb") as out:
        for line in job.requests:
            data = orjson.dumps(line) + b"\n"
            content.update(data)
            out.write(data)
    options = SubmitOptions.model_validate(job.model_dump(exclude={"requests"}))
    return Upload(path, "requests", options, _fingerprint(options, content.hexdigest()), spool)


class _Parts:
    """The state of one multipart parse: the current part's headers and sink."""

    def __init__(self, spool: Path) -> None:
        self.spool = spool
        self.fields: dict[str, str] = {}
        self.file_path: Path | None = None
        self.filename = "upload.jsonl"
        self.content = hashlib.sha256()
        self.file_bytes = 0
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name: str | None = None
        self._is_file = False
        self._buffer = bytearray()
        self._sink: Any = None
        self.error: str | None = None

    def on_part_begin(self) -> None:
        self._headers = {}
        self._buffer = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field = b""
        self._header_value = b""

    def on_headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = params.get(b"name", b"").decode("utf-8", "replace")
        self._is_file = self._name == "file"
        if self._is_file:
            if self.file_path is not None:
                self.error = "more than one `file` part"
                return
            name = params.get(b"filename", b"").decode("utf-8", "replace")
            self.filename = Path(name).name or self.filename
            self.file_path = self.spool / "requests.jsonl"
            self._sink = self.file_path.open("wb")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        piece = data[start:end]
        if self._is_file and self._sink is not None:
            self._sink.write(piece)
            self.content.update(piece)
            self.file_bytes += len(piece)
        else:
            self._buffer += piece
            if len(self._buffer) > MAX_FIELD_BYTES:
                self.error = f"form field {self._name!r} is longer than {MAX_FIELD_BYTES} bytes"

    def on_part_end(self) -> None:
        if self._is_file and self._sink is not None:
            self._sink.close()
            self._sink = None
        elif self._name:
            self.fields[self._name] = self._buffer.decode("utf-8", "replace")

    def close(self) -> None:
        if self._sink is not None:
            self._sink.close()


async def _multipart(
    request: Request,
    boundary: bytes,
    spool: Path,
    tick: Callable[[], Awaitable[None]] | None,
) -> Upload:
    parts = _Parts(spool)
    callbacks = {
        name: getattr(parts, name)
        for name in (
            "on_part_begin",
            "on_part_data",
            "on_part_end",
            "on_header_field",
            "on_header_value",
            "on_header_end",
            "on_headers_finished",
        )
    }
    parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
    since_tick = 0
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            if parts.error:
                raise ProblemError(422, "request_validation", parts.error)
            since_tick += len(chunk)
            if tick is not None and since_tick >= TICK_BYTES:
                since_tick = 0
                await tick()
        parser.finalize()
    except ProblemError:
        raise
    except Exception as exc:  # python-multipart raises its own errors on a broken body
        raise ProblemError(422, "request_validation", f"broken multipart body: {exc}") from None
    finally:
        parts.close()
    if parts.file_path is None:
        raise ProblemError(
            422,
            "request_validation",
            "multipart upload needs a `file` part holding the JSONL requests",
        )
    options = _options({k: v for k, v in parts.fields.items() if v != ""})
    return Upload(
        parts.file_path,
        parts.filename,
        options,
        _fingerprint(options, parts.content.hexdigest()),
        spool,
        parts.fields,
    )
