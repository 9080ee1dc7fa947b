"""training/doodle_strokes_eval.py: the transcribed strokes load with their source lines, and render as users send them."""

from __future__ import annotations

import io

from PIL import Image

from training import doodle_strokes_eval as dse


def test_every_drawing_has_its_source_line_once():
    records = dse.load_records()
    keys = [(r["word"], int(r["line"])) for r in records]
    assert len(records) >= 48 and len(keys) == len(set(keys))
    assert {("airplane", 0), ("airplane", 1), ("alarm clock", 0)} <= set(keys)
    assert all(
        r["drawing"] and all(len(s) == 2 and len(s[0]) == len(s[1]) for s in r["drawing"]) for r in records
    )


def test_googles_alarm_clock_is_our_clock():
    names = ["cat", "clock", "dog"]
    assert dse.class_of("alarm clock", names) == 1 and dse.class_of("cat", names) == 0


def test_each_condition_renders_a_png_of_its_canvas():
    record = dse.load_records()[0]
    sizes = {c: Image.open(io.BytesIO(dse.render(record, c))).size for c in dse.CONDITIONS}
    assert sizes == {"page": (280, 280), "280/8": (280, 280), "400/12": (400, 400), "600/20": (600, 600)}
