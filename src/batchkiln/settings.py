"""Every setting batchkiln reads, parsed and validated once, in one place.

`Settings.load()` reads the process environment (`KILN_*` and the vendor SDKs' own
variables) with pydantic-settings; a bad value is a `ConfigError` naming the variable.
The App hands the parsed values to the parts that need them; no module below the
edges reads `os.environ`.

`kiln config` prints the effective settings with secrets masked (`Settings.describe`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from batchkiln.errors import ConfigError
from batchkiln.store.database import DEFAULT_URL as DEFAULT_DATABASE_URL

Period = Literal["day", "week", "month"]
TokenizerMode = Literal["auto", "tiktoken", "approx"]
TrackingModeName = Literal["poll", "webhook", "hybrid"]


def _split(value: Any) -> Any:
    """Comma- or space-separated lists (several secrets during a rotation)."""
    if isinstance(value, str):
        return [part for part in re.split(r"[,\s]+", value) if part]
    return value


class Settings(BaseSettings):
    """The effective configuration of one process."""

    model_config = SettingsConfigDict(
        env_prefix="KILN_",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
        env_ignore_empty=True,
    )

    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        description="the store: sqlite:///PATH (one worker process) or postgresql://..."
        " (many workers on many machines)",
    )
    budget_usd: float | None = Field(
        None,
        description="global budget in USD at batch prices over KILN_BUDGET_PERIOD (unset: none)",
    )
    budget_period: Period = Field("month", description="day | week | month (calendar, UTC)")
    tokenizer: TokenizerMode = Field(
        "auto",
        description="auto (tiktoken only from its local cache) | tiktoken (may download"
        " once) | approx (4 bytes a token)",
    )
    prices_file: Path | None = Field(
        None, description="a JSON price table overlaid on the shipped one"
    )
    webhook_max_body_bytes: int = Field(
        1_000_000,
        ge=1,
        description="largest webhook body the receiver reads; bigger ones get 413 unread",
    )
    simulator_faults: str = Field(
        "", description="faults for the in-process simulator (see `kiln simulator --help`)"
    )
    tracking: TrackingModeName | None = Field(
        None, description="poll | webhook | hybrid (unset: hybrid with a webhook secret, else poll)"
    )
    webhook_secrets: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="accepted vendor webhook secrets, comma separated (old and new during a"
        " rotation); OPENAI_WEBHOOK_SECRET is added",
    )
    enqueued_token_limits: Annotated[dict[str, int], NoDecode] = Field(
        default_factory=dict,
        description="per-model caps on the input tokens of our unfinished batches, e.g."
        " gpt-4o-mini=2000000,gpt-4o=900000: a batch that would pass one waits"
        " (not_submitted) for capacity; lowered by the vendor's own rejections",
    )
    lease_seconds: float = Field(
        60.0,
        gt=0,
        description="how long a claimed batch stays leased to its worker without a"
        " heartbeat (renewed every third of it while a step runs)",
    )
    worker_concurrency: int = Field(
        8, ge=1, description="steps one worker runs at once (kiln worker --concurrency)"
    )
    vendor_concurrency: int = Field(
        8, ge=1, description="concurrent calls one worker makes to one vendor"
    )
    worker_grace_seconds: float = Field(
        30.0,
        ge=0,
        description="on SIGTERM, how long steps in flight may take to finish before they"
        " are stopped and their leases released",
    )
    stall_after_seconds: float = Field(
        86400.0,
        gt=0,
        description="a Gemini batch still PENDING at the vendor this long after creation"
        " raises a batch.stalled audit event (default 24 h, the documented turnaround)",
    )
    debug: bool = Field(False, description="print tracebacks for errors")

    # `kiln serve` (the HTTP service)
    api_tokens: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="bearer tokens of the HTTP API, comma separated, each `NAME:TOKEN` (or just"
        " TOKEN); each is a caller scope. Required to serve on a non-loopback address",
    )
    callback_secret: SecretStr | None = Field(
        None,
        description="the whsec_ secret signing webhooks out (Standard Webhooks), unless a job"
        " brings its own callback_secret",
    )
    callback_allow_loopback: bool = Field(
        False, description="accept http:// callback URLs to loopback addresses (tests, demos)"
    )
    callback_allow_private: bool = Field(
        False, description="accept callback URLs in private and link-local address ranges"
    )
    idempotency_retention_hours: float = Field(
        24.0,
        ge=24.0,
        description="how long the API keeps an Idempotency-Key and its stored response"
        " (24 h minimum); the reaper deletes it afterwards",
    )
    upload_dir: Path | None = Field(
        None, description="where uploads are spooled while a job is created (default: temp dir)"
    )

    # The vendor SDKs' own variables: read here so the App can say which one is missing.
    openai_api_key: SecretStr | None = Field(
        None, validation_alias="OPENAI_API_KEY", description="OpenAI credentials"
    )
    openai_base_url: str | None = Field(
        None, validation_alias="OPENAI_BASE_URL", description="OpenAI endpoint"
    )
    openai_webhook_secret: SecretStr | None = Field(
        None, validation_alias="OPENAI_WEBHOOK_SECRET", description="OpenAI webhook secret"
    )
    anthropic_api_key: SecretStr | None = Field(
        None, validation_alias="ANTHROPIC_API_KEY", description="Anthropic credentials"
    )
    anthropic_base_url: str | None = Field(
        None, validation_alias="ANTHROPIC_BASE_URL", description="Anthropic endpoint"
    )
    gemini_api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("GEMINI_API_KEY", "GOOGLE_API_KEY"),
        description="Gemini credentials (GEMINI_API_KEY, else GOOGLE_API_KEY)",
    )
    gemini_base_url: str | None = Field(
        None, validation_alias="GOOGLE_GEMINI_BASE_URL", description="Gemini endpoint"
    )

    @field_validator("webhook_secrets", "api_tokens", mode="before")
    @classmethod
    def _split_secrets(cls, value: Any) -> Any:
        return _split(value)

    @field_validator("enqueued_token_limits", mode="before")
    @classmethod
    def _parse_limits(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        parts: list[str] = []
        for part in _split(value):  # "m=2,000,000": digit groups rejoin their number
            if parts and "=" not in part and part.isdigit():
                parts[-1] += part
            else:
                parts.append(part)
        limits: dict[str, int] = {}
        for part in parts:
            model, sep, number = part.rpartition("=")
            digits = number.replace("_", "").replace(",", "")
            if not sep or not model or not digits.isdigit() or int(digits) <= 0:
                raise ValueError(f"expected MODEL=TOKENS (a positive integer), got {part!r}")
            limits[model] = int(digits)
        return limits

    @field_validator("budget_usd")
    @classmethod
    def _finite_budget(cls, value: float | None) -> float | None:
        if value is None:
            return None
        if not math.isfinite(value):
            raise ValueError("must be a finite number of dollars (unset it for no budget)")
        if value <= 0:
            raise ValueError("must be greater than 0")
        return value

    @field_validator("prices_file")
    @classmethod
    def _readable_prices(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} is not a readable file")
        return value

    @field_validator("simulator_faults")
    @classmethod
    def _valid_faults(cls, value: str) -> str:
        from batchkiln.simulator.faults import parse_faults

        parse_faults(value)  # ValueError names the bad part
        return value

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """The environment's settings (with `overrides` on top); ConfigError on a bad value."""
        try:
            return cls(**overrides)
        except ValidationError as exc:
            raise ConfigError(_first_problem(exc), name=_env_name(exc)) from None

    @property
    def all_webhook_secrets(self) -> list[str]:
        """KILN_WEBHOOK_SECRETS, then OPENAI_WEBHOOK_SECRET, without repeats."""
        found = [s.get_secret_value() for s in self.webhook_secrets]
        if self.openai_webhook_secret is not None:
            found.append(self.openai_webhook_secret.get_secret_value())
        unique: list[str] = []
        for secret in (s.strip() for s in found):
            if secret and secret not in unique:
                unique.append(secret)
        return unique

    def describe(self) -> Iterator[Setting]:
        """Every setting with its variable, effective value (secrets masked) and default."""
        for name, info in type(self).model_fields.items():
            value = getattr(self, name)
            default = info.get_default(call_default_factory=True)
            yield Setting(
                variable=env_names(name)[0],
                value=_shown(value),
                default=_shown(default),
                is_default=value == default,
                description=info.description or "",
            )


@dataclass(frozen=True)
class Setting:
    variable: str
    value: str
    default: str
    is_default: bool
    description: str


def env_names(field: str) -> list[str]:
    """The environment variables a field is read from, first one first."""
    info = Settings.model_fields[field]
    alias = info.validation_alias
    if isinstance(alias, str):
        return [alias]
    if isinstance(alias, AliasChoices):
        return [str(choice) for choice in alias.choices]
    return [f"KILN_{field.upper()}"]


def _shown(value: Any) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, SecretStr):
        return "****" if value.get_secret_value() else "(unset)"
    if isinstance(value, list):
        return ", ".join(_shown(v) for v in value) or "(none)"
    if isinstance(value, str) and "://" in value:
        return mask_url(value)
    return str(value)


def mask_url(url: str) -> str:
    """A URL with its password replaced by ***, for messages and `kiln config`."""
    return re.sub(r"(://[^:/@]+:)[^@/]*@", r"\1***@", url)


def _env_name(exc: ValidationError) -> str | None:
    for error in exc.errors():
        if error["loc"]:
            loc = str(error["loc"][0])
            if loc in Settings.model_fields:
                return env_names(loc)[0]
            return loc
    return None


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    name = _env_name(exc) or "a setting"
    got = error.get("input")
    reason = str(error["msg"]).removeprefix("Value error, ").splitlines()[0]
    shown = "" if got is None or isinstance(got, dict) else f" (got {str(got)[:60]!r})"
    return f"{name}: {reason}{shown}"


__all__ = ["DEFAULT_DATABASE_URL", "Setting", "Settings", "env_names", "mask_url"]
