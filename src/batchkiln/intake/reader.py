"""Reading request files as a stream, in the formats users already have:

- OpenAI batch lines: {"custom_id", "method": "POST", "url", "body"}
- Anthropic lines:    {"custom_id", "params"}
- Gemini lines:       {"key", "request"}      (a GenerateContentRequest; model from --model
                                               or `request.model`, "models/" optional)
- plain lines:        {"custom_id", "body"}   (the model may come from --model)

`validate_file` makes one pass and reports every bad line (up to a cap) with
file, line number and reason, before anything else happens; it also computes
the content fingerprint and the shard plan. `iter_requests` makes a second pass
to yield the normalised requests. Lines are read in binary one at a time, so
memory is bounded by the longest line and a few chunks; the custom_ids (for
duplicate detection) and the bad lines go to a scratch database on disk
(`LineBook`), so memory does not grow with the file; the file is never held.

Blank lines are skipped but still counted, so line numbers are the ones an
editor shows. User custom_ids never reach the vendor (the engine sends
`<tag>-<seq>`), so any string of 1-512 characters is accepted.
"""

from __future__ import annotations

import codecs
import errno
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import orjson

from batchkiln.errors import FileChanged, InputError, LineError
from batchkiln.intake.dedupe import LineBook
from batchkiln.intake.keys import ContentFingerprint, canonical_json
from batchkiln.intake.sharding import (
    PROVIDER_LIMITS,
    Limits,
    Shard,
    ShardPlanner,
    wire_line_bytes,
)

Provider = Literal["openai", "anthropic", "gemini"]
OPENAI_ENDPOINTS = (
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
)
ANTHROPIC_ENDPOINT = "/v1/messages"
GEMINI_ENDPOINT = "generateContent"  # a label: Gemini batches hold GenerateContentRequests
DEFAULT_OPENAI_ENDPOINT = "/v1/chat/completions"
MAX_CUSTOM_ID = 512
_READ_BUFFER = 1 << 20


class InputRequest(NamedTuple):
    """One request, normalised: `body` is what goes to the vendor (model set). A named
    tuple, not a dataclass: one is made per line of files of millions of lines."""

    seq: int  # 0-based position among the file's requests
    line: int  # 1-based line number in the file
    custom_id: str  # the user's id (never sent; the wire id is "<tag>-<seq>")
    body: dict[str, Any]
    wire_bytes: int  # the request's full wire line, see sharding.wire_line_bytes
    canonical: bytes = b""  # canonical_json(body): what the fingerprint covers and the store keeps
    shard: int = 0  # the shard (first batch) the request is planned into


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
    """What every line of one file must agree on, learned from the first lines."""

    provider: Provider
    model: str | None
    endpoint: str | None
    model_origin: str = "--model"
    endpoint_origin: str = "--endpoint"

    def agree(self, what: Literal["model", "endpoint"], value: str, line: int) -> None:
        current: str | None = getattr(self, what)
        if current is None:
            setattr(self, what, value)
            setattr(self, f"{what}_origin", f"line {line}")
        elif current != value:
            origin = getattr(self, f"{what}_origin")
            raise _Reject(
                f"{what} {value!r} differs from {current!r} ({origin}); one job has one {what}"
            )


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number")


def _parse(raw: bytes, line: int) -> dict[str, Any]:
    skipped = 0
    if line == 1 and raw.startswith(codecs.BOM_UTF8):
        skipped = len(codecs.BOM_UTF8)
        raw = raw[skipped:]
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        bad = _utf8_error_offset(raw)
        if bad is not None:
            raise _Reject(f"not valid UTF-8 at byte offset {bad + skipped} of the line") from None
        raise _Reject(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(record, dict):
        raise _Reject(f"a line must be a JSON object, got {_kind(record)}")
    return record


def _utf8_error_offset(raw: bytes) -> int | None:
    """Where `raw` stops being UTF-8 (0-based), or None if it is valid. orjson says only
    "surrogates not allowed" at column 1, so the offset is found here, on the error path."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start
    return None


def _custom_id(record: dict[str, Any]) -> str:
    field = "custom_id"
    if "custom_id" not in record and "request" in record and "key" in record:
        field = "key"  # Gemini's own line form
    if field not in record:
        raise _Reject("missing custom_id" + (" (or key)" if "request" in record else ""))
    custom_id = record[field]
    if not isinstance(custom_id, str):
        raise _Reject(f"{field} must be a string, got {_kind(custom_id)}")
    if not custom_id.strip():
        raise _Reject(f"empty {field}")
    if len(custom_id) > MAX_CUSTOM_ID:
        raise _Reject(f"{field} is {len(custom_id)} characters, more than {MAX_CUSTOM_ID}")
    if "\x00" in custom_id:
        # PostgreSQL text cannot hold NUL and SQLite would: refuse it here, on both stores
        raise _Reject(f"{field} {custom_id[:40]!r} contains a NUL character (\\u0000)")
    return custom_id


def _vendor_body(record: dict[str, Any], ctx: _Context, line: int) -> dict[str, Any]:
    """The body that goes to the vendor, with `model` set; or _Reject."""
    if "method" in record or "url" in record:
        if ctx.provider != "openai":
            raise _Reject(
                "this is an OpenAI batch line (method/url); use --provider openai"
                " or the plain form {custom_id, body}"
            )
        method, url = record.get("method"), record.get("url")
        if method != "POST":
            raise _Reject(f'method must be "POST", got {method!r}')
        if url not in OPENAI_ENDPOINTS:
            raise _Reject(f"url {url!r} is not a batch endpoint ({', '.join(OPENAI_ENDPOINTS)})")
        field, body, endpoint = "body", record.get("body"), str(url)
    elif "params" in record:
        if ctx.provider != "anthropic":
            raise _Reject(
                "this is an Anthropic batch line (params); use --provider anthropic"
                " or the plain form {custom_id, body}"
            )
        field, body, endpoint = "params", record["params"], ANTHROPIC_ENDPOINT
    elif "request" in record:
        if ctx.provider != "gemini":
            raise _Reject(
                "this is a Gemini batch line (key/request); use --provider gemini"
                " or the plain form {custom_id, body}"
            )
        field, body, endpoint = "request", record["request"], GEMINI_ENDPOINT
    elif "body" in record:
        field, body = "body", record["body"]
        if ctx.provider == "anthropic":
            endpoint = ANTHROPIC_ENDPOINT
        elif ctx.provider == "gemini":
            endpoint = GEMINI_ENDPOINT
        else:
            endpoint = ctx.endpoint or DEFAULT_OPENAI_ENDPOINT
    else:
        raise _Reject(
            "a line needs body (plain or OpenAI form), params (Anthropic form)"
            " or request (Gemini form)"
        )
    if not isinstance(body, dict):
        raise _Reject(f"{field} must be a JSON object, got {_kind(body)}")
    if endpoint != ctx.endpoint:  # the same as every line before: nothing to agree
        ctx.agree("endpoint", endpoint, line)
    if "model" in body:
        model = body["model"]
        if not isinstance(model, str) or not model:
            raise _Reject(f"{field}.model must be a non-empty string, got {model!r}")
        if ctx.provider == "gemini":
            model = model.removeprefix("models/")  # the API's resource name form
            body = {**body, "model": model}
        if model != ctx.model:
            ctx.agree("model", model, line)
    elif ctx.model is None:
        raise _Reject(f"no model: set {field}.model on the line or pass --model")
    else:
        body = {**body, "model": ctx.model}
    if ctx.provider == "anthropic":
        max_tokens = body.get("max_tokens")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise _Reject(f"{field}.max_tokens must be an integer >= 1, got {max_tokens!r}")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _Reject(f"{field}.messages must be a non-empty array")
    if ctx.provider == "gemini":
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            raise _Reject(f"{field}.contents must be a non-empty array of Content objects")
        for position, content in enumerate(contents):
            parts = content.get("parts") if isinstance(content, dict) else None
            if not isinstance(parts, list) or not parts:
                raise _Reject(f"{field}.contents[{position}].parts must be a non-empty array")
    return body


def _check_regular(path: Path) -> None:
    """OSError saying what `path` is unless it is a regular file: checked before opening,
    since opening a FIFO would wait for a writer (the command would hang)."""
    mode = path.stat().st_mode
    if not stat.S_ISREG(mode):
        what = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else None
        what = what or ("a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket")
        raise OSError(errno.EINVAL, f"not a regular file ({what}); give a JSONL file")


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, raw bytes) of every non-blank line; blank lines are counted."""
    _check_regular(path)
    with path.open("rb", buffering=_READ_BUFFER) as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.isspace():
                yield number, raw


def _check_command(
    name: str, provider: str, model: str | None, endpoint: str | None, max_errors: int = 1
) -> None:
    """Arguments that are wrong whatever the file holds: one error, no line."""
    if max_errors < 1:
        raise ValueError(f"max_errors must be >= 1, got {max_errors}")
    if provider not in PROVIDER_LIMITS:
        raise InputError([LineError(name, None, f"unknown provider {provider!r}")])
    if model is not None and not model.strip():
        raise InputError([LineError(name, None, "--model is empty")])
    if endpoint is None:
        return
    if provider == "openai" and endpoint not in OPENAI_ENDPOINTS:
        reason = f"--endpoint {endpoint!r} is not a batch endpoint ({', '.join(OPENAI_ENDPOINTS)})"
        raise InputError([LineError(name, None, reason)])
    if provider == "anthropic" and endpoint != ANTHROPIC_ENDPOINT:
        reason = f"--endpoint {endpoint!r}: Anthropic batches take {ANTHROPIC_ENDPOINT} only"
        raise InputError([LineError(name, None, reason)])
    if provider == "gemini" and endpoint != GEMINI_ENDPOINT:
        reason = f"--endpoint {endpoint!r}: Gemini batches take {GEMINI_ENDPOINT} only"
        raise InputError([LineError(name, None, reason)])


def validate_file(
    path: str | Path,
    *,
    provider: Provider,
    model: str | None = None,
    endpoint: str | None = None,
    max_errors: int = 50,
    limits: Limits | None = None,
    on_request: Callable[[int, dict[str, Any], str, str], None] | None = None,
) -> InputSummary:
    """One streaming pass: every check, the fingerprint and the shard plan.

    Raises InputError listing every bad line (the first `max_errors`, and how
    many more). `limits` overrides the provider's batch limits (for tests).
    `on_request(shard, body, model, endpoint)` sees every valid request in the same
    pass (the estimate is made this way, so the file is read once for both)."""
    path = Path(path)
    name = str(path)
    _check_command(name, provider, model, endpoint, max_errors)
    ctx = _Context(provider, model, endpoint)
    planner = ShardPlanner(limits or PROVIDER_LIMITS[provider])
    content = ContentFingerprint()
    total_bytes = 0
    with LineBook() as book:
        try:
            for number, raw in _lines(path):
                try:
                    record = _parse(raw, number)
                    custom_id = _custom_id(record)
                except _Reject as reject:
                    book.add_bad(number, reject.reason)
                    continue
                book.add_id(custom_id, number)  # a duplicate is found by the book, at the end
                try:
                    body = _vendor_body(record, ctx, number)
                    canonical = canonical_json(body)
                    assert ctx.endpoint is not None
                    size = wire_line_bytes(provider, ctx.endpoint, len(canonical), content.count)
                    if not planner.fits(size):
                        raise _Reject(
                            f"request is {size:,} bytes on the wire, more than one batch may hold"
                            f" ({planner.limits.byte_budget:,} bytes)"
                        )
                except _Reject as reject:
                    book.add_bad(number, reject.reason)
                    continue
                if book.bad_lines:
                    continue  # the plan and fingerprint will not be used
                content.add(custom_id, canonical)
                planner.add(size)
                total_bytes += size
                if on_request is not None:
                    assert ctx.model is not None
                    on_request(planner.current, body, ctx.model, ctx.endpoint)
        except OSError as exc:
            reason = f"cannot read: {exc.strerror or exc}"
            raise InputError([LineError(name, None, reason)]) from None
        findings, truncated = book.findings(max_errors)
    errors = [LineError(name, f.line, f.reason) for f in findings]
    if not errors and not content.count:
        errors.append(LineError(name, None, "no requests (the file is empty or only blank lines)"))
    if errors:
        raise InputError(errors, truncated)
    assert ctx.model is not None and ctx.endpoint is not None
    return InputSummary(
        path=name,
        provider=provider,
        model=ctx.model,
        endpoint=ctx.endpoint,
        count=content.count,
        wire_bytes=total_bytes,
        fingerprint=content.hexdigest(provider=provider, model=ctx.model, endpoint=ctx.endpoint),
        shards=planner.shards(),
    )


def iter_requests(
    path: str | Path,
    *,
    provider: Provider,
    model: str | None = None,
    endpoint: str | None = None,
    expect_fingerprint: str | None = None,
) -> Iterator[InputRequest]:
    """The second pass, after validate_file succeeded: normalised requests in order.

    Raises InputError if a line has become invalid since, and, when
    `expect_fingerprint` is given, after the last request if the content is not
    the content that was validated (the file changed between the passes)."""
    path = Path(path)
    name = str(path)
    _check_command(name, provider, model, endpoint)
    ctx = _Context(provider, model, endpoint)
    content = ContentFingerprint()
    for number, raw in _lines(path):
        try:
            record = _parse(raw, number)
            custom_id = _custom_id(record)
            body = _vendor_body(record, ctx, number)
        except _Reject as reject:
            raise FileChanged(name, number, reject.reason) from None
        canonical = canonical_json(body)
        assert ctx.endpoint is not None
        seq = content.count
        content.add(custom_id, canonical)
        size = wire_line_bytes(provider, ctx.endpoint, len(canonical), seq)
        yield InputRequest(seq, number, custom_id, body, size, canonical)
    if expect_fingerprint is not None:
        actual = None
        if ctx.model is not None and ctx.endpoint is not None:
            actual = content.hexdigest(provider=provider, model=ctx.model, endpoint=ctx.endpoint)
        if actual != expect_fingerprint:
            raise FileChanged(name)


class RequestPass:
    """The one pass `Kiln.submit` makes over a request file: each request is checked,
    normalised, fingerprinted and planned into a shard as it is read, and yielded ready
    to store, so a valid file is read once. It stops at the first bad line with an
    InputError naming it (submit then rolls back what it stored and runs `validate_file`
    for the report of every bad line); a custom_id seen twice is left to the store's
    unique index, which refuses the chunk that holds it."""

    def __init__(
        self,
        path: str | Path,
        *,
        provider: Provider,
        model: str | None = None,
        endpoint: str | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.path = Path(path)
        self.provider = provider
        _check_command(str(self.path), provider, model, endpoint)
        self._ctx = _Context(provider, model, endpoint)
        self._planner = ShardPlanner(limits or PROVIDER_LIMITS[provider])
        self._content = ContentFingerprint()
        self._wire_bytes = 0

    @property
    def model(self) -> str | None:
        """The Job's model, once a line or --model has set it."""
        return self._ctx.model

    @property
    def endpoint(self) -> str | None:
        return self._ctx.endpoint

    def __iter__(self) -> Iterator[InputRequest]:
        # The common case is inlined (a valid line of a valid file: the checks pass at
        # the first test); anything else goes through the same helpers as validate_file,
        # which give the reason. This loop runs once per request of files of millions.
        name, provider, ctx = str(self.path), self.provider, self._ctx
        planner, content = self._planner, self._content
        budget = planner.limits.byte_budget
        loads, decode_error = orjson.loads, orjson.JSONDecodeError
        fixed = -1  # the wire bytes of a request besides its body and seq digits
        try:
            for number, raw in _lines(self.path):
                try:
                    try:
                        record = loads(raw) if number != 1 else _parse(raw, number)
                    except decode_error:
                        record = _parse(raw, number)  # raises with the reason
                    if type(record) is not dict:
                        record = _parse(raw, number)  # raises with the reason
                    custom_id = record.get("custom_id")
                    if not (
                        type(custom_id) is str
                        and 0 < len(custom_id) <= MAX_CUSTOM_ID
                        and not custom_id.isspace()
                        and "\x00" not in custom_id
                    ):
                        custom_id = _custom_id(record)  # Gemini's key, or raises
                    body = _vendor_body(record, ctx, number)
                    canonical = canonical_json(body)
                    if fixed < 0:
                        assert ctx.endpoint is not None
                        fixed = wire_line_bytes(provider, ctx.endpoint, 0, 0) - 1
                    seq = content.count
                    size = fixed + len(canonical) + len(str(seq))
                    if size > budget:
                        raise _Reject(
                            f"request is {size:,} bytes on the wire, more than one batch may hold"
                            f" ({budget:,} bytes)"
                        )
                except _Reject as reject:
                    raise InputError([LineError(name, number, reject.reason)]) from None
                content.add(custom_id, canonical)
                planner.add(size)
                self._wire_bytes += size
                yield InputRequest(seq, number, custom_id, body, size, canonical, planner.current)
        except OSError as exc:
            reason = f"cannot read: {exc.strerror or exc}"
            raise InputError([LineError(name, None, reason)]) from None

    def summary(self) -> InputSummary:
        """What the pass read, once it has read the whole file."""
        name, ctx = str(self.path), self._ctx
        if not self._content.count:
            reason = "no requests (the file is empty or only blank lines)"
            raise InputError([LineError(name, None, reason)])
        assert ctx.model is not None and ctx.endpoint is not None
        return InputSummary(
            path=name,
            provider=self.provider,
            model=ctx.model,
            endpoint=ctx.endpoint,
            count=self._content.count,
            wire_bytes=self._wire_bytes,
            fingerprint=self._content.hexdigest(
                provider=self.provider, model=ctx.model, endpoint=ctx.endpoint
            ),
            shards=self._planner.shards(),
        )
