"""Gemini request files: its own `{key, request}` lines and the plain form, with the same
validation rules (line numbers, duplicates, every error listed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from batchkiln.intake import (
    GEMINI_ENDPOINT,
    InputError,
    batch_tag,
    iter_requests,
    validate_file,
)
from batchkiln.providers.base import CreateSpec, WireRequest
from batchkiln.providers.gemini_wire import build_input

from .helpers import ant, oai, write_lines

CONTENTS = [{"role": "user", "parts": [{"text": "hi"}]}]


def gem(key: str, **request: Any) -> dict[str, Any]:
    return {"key": key, "request": {"contents": CONTENTS, **request}}


def errors_of(path: Path, **kwargs: Any) -> list[str]:
    with pytest.raises(InputError) as info:
        validate_file(path, **{"provider": "gemini", **kwargs})
    return [str(e) for e in info.value.errors]


def test_gemini_lines_are_accepted_as_they_are(tmp_path: Path) -> None:
    """`{key, request}` lines: the key is the user's id, the request the vendor body, the
    model from --model or `request.model` ("models/" optional)."""
    path = write_lines(
        tmp_path / "in.jsonl",
        [gem("a"), gem("b", model="models/gemini-2.5-flash"), gem("c", model="gemini-2.5-flash")],
    )
    summary = validate_file(path, provider="gemini", model="gemini-2.5-flash")
    assert (summary.model, summary.endpoint, summary.count) == (
        "gemini-2.5-flash",
        GEMINI_ENDPOINT,
        3,
    )
    requests = list(iter_requests(path, provider="gemini", model="gemini-2.5-flash"))
    assert [r.custom_id for r in requests] == ["a", "b", "c"]
    assert requests[1].body == {"contents": CONTENTS, "model": "gemini-2.5-flash"}


def test_the_plain_form_works_with_a_model_option(tmp_path: Path) -> None:
    """`{custom_id, body}` with the model from --model."""
    path = write_lines(tmp_path / "in.jsonl", [{"custom_id": "p1", "body": {"contents": CONTENTS}}])
    (request,) = iter_requests(path, provider="gemini", model="gemini-2.5-pro")
    assert request.custom_id == "p1" and request.body["model"] == "gemini-2.5-pro"
    assert errors_of(path) == [f"{path}:1: no model: set body.model on the line or pass --model"]


def test_every_bad_line_is_listed_with_its_number(tmp_path: Path) -> None:
    """Duplicates, missing contents, empty parts, other vendors' forms, a bad key, a model
    that differs: all reported at once, by line."""
    path = write_lines(
        tmp_path / "in.jsonl",
        [
            gem("a"),
            gem("a"),
            {"key": "b", "request": {}},
            {"key": "c", "request": {"contents": [{"role": "user", "parts": []}]}},
            oai("d"),
            ant("e"),
            {"key": 7, "request": {"contents": CONTENTS}},
            gem("f", model="gemini-2.0-flash"),
            "{broken",
        ],
    )
    errors = errors_of(path, model="gemini-2.5-flash")
    assert errors[:-1] == [
        f"{path}:2: duplicate custom_id 'a' (first seen on line 1)",
        f"{path}:3: request.contents must be a non-empty array of Content objects",
        f"{path}:4: request.contents[0].parts must be a non-empty array",
        f"{path}:5: this is an OpenAI batch line (method/url); use --provider openai"
        " or the plain form {custom_id, body}",
        f"{path}:6: this is an Anthropic batch line (params); use --provider anthropic"
        " or the plain form {custom_id, body}",
        f"{path}:7: key must be a string, got a number",
        f"{path}:8: model 'gemini-2.0-flash' differs from 'gemini-2.5-flash' (--model);"
        " one job has one model",
    ]
    assert errors[-1].startswith(f"{path}:9: not valid JSON")


def test_a_gemini_line_under_another_provider_says_which_to_use(tmp_path: Path) -> None:
    """A `{key, request}` line with --provider openai names --provider gemini."""
    path = write_lines(tmp_path / "in.jsonl", [gem("a")])
    with pytest.raises(InputError) as info:
        validate_file(path, provider="openai", model="gpt-4o-mini")
    assert "use --provider gemini" in str(info.value.errors[0])


def test_wire_sizes_bound_the_uploaded_file(tmp_path: Path) -> None:
    """The shard plan's bytes are an upper bound on the input file the adapter builds
    (the body's own `model` is not sent), within that field's length a line."""
    path = write_lines(tmp_path / "in.jsonl", [gem(f"k{i}", x="é" * i) for i in range(50)])
    summary = validate_file(path, provider="gemini", model="gemini-2.5-flash")
    tag = batch_tag("k:shard0:attempt1")
    requests = list(iter_requests(path, provider="gemini", model="gemini-2.5-flash"))
    spec = CreateSpec(
        "k:shard0:attempt1",
        tag,
        summary.model,
        summary.endpoint,
        [WireRequest(f"{tag}-{r.seq}", r.body) for r in requests],
    )
    built = len(build_input(spec))
    overhead = len(',"model":"gemini-2.5-flash"')
    assert built <= summary.wire_bytes == built + overhead * len(requests)
