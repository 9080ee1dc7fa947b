"""Glyphs called other print and kept on the line's pitch (models.ocr_rescue): GS1 syntax limits them."""

from __future__ import annotations

import numpy as np

from models.ocr import DEFAULT_CHARSET, OcrModel
from models.ocr_line import Glyph
from models.ocr_rescue import breaks_syntax
from models.ocr_segment import Segmentation

REJECT = len(DEFAULT_CHARSET)


def rejecting_model() -> OcrModel:
    """An OcrModel with the default charset and a reject class, without an ONNX file (postprocess only)."""
    model = OcrModel.__new__(OcrModel)
    model.charset, model.reject = DEFAULT_CHARSET, True
    model.digit_index = np.arange(10)
    return model


def read(text: str, rescued: dict[int, str]) -> str:
    """Read one line of glyphs on a 20 px pitch; glyphs in `rescued` are other print 0.6, their char 0.35."""
    image = np.zeros((32, 32), np.float32)
    seg = Segmentation(size=(2000, 100))
    seg.lines = [[Glyph(20 * i, 40, 20 * i + 12, 60, image) for i in range(len(text))]]
    probs = np.eye(REJECT + 1, dtype=np.float32)[[DEFAULT_CHARSET.index(c) for c in text]]
    for k, char in rescued.items():
        probs[k] = 0.0
        probs[k, REJECT], probs[k, DEFAULT_CHARSET.index(char)] = 0.6, 0.35
    return rejecting_model().postprocess(probs, seg)["lines"][0]["text"]


def test_a_rescued_glyph_that_breaks_gs1_syntax_is_dropped():
    """Past the key's closing asterisk, before the first AI, or a bracket outside an AI: not kept."""
    assert read("(17)261200*7*-", {13: "-"}) == "(17)261200*7*"
    assert read("3(17)261200*7*", {0: "3"}) == "(17)261200*7*"
    assert read("(17)26()1200", {6: "(", 7: ")"}) == "(17)261200"
    # Inside the syntax, or on a line without AIs, the rescue keeps the glyph.
    assert read("(17)261200*7*", {12: "*"}) == "(17)261200*7*"
    assert read("(17)261200(10)AB", {10: "("}) == "(17)261200(10)AB"
    assert read("AB12*7*-", {7: "-"}) == "AB12*7*-"


def test_breaks_syntax_needs_an_ai():
    assert breaks_syntax(list("(01)12)"), 6)
    assert not breaks_syntax(list("0112)"), 4)
    assert not breaks_syntax(list("(3902)12"), 5)


def test_a_rescued_glyph_where_the_key_asterisk_belongs_is_one(monkeypatch):
    """The key's closing asterisk called other print and likelier '-': read as the asterisk it must be."""
    assert read("(17)261200*20-", {13: "-"}) == "(17)261200*20*"
    assert read("(17)261200-1*", {10: "-"}) == "(17)261200*1*"
    # Not past a closed key, nor on a line without AIs.
    assert read("(17)261200*20*-", {14: "-"}) == "(17)261200*20*"
    assert read("AB12*7-", {6: "-"}) == "AB12*7-"
    monkeypatch.setattr("models.ocr_rescue.KEY_STAR", False)
    assert read("(17)261200*20-", {13: "-"}) == "(17)261200*20-"
