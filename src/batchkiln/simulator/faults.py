"""What goes wrong, and when: the `Faults` a simulator injects, seeded and reproducible.

A `Faults` value is set per simulator (`sim.faults`) and can be overridden per batch
(`sim.set_batch_faults(tag, Faults(...))`). Per-request outcomes are a pure function of
(seed, batch id, custom_id), so a run reproduces; count-based faults ("the next N creates")
are consumed from a `Budget` that is reset whenever its `Faults` is replaced.

Fields (all optional; the default `Faults()` injects nothing):

Per request (decided when the batch is created):
- `retryable_rate`: share of requests that fail retryably, with a kind drawn from
  `retryable_kinds` (`timeout`, `server_error`, `overloaded`).
- `permanent_rate`: share of requests that fail permanently (`invalid_request`, a 400).
- `fail_ids`: exact outcomes, custom_id -> kind (`timeout`, `server_error`, `overloaded`,
  `invalid_request`, `credit_balance`: the account's credit or quota ran out). A key
  matches the wire custom_id or the part after the batch's tag prefix (`"<tag>-r3"`
  matches `"r3"`). Each listed id fails in the first `fail_ids_times` batches that
  contain it, then succeeds (0 = fails every time).

Per batch:
- `reject_batch`: `"invalid_json_line"` or `"token_limit_exceeded"`: the OpenAI batch ends
  `failed` with that error after validation (Anthropic: the create call is refused).
- `enqueued_token_limit`: a real limit on input tokens of unfinished batches (OpenAI:
  `failed` with `token_limit_exceeded`; Anthropic: 429 on create).
- `expire`: processing is too slow for the 24 h window; `expire_finished_share` of the
  requests finish in time and are kept, the rest end `batch_expired` / `expired`.
- `queue_delay_seconds`, `processing_seconds` + `per_request_seconds` x n,
  `finalizing_seconds`, `cancel_seconds`: the batch's timeline on the virtual clock.

Per call:
- `reject_create`: every create call is refused with a 400 carrying this message (a
  definite, permanent rejection: nothing is committed).
- `rate_limit_create`: the next N create calls get 429 with `retry-after`.
- `rate_limit_rate`: share of all vendor calls that get 429 with `retry-after`.
- `retry_after_seconds`: the `retry-after` value (also sent as `retry-after-ms`).
- `read_5xx_rate` / `read_5xx_count`: share of reads (GET) / next N reads that get a 5xx.
- `drop_create` (`"none"`, `"cut"`, `"500"`) and `drop_create_count`: accept-then-drop.
  The create commits the batch, then the connection is cut (or a 500 is returned), for
  the next `drop_create_count` creates.

Webhooks (OpenAI):
- `webhook_duplicate`: share of events delivered twice (same `webhook-id`).
- `webhook_drop`: share of events never delivered.
- `webhook_out_of_order`: events due together are delivered newest first.
- `webhook_delay_seconds`: added to each event's first delivery time.

Gemini (reported by real users; python-genai#1909, #2008):
- `out_of_order`: result lines come in the order requests finished, not input order.
- `drop_inline_keys`: share of inline responses whose echoed `metadata` (our key) is missing.

`seed`: when set, overrides the simulator's seed for decisions under this `Faults`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import types
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Union, get_args, get_origin, get_type_hints

FailureKind = Literal["timeout", "server_error", "overloaded", "invalid_request", "credit_balance"]
FAILURE_KINDS: tuple[str, ...] = get_args(FailureKind)
RETRYABLE_KINDS: tuple[FailureKind, ...] = ("timeout", "server_error", "overloaded")
DropMode = Literal["none", "cut", "500"]
RejectKind = Literal["invalid_json_line", "token_limit_exceeded"]


def unit(*parts: object) -> float:
    """A uniform number in [0, 1) that depends only on `parts` (stable across runs)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


@dataclass(frozen=True)
class Faults:
    """The faults a simulator injects; see the module docstring for every field."""

    seed: int | None = None
    retryable_rate: float = 0.0
    retryable_kinds: tuple[FailureKind, ...] = RETRYABLE_KINDS
    permanent_rate: float = 0.0
    fail_ids: Mapping[str, FailureKind] = field(default_factory=dict)
    fail_ids_times: int = 1
    reject_batch: RejectKind | None = None
    enqueued_token_limit: int | None = None
    expire: bool = False
    expire_finished_share: float = 0.5
    queue_delay_seconds: float = 30.0
    processing_seconds: float = 120.0
    per_request_seconds: float = 0.0
    finalizing_seconds: float = 15.0
    cancel_seconds: float = 600.0
    reject_create: str | None = None
    rate_limit_create: int = 0
    rate_limit_rate: float = 0.0
    retry_after_seconds: float = 1.0
    read_5xx_rate: float = 0.0
    read_5xx_count: int = 0
    drop_create: DropMode = "none"
    drop_create_count: int = 1
    webhook_duplicate: float = 0.0
    webhook_drop: float = 0.0
    webhook_out_of_order: bool = False
    webhook_delay_seconds: float = 0.0
    out_of_order: bool = False
    drop_inline_keys: float = 0.0

    def __post_init__(self) -> None:
        for name in (
            "retryable_rate",
            "permanent_rate",
            "rate_limit_rate",
            "read_5xx_rate",
            "webhook_duplicate",
            "webhook_drop",
            "expire_finished_share",
            "drop_inline_keys",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        if self.retryable_rate + self.permanent_rate > 1.0:
            raise ValueError("retryable_rate + permanent_rate must not exceed 1")
        for name in ("fail_ids_times", "rate_limit_create", "read_5xx_count", "drop_create_count"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        for name in (
            "queue_delay_seconds",
            "processing_seconds",
            "per_request_seconds",
            "finalizing_seconds",
            "cancel_seconds",
            "retry_after_seconds",
            "webhook_delay_seconds",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        bad = {k: v for k, v in self.fail_ids.items() if v not in FAILURE_KINDS}
        if bad:
            raise ValueError(f"unknown failure kinds in fail_ids: {bad}")
        if not self.retryable_kinds or not set(self.retryable_kinds) <= set(RETRYABLE_KINDS):
            raise ValueError(f"retryable_kinds must be a non-empty subset of {RETRYABLE_KINDS}")
        if self.drop_create not in get_args(DropMode):
            raise ValueError(f"drop_create must be one of {get_args(DropMode)}")
        if self.reject_batch not in (None, *get_args(RejectKind)):
            raise ValueError(f"reject_batch must be None or one of {get_args(RejectKind)}")

    def __hash__(self) -> int:
        values = [getattr(self, f.name) for f in dataclasses.fields(self)]
        return hash(
            tuple(tuple(sorted(v.items())) if isinstance(v, Mapping) else v for v in values)
        )

    def replace(self, **changes: object) -> Faults:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def to_json(self) -> dict[str, object]:
        """The fields as plain JSON values (for the admin API)."""
        data = dataclasses.asdict(self)
        data["retryable_kinds"] = list(self.retryable_kinds)
        data["fail_ids"] = dict(self.fail_ids)
        return data


@dataclass(frozen=True)
class BatchMatch:
    """What a per-batch override can match on: the vendor, the kiln tag (OpenAI metadata
    `kiln_tag`; Anthropic custom_id prefix before the first "-"), and OpenAI metadata."""

    vendor: str
    tag: str | None
    metadata: Mapping[str, str] = field(default_factory=dict)


def decide_failure(faults: Faults, seed: int, batch_id: str, custom_id: str) -> FailureKind | None:
    """The rate-based outcome of one request: None (success) or its failure kind."""
    u = unit(seed, batch_id, custom_id, "outcome")
    if u < faults.retryable_rate:
        kinds = faults.retryable_kinds
        return kinds[int(unit(seed, batch_id, custom_id, "kind") * len(kinds))]
    if u < faults.retryable_rate + faults.permanent_rate:
        return "invalid_request"
    return None


class Budget:
    """The consumable part of one `Faults` value: counts of faults still to inject, and
    how many batches each `fail_ids` entry has already failed in."""

    def __init__(self, faults: Faults) -> None:
        self.rate_limit_create = faults.rate_limit_create
        self.read_5xx = faults.read_5xx_count
        self.drop_create = faults.drop_create_count if faults.drop_create != "none" else 0
        self.fail_ledger: Counter[str] = Counter()

    def take(self, name: Literal["rate_limit_create", "read_5xx", "drop_create"]) -> bool:
        """Consume one unit of a count-based fault; False when none is left."""
        left: int = getattr(self, name)
        if left <= 0:
            return False
        setattr(self, name, left - 1)
        return True

    def listed_failure(self, faults: Faults, custom_id: str, base_id: str) -> FailureKind | None:
        """The `fail_ids` outcome of a request, counting the batches it has failed in."""
        for key in (custom_id, base_id):
            kind = faults.fail_ids.get(key)
            if kind is None:
                continue
            if faults.fail_ids_times and self.fail_ledger[key] >= faults.fail_ids_times:
                return None
            self.fail_ledger[key] += 1
            return kind
        return None


# ---- the compact `--faults` string -------------------------------------------------------

ALIASES: dict[str, str] = {
    "retryable": "retryable_rate",
    "permanent": "permanent_rate",
    "kinds": "retryable_kinds",
    "fail": "fail_ids",
    "fail_times": "fail_ids_times",
    "reject": "reject_batch",
    "token_limit": "enqueued_token_limit",
    "expire_share": "expire_finished_share",
    "queue": "queue_delay_seconds",
    "processing": "processing_seconds",
    "per_request": "per_request_seconds",
    "finalizing": "finalizing_seconds",
    "cancel": "cancel_seconds",
    "rate_limit": "rate_limit_rate",
    "retry_after": "retry_after_seconds",
    "read_5xx": "read_5xx_rate",
    "webhook_delay": "webhook_delay_seconds",
}

FAULTS_FORMAT = """\
--faults is a comma-separated list of key=value pairs, e.g.
  retryable=0.05,permanent=0.01,drop_create=1,read_5xx=0.1,rate_limit=0.1,seed=7
Keys are Faults field names or these short forms:
  retryable=RATE permanent=RATE kinds=timeout+server_error+overloaded
  fail=ID:KIND+ID:KIND fail_times=N reject=invalid_json_line|token_limit_exceeded
  token_limit=N expire=1 expire_share=RATE queue=S processing=S per_request=S
  finalizing=S cancel=S rate_limit=RATE rate_limit_create=N retry_after=S
  read_5xx=RATE read_5xx_count=N drop_create=N|cut|500|cut:N|500:N
  webhook_duplicate=RATE webhook_drop=RATE webhook_out_of_order=1 webhook_delay=S seed=N
  out_of_order=1 drop_inline_keys=RATE (Gemini)
Rates are shares in [0, 1]; S is virtual seconds. drop_create=N drops the next N creates by
cutting the connection; drop_create=500 (or http500) answers one create with a 500 instead;
cut:N / 500:N give both the mode and the count."""


def _convert(name: str, raw: str, hint: object) -> object:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if raw.lower() in ("", "none", "null"):
            return None
        return _convert(name, raw, args[0])
    if hint is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{name}: expected a boolean, got {raw!r}")
    if hint is int:
        return int(raw)
    if hint is float:
        return float(raw)
    if origin is tuple:
        return tuple(part for part in raw.split("+") if part)
    if origin is Mapping:
        pairs = (part.rsplit(":", 1) for part in raw.split("+") if part)
        return {cid: kind for cid, kind in pairs}
    return raw  # Literal values and plain strings; Faults validates them


def parse_faults(spec: str, base: Faults | None = None) -> Faults:
    """Parse the compact `--faults` string (see FAULTS_FORMAT) into a `Faults`."""
    hints = get_type_hints(Faults)
    changes: dict[str, object] = {}
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--faults item {item!r} is not key=value")
        key, raw = key.strip(), raw.strip()
        if key == "drop_create":
            mode, _, count = raw.partition(":")
            mode = "500" if mode == "http500" else mode
            if mode.isdigit() and mode != "500":
                changes["drop_create"] = "cut" if int(mode) > 0 else "none"
                changes["drop_create_count"] = int(mode)
            else:
                changes["drop_create"] = mode
                changes["drop_create_count"] = int(count) if count else 1
            continue
        name = ALIASES.get(key, key)
        if name not in hints:
            raise ValueError(f"unknown --faults key {key!r}\n{FAULTS_FORMAT}")
        try:
            changes[name] = _convert(name, raw, hints[name])
        except ValueError as exc:
            raise ValueError(f"--faults {key}={raw!r}: {exc}") from exc
    return (base or Faults()).replace(**changes)
