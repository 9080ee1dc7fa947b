"""Fixtures for the training smoke tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def eager_keras():
    """Compile every Keras model with run_eagerly=True for the tests of one module.

    Tracing a training step into a graph takes 5-10 s per compile on the 2-core build machine
    (the tracker's two stages compile twice per net); a smoke run takes a handful of steps,
    which run eagerly in about a second. The scripts' code runs the same (same losses).
    """
    keras = pytest.importorskip("keras")
    original = keras.Model.compile

    def compile_eagerly(self, *args, **kwargs):
        return original(self, *args, **{**kwargs, "run_eagerly": True})

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(keras.Model, "compile", compile_eagerly)
        yield
