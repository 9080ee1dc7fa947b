"""Every model card renders from its metrics to the committed card, figure for figure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training import cards

ROOT = Path(__file__).resolve().parents[2]
FIGURES = Path(__file__).parent / "cards"


def metrics(name: str) -> dict:
    """Return a card's metrics: the run's own when committed, otherwise the card's printed figures."""
    committed = ROOT / "models" / f"{name}_metrics.json"
    path = committed if committed.is_file() else FIGURES / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", ["numbers", "doodles", "ocr", "tracking", "face_detector"])
def test_card_renders_from_its_metrics(name):
    expected = (ROOT / "models" / f"{name}.md").read_text(encoding="utf-8")
    assert cards.card_text(name, metrics(name)) == expected


def test_cli_rewrites_a_card(tmp_path, capsys):
    path = tmp_path / "numbers_metrics.json"
    path.write_text(json.dumps(metrics("numbers")), encoding="utf-8")
    cards.main([str(path)])
    assert (tmp_path / "numbers.md").read_text(encoding="utf-8") == (
        ROOT / "models" / "numbers.md"
    ).read_text(encoding="utf-8")
    assert "numbers.md" in capsys.readouterr().out


def test_figures_stored_under_a_key_rerender_the_card(tmp_path):
    path = tmp_path / "doodles_metrics.json"
    facts = metrics("doodles")
    strokes = facts.pop("strokes_served")
    path.write_text(json.dumps(facts), encoding="utf-8")
    cards.store_figures(path, "strokes_served", strokes)
    assert json.loads(path.read_text(encoding="utf-8"))["strokes_served"] == strokes
    assert (tmp_path / "doodles.md").read_text(encoding="utf-8") == (
        ROOT / "models" / "doodles.md"
    ).read_text(encoding="utf-8")
