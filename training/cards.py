"""Model cards: Markdown rendered from a training run's metrics JSON with a template in training/cards/.

A training script writes `<name>_metrics.json` (every figure the card states) and renders
`<name>.md` from it, so a card can be written again from its metrics alone:

    python -m training.cards models/ocr_metrics.json

re-renders models/ocr.md (the model's name is the file name before `_metrics.json`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import textwrap
from pathlib import Path
from typing import Any

TEMPLATES = Path(__file__).with_name("cards")
# Kept together when a paragraph is wrapped: "99.7 %" and "2.142 / 0.014" read as one figure.
NO_BREAK = ((" %", "\u00a0%"), (" / ", "\u00a0/\u00a0"))


def fmt(value: Any, spec: str) -> str:
    """Format a value with a format-spec (`{{ x|fmt(".2f") }}`)."""
    return format(value, spec)


def wrap(text: str, width: int = 96) -> str:
    """Wrap a paragraph at `width` without splitting a figure from its unit."""
    for plain, joined in NO_BREAK:
        text = text.replace(plain, joined)
    lines = textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False)
    return "\n".join(line.replace("\u00a0", " ") for line in lines)


def environment():
    """Return the Jinja environment the cards are rendered with (Markdown: no escaping)."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters.update(fmt=fmt, wrap=wrap)
    env.globals.update(max=max, min=min, len=len, sorted=sorted, isnan=math.isnan)
    return env


def as_json(facts: dict) -> dict:
    """Return the facts as they read back from their JSON file (tuples as lists, keys as strings)."""
    return json.loads(json.dumps(facts, default=str))


def render(name: str, facts: dict, **derived: Any) -> str:
    """Render training/cards/<name>.md.j2 with the facts (as read back from JSON) and derived values."""
    return environment().get_template(f"{name}.md.j2").render({**as_json(facts), **derived})


def write_metrics(path: Path, facts: dict) -> None:
    """Write a run's metrics JSON, the source its card is rendered from."""
    Path(path).write_text(json.dumps(facts, indent=1, default=str) + "\n", encoding="utf-8")


def store_figures(path: Path, key: str, figures: Any) -> None:
    """Put one script's figures under `key` in a card's metrics JSON, then render that card again."""
    path = Path(path)
    metrics = json.loads(path.read_text(encoding="utf-8"))
    metrics[key] = figures
    write_metrics(path, metrics)
    main([str(path)])


def card_text(name: str, facts: dict) -> str:
    """Return a model's card from its metrics, through the training script's own `card_text`."""
    module = importlib.import_module(f"training.{name}")
    return module.card_text(facts)


def main(argv: list[str] | None = None) -> None:
    """Re-render model cards from their metrics JSON files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("metrics", nargs="+", type=Path, help="<name>_metrics.json files")
    parser.add_argument("--card", type=Path, help="card to write (default: <name>.md beside the metrics)")
    args = parser.parse_args(argv)
    for path in args.metrics:
        name = path.name.removesuffix("_metrics.json")
        card = args.card or path.with_name(f"{name}.md")
        card.write_text(card_text(name, json.loads(path.read_text(encoding="utf-8"))), encoding="utf-8")
        print(f"{path} -> {card}")


if __name__ == "__main__":
    main()
