"""One line of a request file: the forms it may take, and the checks each line and the
command's own arguments must pass. Every read of a file (intake/reader.py) uses these,
so a line is judged the same way whichever read meets it.
"""

from __future__ import annotations

import codecs
import errno
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from batchkiln.errors import InputError, LineError
from batchkiln.intake.sharding import PROVIDER_LIMITS

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


class Reject(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


@dataclass
class Context:
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
            raise Reject(
                f"{what} {value!r} differs from {current!r} ({origin}); one job has one {what}"
            )


def kind_of(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number")


def parse_line(raw: bytes, line: int) -> dict[str, Any]:
    skipped = 0
    if line == 1 and raw.startswith(codecs.BOM_UTF8):
        skipped = len(codecs.BOM_UTF8)
        raw = raw[skipped:]
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        bad = utf8_error_offset(raw)
        if bad is not None:
            raise Reject(f"not valid UTF-8 at byte offset {bad + skipped} of the line") from None
        raise Reject(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(record, dict):
        raise Reject(f"a line must be a JSON object, got {kind_of(record)}")
    return record


def utf8_error_offset(raw: bytes) -> int | None:
    """Where `raw` stops being UTF-8 (0-based), or None if it is valid. orjson says only
    "surrogates not allowed" at column 1, so the offset is found here, on the error path."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start
    return None


def custom_id_of(record: dict[str, Any]) -> str:
    field = "custom_id"
    if "custom_id" not in record and "request" in record and "key" in record:
        field = "key"  # Gemini's own line form
    if field not in record:
        raise Reject("missing custom_id" + (" (or key)" if "request" in record else ""))
    custom_id = record[field]
    if not isinstance(custom_id, str):
        raise Reject(f"{field} must be a string, got {kind_of(custom_id)}")
    if not custom_id.strip():
        raise Reject(f"empty {field}")
    if len(custom_id) > MAX_CUSTOM_ID:
        raise Reject(f"{field} is {len(custom_id)} characters, more than {MAX_CUSTOM_ID}")
    if "\x00" in custom_id:
        # PostgreSQL text cannot hold NUL and SQLite would: refuse it here, on both stores
        raise Reject(f"{field} {custom_id[:40]!r} contains a NUL character (\\u0000)")
    return custom_id


def vendor_body(record: dict[str, Any], ctx: Context, line: int) -> dict[str, Any]:
    """The body that goes to the vendor, with `model` set; or Reject."""
    if "method" in record or "url" in record:
        if ctx.provider != "openai":
            raise Reject(
                "this is an OpenAI batch line (method/url); use --provider openai"
                " or the plain form {custom_id, body}"
            )
        method, url = record.get("method"), record.get("url")
        if method != "POST":
            raise Reject(f'method must be "POST", got {method!r}')
        if url not in OPENAI_ENDPOINTS:
            raise Reject(f"url {url!r} is not a batch endpoint ({', '.join(OPENAI_ENDPOINTS)})")
        field, body, endpoint = "body", record.get("body"), str(url)
    elif "params" in record:
        if ctx.provider != "anthropic":
            raise Reject(
                "this is an Anthropic batch line (params); use --provider anthropic"
                " or the plain form {custom_id, body}"
            )
        field, body, endpoint = "params", record["params"], ANTHROPIC_ENDPOINT
    elif "request" in record:
        if ctx.provider != "gemini":
            raise Reject(
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
        raise Reject(
            "a line needs body (plain or OpenAI form), params (Anthropic form)"
            " or request (Gemini form)"
        )
    if not isinstance(body, dict):
        raise Reject(f"{field} must be a JSON object, got {kind_of(body)}")
    if endpoint != ctx.endpoint:  # the same as every line before: nothing to agree
        ctx.agree("endpoint", endpoint, line)
    if "model" in body:
        model = body["model"]
        if not isinstance(model, str) or not model:
            raise Reject(f"{field}.model must be a non-empty string, got {model!r}")
        if ctx.provider == "gemini":
            model = model.removeprefix("models/")  # the API's resource name form
            body = {**body, "model": model}
        if model != ctx.model:
            ctx.agree("model", model, line)
    elif ctx.model is None:
        raise Reject(f"no model: set {field}.model on the line or pass --model")
    else:
        body = {**body, "model": ctx.model}
    if ctx.provider == "anthropic":
        max_tokens = body.get("max_tokens")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise Reject(f"{field}.max_tokens must be an integer >= 1, got {max_tokens!r}")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise Reject(f"{field}.messages must be a non-empty array")
    if ctx.provider == "gemini":
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            raise Reject(f"{field}.contents must be a non-empty array of Content objects")
        for position, content in enumerate(contents):
            parts = content.get("parts") if isinstance(content, dict) else None
            if not isinstance(parts, list) or not parts:
                raise Reject(f"{field}.contents[{position}].parts must be a non-empty array")
    return body


def check_regular(path: Path) -> None:
    """OSError saying what `path` is unless it is a regular file: checked before opening,
    since opening a FIFO would wait for a writer (the command would hang)."""
    mode = path.stat().st_mode
    if not stat.S_ISREG(mode):
        what = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else None
        what = what or ("a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket")
        raise OSError(errno.EINVAL, f"not a regular file ({what}); give a JSONL file")


def read_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, raw bytes) of every non-blank line; blank lines are counted."""
    check_regular(path)
    with path.open("rb", buffering=_READ_BUFFER) as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.isspace():
                yield number, raw


def check_command(
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
