"""Provider adapters: one vendor's batch API each, through its official SDK with
the SDK's retries off, translated into the plain values of `base`.

The adapters (and with them the SDKs, about 1.5 s of imports) load on first
use, so commands that never call a vendor start fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from batchkiln.providers.base import (
    AmbiguousOutcome,
    BatchError,
    CreateSpec,
    FailureClass,
    Outcome,
    Provider,
    ResultLine,
    Usage,
    VendorBatch,
    VendorError,
    WireRequest,
)

if TYPE_CHECKING:
    import httpx
    import httpx2

    from batchkiln.providers.anthropic import AnthropicProvider
    from batchkiln.providers.gemini import GeminiProvider
    from batchkiln.providers.openai import OpenAIProvider

PROVIDERS = ("anthropic", "gemini", "openai")


def make_provider(
    name: str,
    *,
    http_client: httpx.AsyncClient | httpx2.AsyncClient | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    **options: Any,
) -> Provider:
    """The adapter for `name` ("openai", "anthropic" or "gemini"). Unset credentials and
    base URL come from the SDK's own environment variables."""
    if name == "openai":
        from batchkiln.providers.openai import OpenAIProvider

        return OpenAIProvider(
            http_client=http_client, base_url=base_url, api_key=api_key, **options
        )
    if name == "anthropic":
        from batchkiln.providers.anthropic import AnthropicProvider

        return AnthropicProvider(
            http_client=http_client, base_url=base_url, api_key=api_key, **options
        )
    if name == "gemini":
        import httpx as plain_httpx

        from batchkiln.providers.gemini import GeminiProvider

        if http_client is not None and not isinstance(http_client, plain_httpx.AsyncClient):
            raise TypeError("the gemini adapter takes an httpx.AsyncClient")
        return GeminiProvider(
            http_client=http_client, base_url=base_url, api_key=api_key, **options
        )
    raise ValueError(f"unknown provider {name!r}; expected one of {', '.join(PROVIDERS)}")


#: every provider name a Job may carry, and the wire format (adapter) it speaks
WIRE_FORMATS = {
    "openai": "openai",
    "anthropic": "anthropic",
    "gemini": "gemini",
    "simulator": "openai",
    "simulator-anthropic": "anthropic",
    "simulator-gemini": "gemini",
}


def wire_format(provider: str) -> str:
    """The wire format ("openai", "anthropic", "gemini") a provider name speaks; ValueError
    if none."""
    try:
        return WIRE_FORMATS[provider]
    except KeyError:
        known = ", ".join(sorted(WIRE_FORMATS))
        raise ValueError(f"unknown provider {provider!r}; expected one of {known}") from None


def parse_result_line(wire: str, raw: bytes) -> ResultLine:
    """One stored result line, read by its own adapter's parser (the only place that
    knows a vendor's line shape), without building an SDK client."""
    if wire == "anthropic":
        from batchkiln.providers.anthropic import parse_line as parse_anthropic

        return parse_anthropic(raw)
    if wire == "gemini":
        from batchkiln.providers.gemini_wire import parse_line as parse_gemini

        return parse_gemini(raw)
    from batchkiln.providers.openai import parse_line as parse_openai

    return parse_openai(raw)


def __getattr__(name: str) -> Any:
    if name == "OpenAIProvider":
        from batchkiln.providers.openai import OpenAIProvider

        return OpenAIProvider
    if name == "AnthropicProvider":
        from batchkiln.providers.anthropic import AnthropicProvider

        return AnthropicProvider
    if name == "GeminiProvider":
        from batchkiln.providers.gemini import GeminiProvider

        return GeminiProvider
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "PROVIDERS",
    "WIRE_FORMATS",
    "AmbiguousOutcome",
    "AnthropicProvider",
    "BatchError",
    "CreateSpec",
    "FailureClass",
    "GeminiProvider",
    "OpenAIProvider",
    "Outcome",
    "Provider",
    "ResultLine",
    "Usage",
    "VendorBatch",
    "VendorError",
    "WireRequest",
    "make_provider",
    "parse_result_line",
    "wire_format",
]
