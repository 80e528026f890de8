"""Options checked at parse time, so a mistake is one line naming the option before
anything is opened, stored or sent (click callbacks; the boundary in `contract`
prints `error: --OPTION: <why>`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, TypeVar

import typer

from batchkiln.errors import InvalidKey
from batchkiln.intake.keys import check_user_key

N = TypeVar("N", int, float)


def known_providers() -> list[str]:
    """Every provider name a command accepts: the vendors and the simulator aliases
    (read from the providers' table, so a vendor added there is accepted here)."""
    from batchkiln.providers import WIRE_FORMATS

    return list(WIRE_FORMATS)


def provider(value: str) -> str:
    names = known_providers()
    if value not in names:
        raise typer.BadParameter(f"unknown provider {value!r}: use one of {', '.join(names)}")
    return value


def choice(*allowed: str) -> Callable[[str | None], str | None]:
    def check(value: str | None) -> str | None:
        if value is not None and value not in allowed:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(allowed)}")
        return value

    return check


def at_least(low: N, *, high: N | None = None, what: str = "") -> Callable[[N | None], N | None]:
    """A number >= `low` (and <= `high`), finite."""

    def check(value: N | None) -> N | None:
        if value is None:
            return None
        if isinstance(value, float) and not math.isfinite(value):
            raise typer.BadParameter(f"must be a finite number, got {value}")
        if value < low or (high is not None and value > high):
            span = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise typer.BadParameter(f"must be {what or 'a number'} {span}, got {value}")
        return value

    return check


def above_zero(what: str) -> Callable[[float | None], float | None]:
    """A finite number > 0."""

    def check(value: float | None) -> float | None:
        if value is None:
            return None
        if not math.isfinite(value):
            raise typer.BadParameter(f"must be a finite number ({what}), got {value}")
        if value <= 0:
            raise typer.BadParameter(f"must be {what} greater than 0, got {value}")
        return value

    return check


def user_key(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return check_user_key(value)
    except InvalidKey as exc:
        raise typer.BadParameter(str(exc)) from None


ProviderOpt = Annotated[
    str,
    typer.Option(
        "--provider",
        "-p",
        callback=provider,
        help="openai | anthropic | gemini | simulator (OpenAI format, in-process, no keys)"
        " | simulator-anthropic | simulator-gemini",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON object, for scripts.")]
KeyOpt = Annotated[
    str | None,
    typer.Option(
        callback=user_key,
        help="Idempotency key, 1-255 printable ASCII (default: content fingerprint).",
    ),
]
MaxAttemptsOpt = Annotated[
    int,
    typer.Option(
        callback=at_least(1, high=20, what="a whole number of attempts"),
        help="Attempts per request, retries included (1-20).",
    ),
]
BudgetOpt = Annotated[
    float | None,
    typer.Option(
        callback=above_zero("an amount of US dollars"),
        help="Most the job may cost in USD at batch prices, retries included.",
    ),
]
PortOpt = Callable[[int | None], int | None]
port: PortOpt = at_least(0, high=65535, what="a TCP port")

__all__ = [
    "BudgetOpt",
    "JsonOpt",
    "KeyOpt",
    "MaxAttemptsOpt",
    "ProviderOpt",
    "above_zero",
    "at_least",
    "choice",
    "known_providers",
    "port",
    "provider",
    "user_key",
]
