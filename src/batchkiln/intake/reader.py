"""Reading request files as a stream, in the formats users already have:

- OpenAI batch lines: {"custom_id", "method": "POST", "url", "body"}
- Anthropic lines:    {"custom_id", "params"}
- plain lines:        {"custom_id", "body"}   (the model comes from --model)

`validate_file` makes one pass and reports every bad line (up to a cap) with
file, line number and reason, before anything else happens; `iter_requests`
makes a second pass to yield the normalised requests. Memory is bounded by the
longest line plus one small entry per custom_id (for duplicate detection).
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from batchkiln.intake.sharding import PROVIDER_LIMITS, Shard, plan_shards

Vendor = Literal["openai", "anthropic"]
OPENAI_ENDPOINTS = (
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
)
ANTHROPIC_ENDPOINT = "/v1/messages"
DEFAULT_OPENAI_ENDPOINT = "/v1/chat/completions"
MAX_CUSTOM_ID = 512
_WIRE_ID_LEN = 9  # "<8-char tag>-", then the sequence number


@dataclass(frozen=True)
class InputRequest:
    seq: int
    line: int
    custom_id: str
    body: dict[str, Any]
    wire_bytes: int


@dataclass(frozen=True)
class LineError:
    file: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.reason}"


class InputError(ValueError):
    """A request file that cannot be submitted; lists every bad line up to a cap."""

    def __init__(self, errors: list[LineError], truncated: int = 0) -> None:
        self.errors = errors
        self.truncated = truncated
        lines = [str(e) for e in errors]
        if truncated:
            lines.append(f"... and {truncated} more")
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class InputSummary:
    path: str
    provider: str
    model: str
    endpoint: str
    count: int
    wire_bytes: int
    fingerprint: str
    shards: list[Shard]


class _Reject(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


@dataclass
class _Context:
    """What the lines of one file must agree on, learned from the first lines."""

    provider: Vendor
    model: str | None
    endpoint: str | None
    model_line: int | None = None
    endpoint_line: int | None = None


def _normalise(record: Any, ctx: _Context, line: int) -> tuple[str, dict[str, Any], bytes, int]:
    """(custom_id, vendor body, its canonical JSON, wire bytes) of one line, or _Reject."""
    if not isinstance(record, dict):
        raise _Reject("a line must be a JSON object")
    custom_id = record.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id.strip():
        raise _Reject("missing or empty custom_id")
    if len(custom_id) > MAX_CUSTOM_ID:
        raise _Reject(f"custom_id is longer than {MAX_CUSTOM_ID} characters")
    if "method" in record or "url" in record:
        if ctx.provider != "openai":
            raise _Reject(
                "this is an OpenAI batch line (method/url); use --provider openai"
                " or the plain form {custom_id, body}"
            )
        if record.get("method") != "POST":
            raise _Reject(f'method must be "POST", got {record.get("method")!r}')
        url = record.get("url")
        if url not in OPENAI_ENDPOINTS:
            raise _Reject(f"url {url!r} is not a batch endpoint ({', '.join(OPENAI_ENDPOINTS)})")
        body, endpoint = record.get("body"), str(url)
    elif "params" in record:
        if ctx.provider != "anthropic":
            raise _Reject(
                "this is an Anthropic line (params); use --provider anthropic"
                " or the plain form {custom_id, body}"
            )
        body, endpoint = record.get("params"), ANTHROPIC_ENDPOINT
    elif "body" in record:
        body = record.get("body")
        endpoint = (
            (ctx.endpoint or DEFAULT_OPENAI_ENDPOINT)
            if ctx.provider == "openai"
            else ANTHROPIC_ENDPOINT
        )
    else:
        raise _Reject("a line needs body (plain or OpenAI form) or params (Anthropic form)")
    if not isinstance(body, dict):
        raise _Reject("the request body must be a JSON object")
    _agree(ctx, "endpoint", endpoint, line)
    model = body.get("model") or ctx.model
    if not isinstance(model, str) or not model:
        raise _Reject("no model: set it on the line or pass --model")
    _agree(ctx, "model", model, line)
    body = body if body.get("model") == model else {**body, "model": model}
    if ctx.provider == "anthropic":
        max_tokens = body.get("max_tokens")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise _Reject("params.max_tokens must be an integer >= 1")
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            raise _Reject("params.messages must be a non-empty list")
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    overhead = (
        len(f'{{"custom_id":"","method":"POST","url":"{endpoint}","body":}}\n')
        if ctx.provider == "openai"
        else len('{"custom_id":"","params":},')
    )
    return custom_id, body, canonical, len(canonical) + overhead + _WIRE_ID_LEN + len(str(line))


def _agree(ctx: _Context, what: Literal["model", "endpoint"], value: str, line: int) -> None:
    current = getattr(ctx, what)
    if current is None:
        setattr(ctx, what, value)
        setattr(ctx, f"{what}_line", line)
    elif current != value:
        first = getattr(ctx, f"{what}_line")
        origin = f"line {first}" if first is not None else f"--{what}"
        raise _Reject(
            f"{what} {value!r} differs from {current!r} ({origin}); one job has one {what}"
        )


def _records(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if raw.strip():
                yield number, raw


def validate_file(
    path: str | Path,
    *,
    provider: Vendor,
    model: str | None = None,
    endpoint: str | None = None,
    max_errors: int = 50,
) -> InputSummary:
    """One streaming pass: every check, the fingerprint and the shard plan.
    Raises InputError listing every bad line (up to `max_errors`)."""
    path = Path(path)
    name = str(path)
    if provider not in PROVIDER_LIMITS:
        raise InputError([LineError(name, None, f"unknown provider {provider!r}")])
    if endpoint is not None and provider == "openai" and endpoint not in OPENAI_ENDPOINTS:
        raise InputError(
            [LineError(name, None, f"--endpoint {endpoint!r} is not a batch endpoint")]
        )
    ctx = _Context(provider, model, endpoint)
    errors: list[LineError] = []
    truncated = 0
    first_seen: dict[int, int] = {}  # hash of custom_id -> line (bounded per request)
    sizes = array("Q")
    digest = hashlib.sha256(f"{provider}\0".encode())
    try:
        for number, raw in _records(path):
            try:
                try:
                    record = orjson.loads(raw)
                except orjson.JSONDecodeError as exc:
                    raise _Reject(f"not valid JSON ({exc.msg})") from None
                custom_id, _body, canonical, size = _normalise(record, ctx, number)
                key = int.from_bytes(
                    hashlib.blake2b(custom_id.encode(), digest_size=8).digest(), "big"
                )
                if key in first_seen:
                    raise _Reject(
                        f"duplicate custom_id {custom_id!r} (first seen on line {first_seen[key]})"
                    )
                first_seen[key] = number
            except _Reject as reject:
                if len(errors) < max_errors:
                    errors.append(LineError(name, number, reject.reason))
                else:
                    truncated += 1
                continue
            sizes.append(size)
            digest.update(custom_id.encode() + b"\0")
            digest.update(canonical + b"\n")
    except OSError as exc:
        raise InputError([LineError(name, None, f"cannot read: {exc.strerror or exc}")]) from None
    if not errors and not sizes:
        errors.append(LineError(name, None, "the file has no requests"))
    limit = PROVIDER_LIMITS[provider].byte_budget
    for seq, size in enumerate(sizes):
        if size > limit and len(errors) < max_errors:
            errors.append(
                LineError(
                    name, None, f"request {seq} is {size} bytes, over the {limit}-byte batch budget"
                )
            )
    if errors:
        raise InputError(errors, truncated)
    assert ctx.model is not None and ctx.endpoint is not None
    digest.update(f"{ctx.model}\0{ctx.endpoint}".encode())
    return InputSummary(
        path=name,
        provider=provider,
        model=ctx.model,
        endpoint=ctx.endpoint,
        count=len(sizes),
        wire_bytes=sum(sizes),
        fingerprint=digest.hexdigest(),
        shards=plan_shards(sizes, provider=provider),
    )


def iter_requests(
    path: str | Path,
    *,
    provider: Vendor,
    model: str | None = None,
    endpoint: str | None = None,
) -> Iterator[InputRequest]:
    """The second pass, after validate_file succeeded: normalised requests in order."""
    path = Path(path)
    ctx = _Context(provider, model, endpoint)
    for seq, (number, raw) in enumerate(_records(path)):
        try:
            custom_id, body, _canonical, size = _normalise(orjson.loads(raw), ctx, number)
        except (_Reject, orjson.JSONDecodeError) as exc:
            reason = exc.reason if isinstance(exc, _Reject) else "not valid JSON"
            raise InputError(
                [LineError(str(path), number, f"{reason} (the file changed after validation)")]
            ) from None
        yield InputRequest(seq=seq, line=number, custom_id=custom_id, body=body, wire_bytes=size)
