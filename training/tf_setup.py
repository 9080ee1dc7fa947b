"""TensorFlow set-up shared by the training scripts: thread limits and the random seed."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def limit_threads(intra: int, inter: int = 1) -> None:
    """Cap TensorFlow's thread pools (the build machine's cores are shared by every job).

    TensorFlow only accepts this before its runtime starts; in a process that already ran
    TensorFlow (a test session, a notebook) the existing pools are kept, with a log line.
    """
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:
        log.info("TensorFlow is already initialised; keeping its thread pools")


def configure(threads: int, seed: int) -> None:
    """Limit TensorFlow to `threads` intra-op threads and seed Python, NumPy and Keras."""
    import keras

    limit_threads(threads)
    keras.utils.set_random_seed(seed)
