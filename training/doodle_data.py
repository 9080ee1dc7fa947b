"""Quick, Draw! data for the doodle classifier: loading, splits, held-out rows, gallery extras, weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np

IMAGE_SIZE = 28


def load_data(path: Path, per_class: int) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """Load (x uint8 N x 28 x 28, y int, class names, source row index) from an npz or .npy folder."""
    if path.is_dir():
        files = sorted(path.glob("*.npy"), key=lambda f: f.stem)  # "house" before "house plant"
        if not files:
            raise SystemExit(f"no <class>.npy files in {path}")
        xs, ys, src = [], [], []
        names = [f.stem for f in files]
        for label, f in enumerate(files):
            arr = np.load(f, mmap_mode="r")[:per_class]
            xs.append(np.asarray(arr, dtype=np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE))
            ys.append(np.full(len(arr), label, dtype=np.int64))
            src.append(np.arange(len(arr), dtype=np.int64))
        return np.concatenate(xs), np.concatenate(ys), names, np.concatenate(src)
    with np.load(path) as d:
        x = d["x"].reshape(-1, IMAGE_SIZE, IMAGE_SIZE).astype(np.uint8)
        y = d["y"].astype(np.int64)
        names = [str(n) for n in d["class_names"]]
        src = d["src_index"].astype(np.int64) if "src_index" in d.files else np.arange(len(y))
    return x, y, names, src


def limit_per_class(y: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    """Return the indices of at most `limit` random samples of each class."""
    keep = [rng.permutation(np.flatnonzero(y == c))[:limit] for c in np.unique(y)]
    return np.sort(np.concatenate(keep))


def stratified_split(
    y: np.ndarray, test_fraction: float, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split indices into shuffled train / validation / test, the same fractions in every class."""
    rng = np.random.default_rng(seed)
    train, val, test = [], [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = max(1, round(len(idx) * test_fraction))
        n_val = max(1, round(len(idx) * val_fraction))
        test.append(idx[:n_test])
        val.append(idx[n_test : n_test + n_val])
        train.append(idx[n_test + n_val :])
    return tuple(rng.permutation(np.concatenate(part)) for part in (train, val, test))


def fixture_keys(folder: Path, names: list[str]) -> set[tuple[int, int]]:
    """Return (class index, src_index) of every drawing of a strokes fixture (our `clock` = `alarm clock`)."""
    from training.doodle_strokes_eval import class_of, load_records  # cv2, only when a fixture is held out

    return {(class_of(r["word"], names), int(r["line"])) for r in load_records(folder)}


def drop_rows(
    parts: tuple[np.ndarray, ...], y: np.ndarray, src: np.ndarray, keys: set[tuple[int, int]]
) -> tuple[tuple[np.ndarray, ...], list[int]]:
    """Remove from each index array the rows whose (class, src_index) is in `keys`; return them and the counts."""
    held = np.array([(int(c), int(s)) in keys for c, s in zip(y, src, strict=True)], dtype=bool)
    kept = tuple(idx[~held[idx]] for idx in parts)
    return kept, [len(idx) - len(k) for idx, k in zip(parts, kept, strict=True)]


def load_extra(paths: list[Path], names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Load gallery-labelled drawings and turn them into 28x28 bitmaps the way serving does."""
    from models.doodles import to_bitmap
    from training.gallery_export import load_labelled_images  # only needed with --extra

    index = {n: i for i, n in enumerate(names)}
    xs, ys, skipped = [], [], 0
    for path in paths:
        for image, label in load_labelled_images(path):
            if label not in index:
                skipped += 1
                continue
            gray = np.asarray(image.convert("L"), dtype=np.uint8)
            try:
                xs.append(to_bitmap(gray))
            except ValueError:  # an empty canvas carries no drawing
                skipped += 1
                continue
            ys.append(index[label])
    print(f"extra: {len(xs)} labelled drawings added to training, {skipped} skipped (unknown label or empty)")
    if not xs:
        return np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8), np.zeros(0, np.int64)
    return np.stack(xs).astype(np.uint8), np.asarray(ys, dtype=np.int64)


def class_weights(y: np.ndarray, n_classes: int, power: float = 0.5) -> dict[int, float]:
    """Return class weights proportional to n_class ** -power, averaging 1 over the samples.

    power=1 balances the classes fully; 0.5 (the default) gives an 800-drawing class 2.4x the
    weight of a 4500-drawing one instead of 5.6x, which lifts the small classes without making
    the model guess them whenever it is unsure (full balancing sent dogs to "horse").
    """
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    raw = np.maximum(counts, 1) ** -power
    raw *= len(y) / float(np.sum(counts * raw))
    return {i: float(w) for i, w in enumerate(raw)}
