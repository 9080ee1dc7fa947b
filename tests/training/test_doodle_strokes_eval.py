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


def test_split_of_rows_marks_the_excluded_drawings_as_the_training_run_did():
    import numpy as np
    import pytest

    from training.doodles import drop_rows, fixture_keys, stratified_split

    names = (dse.ROOT / "models" / "doodles_labels.txt").read_text(encoding="utf-8").splitlines()
    y = np.repeat(np.arange(24), 40)
    src = np.tile(np.arange(40), 24)
    metrics = {"test_fraction": 0.1, "val_fraction": 0.05, "seed": 7}
    before = dse.split_of_rows(y, src, names, metrics)
    assert set(before) == {"train", "val", "test"}
    tr, va, _ = stratified_split(y, 0.1, 0.05, 7)
    _, (n_train, n_val) = drop_rows((tr, va), y, src, fixture_keys(dse.FIXTURE, names))
    holdout = {"folder": "tests/data/doodles/strokes", "train": n_train, "val": n_val}
    after = dse.split_of_rows(y, src, names, {**metrics, "strokes_holdout": holdout})
    fixture = src < 25  # lines 0-24 of every class
    assert (
        set(after[fixture]) == {"test", "excluded"}
        and (after[fixture] == "excluded").sum() == n_train + n_val
    )
    assert (after[~fixture] == before[~fixture]).all() and ((after == "test") == (before == "test")).all()
    with pytest.raises(ValueError, match="drops"):  # a fixture that changed since the run is caught
        dse.split_of_rows(y, src, names, {**metrics, "strokes_holdout": {**holdout, "train": n_train + 1}})
