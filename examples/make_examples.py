"""Write the example request files, deterministically (same bytes on every run).

    python examples/make_examples.py [OUTPUT_DIR]      # default: this folder

- requests-openai.jsonl: 300 OpenAI batch lines, "summarise this paragraph"
  with gpt-4o-mini on /v1/chat/completions.
      kiln validate examples/requests-openai.jsonl --provider openai
- requests-plain.jsonl: 40 plain lines {custom_id, body} without a model, for
  either vendor (the model comes from --model; max_tokens is set for Anthropic).
      kiln validate examples/requests-plain.jsonl --provider anthropic --model claude-haiku-4-5
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

SUBJECTS = [
    "The harbour town",
    "A small research team",
    "The old railway line",
    "The city council",
    "A family bakery",
    "The river delta",
    "The night shift at the hospital",
    "A volunteer orchestra",
    "The mountain observatory",
    "The local football club",
]
ACTIONS = [
    "spent three years rebuilding",
    "quietly doubled the size of",
    "argued for months about",
    "found an unexpected use for",
    "lost most of its funding for",
    "opened its doors again to",
    "kept careful records of",
    "slowly changed the character of",
]
OBJECTS = [
    "the winter market",
    "a flooded archive of letters",
    "the footbridge over the canal",
    "an abandoned glasshouse",
    "the morning ferry",
    "a collection of weather logs",
    "the school's music room",
    "a disused signal box",
]
CODAS = [
    "Nobody expected it to last.",
    "Visitors now come from two regions away.",
    "The costs were higher than anyone admitted at the time.",
    "Most residents say it was worth the trouble.",
    "The work is still unfinished.",
    "A second phase is planned for next spring.",
]
INSTRUCTION = "Summarise this paragraph in one sentence of at most 25 words."


def paragraph(rng: random.Random) -> str:
    sentences = [
        f"{rng.choice(SUBJECTS)} {rng.choice(ACTIONS)} {rng.choice(OBJECTS)}."
        for _ in range(rng.randint(3, 6))
    ]
    sentences.append(rng.choice(CODAS))
    return " ".join(sentences)


def openai_lines(count: int = 300) -> list[dict[str, object]]:
    rng = random.Random(20240601)
    return [
        {
            "custom_id": f"para-{n:04d}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "gpt-4o-mini",
                "messages": [
                    {"role": "system", "content": INSTRUCTION},
                    {"role": "user", "content": paragraph(rng)},
                ],
                "max_tokens": 60,
                "temperature": 0.2,
            },
        }
        for n in range(1, count + 1)
    ]


def plain_lines(count: int = 40) -> list[dict[str, object]]:
    rng = random.Random(20240602)
    return [
        {
            "custom_id": f"note {n}",
            "body": {
                "messages": [{"role": "user", "content": f"{INSTRUCTION}\n\n{paragraph(rng)}"}],
                "max_tokens": 60,
            },
        }
        for n in range(1, count + 1)
    ]


def write(path: Path, lines: list[dict[str, object]]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as out:
        for line in lines:
            out.write(json.dumps(line, ensure_ascii=False) + "\n")


def main(argv: list[str]) -> None:
    out = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent
    out.mkdir(parents=True, exist_ok=True)
    write(out / "requests-openai.jsonl", openai_lines())
    write(out / "requests-plain.jsonl", plain_lines())
    print(f"wrote {out / 'requests-openai.jsonl'} and {out / 'requests-plain.jsonl'}")


if __name__ == "__main__":
    main(sys.argv)
