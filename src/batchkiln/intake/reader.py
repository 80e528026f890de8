"""Reading request files as a stream, in the formats users already have:

- OpenAI batch lines: {"custom_id", "method": "POST", "url", "body"}
- Anthropic lines:    {"custom_id", "params"}
- Gemini lines:       {"key", "request"}      (a GenerateContentRequest; model from --model
                                               or `request.model`, "models/" optional)
- plain lines:        {"custom_id", "body"}   (the model may come from --model)

Three passes over a file, for three callers:

- `RequestPass` is `Kiln.submit`'s one read: it checks, normalises, fingerprints and
  plans each request and yields it ready to store, and stops at the first bad line
  (the store's unique index catches a custom_id seen twice).
- `validate_file` reports every bad line (up to a cap) with file, line number and
  reason, and computes the fingerprint and the shard plan (`kiln validate`, and the
  report after a submission stopped at a bad line). The custom_ids (for duplicates) and
  the bad lines go to a scratch database on disk (`LineBook`), so memory does not grow
  with the file.
- `iter_requests` yields the normalised requests of a file already validated.

Lines are read in binary one at a time, so memory is bounded by the longest line and a
few chunks; the file is never held.

Blank lines are skipped but still counted, so line numbers are the ones an
editor shows. User custom_ids never reach the vendor (the engine sends
`<tag>-<seq>`), so any string of 1-512 characters is accepted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from batchkiln.errors import FileChanged, InputError, LineError
from batchkiln.intake.dedupe import LineBook
from batchkiln.intake.keys import ContentFingerprint, canonical_json
from batchkiln.intake.lines import (
    MAX_CUSTOM_ID,
    Context,
    Provider,
    Reject,
    check_command,
    custom_id_of,
    parse_line,
    read_lines,
    vendor_body,
)
from batchkiln.intake.sharding import (
    PROVIDER_LIMITS,
    Limits,
    Shard,
    ShardPlanner,
    wire_line_bytes,
)


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
    check_command(name, provider, model, endpoint, max_errors)
    ctx = Context(provider, model, endpoint)
    planner = ShardPlanner(limits or PROVIDER_LIMITS[provider])
    content = ContentFingerprint()
    total_bytes = 0
    with LineBook() as book:
        try:
            for number, raw in read_lines(path):
                try:
                    record = parse_line(raw, number)
                    custom_id = custom_id_of(record)
                except Reject as reject:
                    book.add_bad(number, reject.reason)
                    continue
                book.add_id(custom_id, number)  # a duplicate is found by the book, at the end
                try:
                    body = vendor_body(record, ctx, number)
                    canonical = canonical_json(body)
                    assert ctx.endpoint is not None
                    size = wire_line_bytes(provider, ctx.endpoint, len(canonical), content.count)
                    if not planner.fits(size):
                        raise Reject(
                            f"request is {size:,} bytes on the wire, more than one batch may hold"
                            f" ({planner.limits.byte_budget:,} bytes)"
                        )
                except Reject as reject:
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
    check_command(name, provider, model, endpoint)
    ctx = Context(provider, model, endpoint)
    content = ContentFingerprint()
    for number, raw in read_lines(path):
        try:
            record = parse_line(raw, number)
            custom_id = custom_id_of(record)
            body = vendor_body(record, ctx, number)
        except Reject as reject:
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
        check_command(str(self.path), provider, model, endpoint)
        self._ctx = Context(provider, model, endpoint)
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
            for number, raw in read_lines(self.path):
                try:
                    try:
                        record = loads(raw) if number != 1 else parse_line(raw, number)
                    except decode_error:
                        record = parse_line(raw, number)  # raises with the reason
                    if type(record) is not dict:
                        record = parse_line(raw, number)  # raises with the reason
                    custom_id = record.get("custom_id")
                    if not (
                        type(custom_id) is str
                        and 0 < len(custom_id) <= MAX_CUSTOM_ID
                        and not custom_id.isspace()
                        and "\x00" not in custom_id
                    ):
                        custom_id = custom_id_of(record)  # Gemini's key, or raises
                    body = vendor_body(record, ctx, number)
                    canonical = canonical_json(body)
                    if fixed < 0:
                        assert ctx.endpoint is not None
                        fixed = wire_line_bytes(provider, ctx.endpoint, 0, 0) - 1
                    seq = content.count
                    size = fixed + len(canonical) + len(str(seq))
                    if size > budget:
                        raise Reject(
                            f"request is {size:,} bytes on the wire, more than one batch may hold"
                            f" ({budget:,} bytes)"
                        )
                except Reject as reject:
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
