"""The OCR training scripts: rendering, scoring, cutting labelled lines, and a TensorFlow smoke run."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bench import ocr_vs_tesseract
from training import ocr as training
from training import ocr_distort, ocr_eval, ocr_evalsets, ocr_fixtures, ocr_peers, ocr_render

DATA = Path(__file__).parents[1] / "data" / "ocr"


def test_edit_distance():
    assert ocr_eval.edit_distance("(253)36", "(253)36") == 0
    assert ocr_eval.edit_distance("(253)36", "(253)86") == 1
    assert ocr_eval.edit_distance("", "abc") == 3
    assert ocr_eval.edit_distance("*11*", "*1*") == 1


def test_score_lines_counts_missing_and_extra_lines():
    scored = ocr_eval.score_lines([["123", "456"], ["789"]], [["123", "450"], ["789", "noise"]])
    assert scored["lines"] == 3 and scored["exact_lines"] == 2
    assert scored["char_accuracy"] == pytest.approx(100 * (1 - 6 / 9))


def test_generated_lines_use_the_charset_and_the_54_glyph_layout():
    rng = np.random.default_rng(0)
    for _ in range(200):
        text = ocr_render.random_text(rng)
        assert set(text) <= set(ocr_render.CHARSET + " ")
    assert len(ocr_fixtures.EXAMPLE_54.replace(" ", "")) == 54
    assert len(ocr_fixtures.EXAMPLE_53.replace(" ", "")) == 53
    line = ocr_render.payment_line(rng)
    assert line.startswith("(253)") and line.endswith("*")


def test_labelled_lines_cut_into_their_characters():
    """The committed renders, cut by the serving segmentation, give one glyph per character."""
    rows = training.load_lines_dir(DATA / "lines")
    assert len(rows) >= 10
    for image, lines in rows:
        xs, ys, good = training.glyphs_from_image(image, lines)
        assert good == len(lines)
        assert len(xs) == len(ys) == sum(len(t.replace(" ", "")) for t in lines)


def test_render_with_installed_fonts():
    try:
        fonts = ocr_render.find_fonts("/usr/share/fonts", [ocr_render.MAIN_FONT])
    except SystemExit:
        pytest.skip("fonts-ocr-b is not installed")
    rng = np.random.default_rng(1)
    image = ocr_render.render(
        [ocr_fixtures.EXAMPLE_54], fonts[ocr_render.MAIN_FONT], ocr_render.degraded_style(rng), rng
    )
    assert image.dtype == np.uint8 and image.ndim == 2 and image.shape[1] > image.shape[0]


@pytest.mark.tensorflow
def test_training_smoke(tmp_path, eager_keras):
    """Cut the committed lines, fit a few steps, export ONNX with its charset, and serve it."""
    pytest.importorskip("tensorflow")
    import keras

    from models.ocr import OcrModel
    from training.export import export_onnx

    xs, ys = [], []
    for image, lines in training.load_lines_dir(DATA / "lines"):
        gx, gy, _ = training.glyphs_from_image(image, lines)
        xs.extend(gx)
        ys.extend(gy)
    x = (np.stack(xs) * 255).astype(np.uint8)
    y = np.asarray(ys)
    model = training.build_model(len(ocr_render.CHARSET))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    batches = training.make_batches(x, y, 64, seed=0)
    model.fit(batches, epochs=1, steps_per_epoch=3, verbose=0)
    model(x[:4, ..., None].astype(np.float32) / 255)
    path = tmp_path / "ocr.onnx"
    export_onnx(model, path, {"charset": ocr_render.CHARSET, "version": "smoke"})
    served = OcrModel("ocr", path)
    assert served.charset == ocr_render.CHARSET
    assert served.onnx.version == "smoke"
    image, lines = training.load_lines_dir(DATA / "lines")[0]
    result = served(image)
    assert len(result["characters"]) == len(lines[0].replace(" ", ""))
    assert isinstance(keras.__version__, str)


def test_card_is_written():
    per = {"per_class": {"0": 99.5, "A": 97.0}}
    row = {
        "description": "d",
        "lines": 10,
        "line_accuracy": 90.0,
        "char_accuracy": 99.0,
        "segmentation": 100.0,
        "ms_per_image": 12.0,
        **per,
    }
    facts = {
        "date": "2025-01-01",
        "images": 10,
        "cut_stats": {"lines": 12, "lines_cut_right": 11},
        "glyphs": 400,
        "n_val": 20,
        "params": 1000,
        "lr": 0.002,
        "batch": 128,
        "epochs": 1,
        "val_accuracy": 90.0,
        "onnx_diff": 1e-6,
        "render_minutes": 1.0,
        "train_minutes": 1.0,
        "total_minutes": 2.0,
        "machine": "test",
        "heldout": {"clean-300dpi-ocrb": row},
        "bench": None,
        "command": "python -m training.ocr",
        "data": "fonts",
    }
    text = training.card_text(facts)
    assert "clean-300dpi-ocrb" in text and "python -m training.ocr" in text and "2025-01-01" in text
    assert "Not kept" not in text
    tried = {"what": "a run.", "kept": [1, 2], "runs": [{"name": "run B", "dev": [2, 0]}], "note": "n."}
    text = training.card_text({**facts, "tried": tried})
    assert "Not kept (2026-12): a run." in text and "this model\n1 / 2 (3); run B 2 / 0 (2)." in text


def test_parse_args_defaults():
    args = training.parse_args([])
    assert isinstance(args, argparse.Namespace)
    assert args.data == "/usr/share/fonts" and args.threads == 2
    assert args.o_weight == 1.0


@pytest.mark.tensorflow
def test_class_weights_weigh_each_glyph_by_its_class():
    pytest.importorskip("keras")
    o, zero = ocr_render.CHARSET.index("O"), ocr_render.CHARSET.index("0")
    x = np.zeros((10, 32, 32), np.uint8)
    y = np.array([o, zero] * 5)
    weights = np.ones(len(ocr_render.CHARSET) + 1, np.float32)
    weights[o] = 8.0
    xb, yb, wb = training.make_batches(x, y, 4, seed=0, weights=weights)[0]
    assert xb.shape == (4, 32, 32, 1) and len(yb) == len(wb) == 4
    assert np.array_equal(wb, np.where(yb == o, 8.0, 1.0))
    assert len(training.make_batches(x, y, 4, seed=0)[0]) == 2  # unweighted: glyphs and labels only


def test_bench_runs_tesseract_on_a_line():
    """The peer comparison's Tesseract call (psm 7, whitelist) reads a clean committed line."""
    if ocr_peers.tesseract_version() is None:
        pytest.skip("tesseract-ocr is not installed")
    image, lines = training.load_lines_dir(DATA / "lines")[0]
    read = ocr_peers.tesseract_read(image)
    assert ocr_eval.edit_distance(read.replace(" ", ""), lines[0].replace(" ", "")) <= 5


def test_peer_answers_are_folded_and_joined():
    """RapidOCR's full-width brackets and asterisks fold to ours; boxes join into lines, left to right."""
    from bench.ocr_rapidocr_worker import join_boxes

    assert ocr_peers.fold("（253）36＊11＊") == "(253)36*11*"
    box = lambda x, y: [[x, y], [x + 50, y], [x + 50, y + 20], [x, y + 20]]  # noqa: E731
    assert join_boxes([box(100, 2), box(0, 0), box(0, 40)], ["B", "A", "C"]) == "A B\nC"


def test_bench_table_has_every_reader():
    row = {"line_accuracy": 50.0, "char_accuracy": 90.0, "ms_per_image": 12.0}
    result = {
        "peers": ["tesseract", "rapidocr"],
        "tesseract": "tesseract 5.3.0",
        "rapidocr": "rapidocr 3.10.0",
        "sets": {"photo-ocrb": {"lines": 3, "ours": row, "tesseract": row, "rapidocr": row}},
    }
    table = ocr_vs_tesseract.to_markdown(result)
    assert "RapidOCR: exact" in table and "| photo-ocrb | 3 |" in table


def test_evaluation_sets_keep_their_fonts_out_of_training():
    assert not set(ocr_evalsets.EVAL_FONTS) & set(ocr_render.TRAIN_FONTS)
    assert not set(ocr_evalsets.NEIGHBOUR_FONTS) & {*ocr_render.TRAIN_FONTS, *ocr_render.CONTEXT_FONTS}


def test_evaluation_lines_are_valid_gs1():
    """The evaluation generator's own check digits agree with models.gs1."""
    from models import gs1

    rng = np.random.default_rng(3)
    for _ in range(50):
        line = ocr_evalsets.document_line(rng)
        fields = gs1.parse(line)
        assert fields["253"]["check_digit"]["valid"] is True, line
        assert set(ocr_evalsets.element_string(rng)) <= set(ocr_render.CHARSET)


def test_evaluation_sets_and_context_renders(tmp_path):
    try:
        ocr_render.find_fonts("/usr/share/fonts", [*ocr_evalsets.EVAL_FONTS, *ocr_evalsets.NEIGHBOUR_FONTS])
        fonts = ocr_render.find_fonts("/usr/share/fonts", [ocr_render.MAIN_FONT, *ocr_render.CONTEXT_FONTS])
    except SystemExit:
        pytest.skip("the evaluation fonts are not installed")
    sets = ocr_evalsets.evaluation_sets("/usr/share/fonts", n=2, seed=5)
    assert [s.name for s in sets] == list(ocr_evalsets.SPECS)
    assert all(len(s.images) == 2 and s.images[0].dtype == np.uint8 for s in sets)
    rng = np.random.default_rng(2)
    style = ocr_distort.augment(
        ocr_render.degraded_style(rng), rng, [fonts[n] for n in ocr_render.CONTEXT_FONTS]
    )
    style = replace(style, context=(0.0, 0.5, 0.1, 0.5), curve=0.3, keystone=1.1, shear=0.05)
    style = replace(style, context_font=str(fonts[ocr_render.CONTEXT_FONTS[0]]))
    image = ocr_render.render([ocr_fixtures.EXAMPLE_54], fonts[ocr_render.MAIN_FONT], style, rng)
    plain = ocr_render.render([ocr_fixtures.EXAMPLE_54], fonts[ocr_render.MAIN_FONT], ocr_render.Style(), rng)
    assert image.shape[0] > plain.shape[0]  # the other print above and below makes the band taller


RESERVED_FAMILIES = ("JetBrainsMono", "Courier Prime", "FiraCode", "mononoki")
NEIGHBOUR_FAMILIES = ("DejaVuSerif", "LiberationSerif", "FreeSerif", "Tinos")


def test_no_weight_of_a_reserved_family_is_trained_on():
    """Other weights of the unseen and out-of-collection families would leak their shapes into training."""
    for name in ocr_render.TRAIN_FONTS:
        assert not name.startswith(RESERVED_FAMILIES + NEIGHBOUR_FAMILIES), name
    for name in ocr_render.CONTEXT_FONTS:
        assert not name.startswith(RESERVED_FAMILIES + NEIGHBOUR_FAMILIES), name
    for held in ocr_render.HELDOUT_FONTS:
        assert held.startswith(RESERVED_FAMILIES)


def test_dev_sets_draw_training_fonts_only():
    assert set(ocr_eval.DEV_FONTS) <= set(ocr_render.TRAIN_FONTS) - {ocr_render.MAIN_FONT}
    assert set(ocr_eval.DEV_CONTEXT_FONTS) <= set(ocr_render.CONTEXT_FONTS)


def test_generalization_sets_draw_faces_nothing_else_uses():
    """Their faces are in no training, held-out, development or out-of-collection list, nor of a family there."""
    gen = (*ocr_eval.GEN_FONTS, *ocr_eval.GEN_CONTEXT_FONTS)
    used = {
        *ocr_render.TRAIN_FONTS,
        *ocr_render.CONTEXT_FONTS,
        *ocr_render.HELDOUT_FONTS,
        *ocr_evalsets.EVAL_FONTS,
        *ocr_evalsets.NEIGHBOUR_FONTS,
    }
    families = {name.split("-")[0].split(".")[0].lower() for name in used}
    for name in gen:
        assert name not in used, name
        assert name.split("-")[0].split(".")[0].lower() not in families, name


def test_generalization_sets_render(tmp_path):
    try:
        sets = ocr_eval.generalization_sets("/usr/share/fonts", n=2)
    except SystemExit as missing:  # fonts not installed (make system-deps installs them)
        pytest.skip(str(missing))
    assert [s.name for s in sets] == ["gen-fonts", "gen-context"]
    for s in sets:
        assert len(s.images) == len(s.lines) == 2
        assert all(image.ndim == 2 and image.size > 0 for image in s.images)


def test_lookalike_lines_put_letters_among_digits():
    rng = np.random.default_rng(4)
    lines = [ocr_render.lookalike_line(rng) for _ in range(100)]
    assert all(set(line) <= set(ocr_render.CHARSET + " ") for line in lines)
    groups = [g for line in lines for g in line.split(" ")]
    mixed = [g for g in groups if any(c.isdigit() for c in g) and any(c.isalpha() for c in g)]
    assert len(mixed) > len(groups) / 2
    assert sum(line.count("O") for line in lines) > sum(line.count("A") for line in lines)


def test_rules_are_slanted_or_level_and_reach_the_glyph_tops():
    rng = np.random.default_rng(5)
    rows, cap = np.arange(100, 140), 40.0
    tops, slanted = [], 0
    for _ in range(200):
        image, top, left = ocr_distort._rule(600, rows, cap, rng)
        assert image.max() == 1.0 and 0 <= left <= 600 - image.shape[1]
        ink_rows = np.flatnonzero(image.max(axis=1) > 0)
        slanted += ink_rows.size > int(cap * 0.1) + 1
        tops.append(top + ink_rows[-1])
    assert slanted > 40  # about half are slanted
    assert any(bottom > rows[0] for bottom in tops)  # some cross into the glyphs' tops
    assert any(t > rows[-1] for t in tops)  # some lie under the block


def test_training_augmentation_draws_the_new_rules_and_dev_sets_the_old():
    rng = np.random.default_rng(6)
    styles = [ocr_distort.augment(ocr_render.Style(), rng, [Path("font.ttf")]) for _ in range(50)]
    assert {s.rules for s in styles if s.context} == {"any"}
    assert {s.rules for s in styles if not s.context} == {"level"}
    assert ocr_render.Style().rules == "level"


def test_fine_tuning_and_no_eval_flags():
    args = training.parse_args(["--init", "models/ocr.keras", "--no-eval"])
    assert args.init == "models/ocr.keras" and args.no_eval
    assert training.parse_args([]).init is None
