"""A process killed at a chosen point, for the acceptance tests."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from batchkiln.providers.base import CreateSpec, Provider, VendorBatch


class Killed(BaseException):
    """The process dies here (SIGKILL): nothing after this point runs."""


class _CreateNeverLeaves:
    """A provider whose create call never leaves: the process is killed just before."""

    def __init__(self, inner: Provider) -> None:
        self._inner = inner

    async def create(self, spec: CreateSpec) -> VendorBatch:
        raise Killed("SIGKILL right before the create left")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class KilledBeforeCreate(Mapping[str, Provider]):
    """Providers whose create calls die before leaving (the process is SIGKILLed)."""

    def __init__(self, inner: Mapping[str, Provider]) -> None:
        self._inner = inner

    def __getitem__(self, name: str) -> Provider:
        return _CreateNeverLeaves(self._inner[name])  # type: ignore[return-value]

    def __iter__(self) -> Iterator[str]:
        return iter(self._inner)

    def __len__(self) -> int:
        return len(self._inner)
