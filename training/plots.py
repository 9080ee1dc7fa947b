"""The plots a model card shows: the held-out confusion matrix and the training curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    """Return matplotlib's pyplot drawing to files only (no display on a build machine)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _whole_epochs(ax) -> None:
    """Tick the epoch axis at whole epochs only."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    """Return the n x n confusion matrix, rows true classes, columns predictions."""
    matrix = np.zeros((n, n), np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def plot_confusion(
    matrix: np.ndarray,
    labels: list[str],
    path: Path,
    title: str,
    *,
    xlabel: str = "predicted",
    ylabel: str = "true",
) -> None:
    """Save the confusion matrix, shaded by share of each true class, with the count in every non-zero cell."""
    plt = _pyplot()
    n = len(labels)
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    side = max(6.4, 0.45 * n)
    fig, ax = plt.subplots(figsize=(side, side * 0.9), dpi=90)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    small = n > 12
    ax.set_xticks(
        range(n), labels, rotation=70 if small else 0, ha="right" if small else "center", fontsize=8
    )
    ax.set_yticks(range(n), labels, fontsize=8)
    for (i, j), count in np.ndenumerate(matrix):
        if count:
            colour = "white" if share[i, j] > 0.5 else "black"
            ax.text(j, i, str(count), ha="center", va="center", fontsize=6 if small else 8, color=colour)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_curves(history: dict[str, list[float]], path: Path, *, accuracy: str = "accuracy") -> None:
    """Save loss (log scale) and accuracy (%) per epoch, training beside validation."""
    plt = _pyplot()
    epochs = np.arange(1, len(history["loss"]) + 1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=90)
    for ax, key, scale in ((left, "loss", 1), (right, "accuracy", 100)):
        ax.plot(epochs, scale * np.asarray(history[key]), label="train (augmented)")
        ax.plot(epochs, scale * np.asarray(history[f"val_{key}"]), label="validation")
        ax.set_xlabel("epoch")
        _whole_epochs(ax)
        ax.grid(alpha=0.3)
        ax.legend()
    left.set_ylabel("loss")
    left.set_yscale("log")
    right.set_ylabel(f"{accuracy} (%)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
