"""The nose tracker's data: faces_96.npz crops and landmarks, the identity-disjoint split, augmentation.

See training/tracking.py for where the data comes from and how the split is made; the test
fixtures (tests/data/tracking) are written from its held-out part by `write_fixtures`.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import cv2
import numpy as np

SIZE = 96
# Landmarks regressed: the nose tip first (the one served), then a few points whose geometry
# helps the network place it; the eye corners also give the inter-ocular normaliser.
KEYPOINTS = (30, 27, 33, 36, 45, 39, 42, 48, 54, 8)
# Denser supervision (`--points 68`): every landmark, the nose tip still first.
ALL_POINTS = (30, *(k for k in range(68) if k != 30))
# Where each 68-point landmark goes under a horizontal flip (left and right swap; iBUG order).
_MIRROR = (
    [(i, 16 - i) for i in range(8)]
    + [(17, 26), (18, 25), (19, 24), (20, 23), (21, 22), (31, 35), (32, 34)]
    + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]
    + [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58), (60, 64), (61, 63), (65, 67)]
)
FLIP_PAIRS = {**dict(_MIRROR), **{b: a for a, b in _MIRROR}}


def flip_order(keypoints: tuple[int, ...]) -> list[int]:
    """Return, for each keypoint, the index of the keypoint it becomes in the mirrored image."""
    return [keypoints.index(FLIP_PAIRS.get(k, k)) for k in keypoints]


FLIP_ORDER = flip_order(KEYPOINTS)
NOSE = 0
LEFT_EYE_OUTER, RIGHT_EYE_OUTER = 36, 45
SOURCE_KEYS = ("udacity_train", "udacity_test", "helen_train", "helen_test")


def identity(name: str, source: int) -> str:
    """Return the group a sample belongs to: a person (Udacity) or a photo (HELEN)."""
    stem = Path(name).stem
    if source in (0, 1):
        return "ytf:" + re.sub(r"_\d+$", "", stem)
    return "helen:" + stem.rsplit("_", 1)[0]


def bucket(group: str) -> int:
    """Return a stable 0..9 bucket for a group name."""
    return int(hashlib.sha1(group.encode()).hexdigest(), 16) % 10


def split_indices(names: np.ndarray, source: np.ndarray) -> dict[str, np.ndarray]:
    """Split into identity-disjoint train / val / test index arrays."""
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for i, (name, src) in enumerate(zip(names, source, strict=True)):
        src = int(src)
        b = bucket(identity(str(name), src))
        if src == 3 or (src in (0, 1) and b == 0):
            parts["test"].append(i)
        elif b == 1:
            parts["val"].append(i)
        else:
            parts["train"].append(i)
    return {k: np.array(v, dtype=np.int64) for k, v in parts.items()}


COLLECTIONS = {"udacity": (0, 1), "helen": (2, 3)}


def collection_split(
    split: dict[str, np.ndarray], source: np.ndarray, train_on: str
) -> dict[str, np.ndarray]:
    """Keep train and validation to one collection; the test is every face of the other one.

    Leave-one-collection-out: a model trained this way has never seen the other collection's
    photographers, cameras, annotators or crop recipe, so its error there is an out-of-collection figure.
    """
    mine = np.isin(source, COLLECTIONS[train_on])
    return {
        "train": split["train"][mine[split["train"]]],
        "val": split["val"][mine[split["val"]]],
        "test": np.flatnonzero(~mine),
    }


def load_data(path: Path) -> dict[str, np.ndarray]:
    """Load the face crops and their landmarks."""
    with np.load(path) as d:
        data = {k: d[k] for k in ("images", "landmarks68", "source", "names")}
    if data["images"].shape[1:] != (SIZE, SIZE):
        raise SystemExit(f"{path}: expected {SIZE}x{SIZE} crops, got {data['images'].shape[1:]}")
    return data


def interocular(landmarks68: np.ndarray) -> np.ndarray:
    """Return the outer-eye-corner distance of each face."""
    return np.linalg.norm(landmarks68[:, LEFT_EYE_OUTER] - landmarks68[:, RIGHT_EYE_OUTER], axis=1)


def augment(
    images: np.ndarray,
    points: np.ndarray,
    rng: np.random.Generator,
    strength: float = 1.0,
    order: list[int] | None = None,
    wild: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Return randomly flipped, warped and photometrically changed copies of crops and points.

    `strength` scales every range and probability but the flip's (1 = full, 0.5 = mild); `order`
    is the points' flip order (FLIP_ORDER by default). `wild` adds what in-the-wild photos have
    and the training crops lack (see `wild_pose` and `wild_photometry`).
    """
    order = FLIP_ORDER if order is None else order
    k = strength
    n = len(images)
    out = np.empty((n, SIZE, SIZE), np.float32)
    pts_out = np.empty_like(points)
    c = (SIZE - 1) / 2
    for i in range(n):
        img = images[i]
        pts = points[i].copy()
        if rng.random() < 0.5:
            img = img[:, ::-1]
            pts[:, 0] = SIZE - 1 - pts[:, 0]
            pts = pts[order]
        # Scale and shift ranges cover the spread between a face detector's box and the training
        # crop (BlazeFace: crop side / box width p10-p90 1.79-2.61 around 2.14, i.e. 0.84-1.22x),
        # so detected crops look like training ones.
        scale = np.exp(rng.uniform(k * np.log(0.82), k * np.log(1.22)))
        angle = rng.uniform(-18 * k, 18 * k) if rng.random() < 0.8 else 0.0
        tx, ty = rng.uniform(-8 * k, 8 * k, size=2)
        if wild:
            angle = rng.uniform(-30 * k, 30 * k) if rng.random() < 0.8 else 0.0
        m = cv2.getRotationMatrix2D((c, c), angle, scale)
        if wild:
            m = wild_pose(m, c, rng, k)
        m[:, 2] += (tx, ty)
        border = cv2.BORDER_CONSTANT if rng.random() < 0.5 else cv2.BORDER_REPLICATE
        img = cv2.warpAffine(
            np.ascontiguousarray(img), m, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=border
        )
        pts = pts @ m[:, :2].T + m[:, 2]
        if rng.random() < 0.2 * k:  # low-resolution faces (small in a webcam frame)
            f = rng.uniform(0.35, 0.8)
            small = cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
            img = cv2.resize(small, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
        if rng.random() < 0.3 * k:
            img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 1.5))
        if wild:
            img = wild_blur(img, rng, k)
        x = img.astype(np.float32)
        if wild:
            x = wild_photometry(x, rng, k, images)
        contrast = rng.uniform(1 - 0.45 * k, 1 + 0.45 * k)
        x = (x - x.mean()) * contrast + x.mean() + rng.uniform(-45 * k, 45 * k)
        if rng.random() < 0.3 * k:
            gamma = rng.uniform(0.7, 1.4)
            x = 255.0 * (np.clip(x, 0, 255) / 255.0) ** gamma
        if rng.random() < 0.35 * k:
            x = x + rng.normal(0, rng.uniform(2, 10), size=x.shape)
        x = np.clip(x, 0, 255)
        if rng.random() < 0.2 * k:  # webcam frames arrive as JPEG
            ok, buf = cv2.imencode(
                ".jpg", x.astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 90))]
            )
            x = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE).astype(np.float32)
        out[i] = x
        pts_out[i] = pts
    return out[..., None], pts_out


def wild_pose(m: np.ndarray, c: float, rng: np.random.Generator, k: float) -> np.ndarray:
    """Compose a rotation-scale matrix with an anisotropic squeeze and shear about the centre.

    A face turned or tilted away from the camera is foreshortened along one axis; the training
    faces are near-frontal (YouTube Faces, HELEN), so this stands in for yaw and pitch.
    """
    sx = np.exp(rng.uniform(k * np.log(0.82), k * np.log(1.18)))
    sh = rng.uniform(-0.12 * k, 0.12 * k)
    a = np.array([[sx, sh], [0.0, 1.0 / np.sqrt(sx)]]) @ m[:, :2]
    return np.hstack([a, (np.array([c, c]) - a @ np.array([c, c]))[:, None]]).astype(np.float64)


def wild_blur(img: np.ndarray, rng: np.random.Generator, k: float) -> np.ndarray:
    """Motion blur along a random direction (hand-held phones, moving heads)."""
    if rng.random() >= 0.15 * k:
        return img
    length = int(rng.integers(3, 10))
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.0 / length
    rot = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), rng.uniform(0, 180), 1.0)
    kernel = cv2.warpAffine(kernel, rot, (length, length))
    return cv2.filter2D(img, -1, kernel / max(kernel.sum(), 1e-6))


def wild_photometry(x: np.ndarray, rng: np.random.Generator, k: float, pool: np.ndarray) -> np.ndarray:
    """Uneven light (a ramp across the face, a hard shadow) and occluders (patches over the face).

    Occluders are rectangles or ellipses of flat gray, noise, or a patch of another training crop
    (hair, hands, other faces), each 12-40 % of the side, anywhere, the nose included: the labels
    stay, so the net learns to place an occluded nose from the rest of the face.
    """
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / (SIZE - 1) - 0.5
    if rng.random() < 0.4 * k:
        theta = rng.uniform(0, 2 * np.pi)
        ramp = np.cos(theta) * xx + np.sin(theta) * yy
        x = x * (1 + rng.uniform(0.4, 1.4) * k * ramp)
    if rng.random() < 0.15 * k:  # a hard shadow edge
        theta = rng.uniform(0, 2 * np.pi)
        side = (np.cos(theta) * xx + np.sin(theta) * yy) > rng.uniform(-0.25, 0.25)
        x = np.where(side, x * rng.uniform(0.35, 0.7), x)
    for _ in range(int(rng.random() < 0.5 * k) + int(rng.random() < 0.15 * k)):
        w, h = (rng.uniform(0.12, 0.4, size=2) * SIZE).astype(int) + 1
        x0, y0 = int(rng.integers(-w // 3, SIZE - 2 * w // 3)), int(rng.integers(-h // 3, SIZE - 2 * h // 3))
        mask = np.zeros((SIZE, SIZE), np.uint8)
        if rng.random() < 0.5:
            cv2.rectangle(mask, (x0, y0), (x0 + w, y0 + h), 1, -1)
        else:
            cv2.ellipse(
                mask, (x0 + w // 2, y0 + h // 2), (w // 2, h // 2), rng.uniform(0, 180), 0, 360, 1, -1
            )
        kind = rng.random()
        if kind < 0.35:
            fill = np.full((SIZE, SIZE), rng.uniform(0, 255), np.float32)
        elif kind < 0.55:
            fill = rng.uniform(0, 255) + rng.normal(0, rng.uniform(5, 40), (SIZE, SIZE)).astype(np.float32)
        else:
            other = pool[int(rng.integers(len(pool)))].astype(np.float32)
            fill = np.roll(other, (int(rng.integers(SIZE)), int(rng.integers(SIZE))), axis=(0, 1))
        x = np.where(mask.astype(bool), fill, x)
    return x


def write_fixtures(
    data: dict, test_idx: np.ndarray, out_dir: Path, per_source: int = 20, seed: int = 7
) -> None:
    """Write a few held-out crops (PNG) with their landmarks, plus two webcam-like frames."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for src in (1, 0, 3):  # held-out Udacity identities come from both Udacity CSVs
        pool = test_idx[data["source"][test_idx] == src]
        take = per_source // 2 if src in (0, 1) else per_source
        for i in sorted(rng.choice(pool, take, replace=False)):
            name = f"{SOURCE_KEYS[src]}_{i:04d}.png"
            cv2.imwrite(str(out_dir / name), data["images"][i])
            lm = data["landmarks68"][i]
            rows.append(
                {
                    "file": name,
                    "source": SOURCE_KEYS[src],
                    "original": str(data["names"][i]),
                    "nose": [round(float(v), 3) for v in lm[30]],
                    "eye_left_outer": [round(float(v), 3) for v in lm[36]],
                    "eye_right_outer": [round(float(v), 3) for v in lm[45]],
                    "landmarks68": [[round(float(a), 2), round(float(b), 2)] for a, b in lm],
                }
            )
    frames = []
    for k, row in enumerate(rows[:2] if len(rows) >= 2 else rows):
        frames.append(_write_frame(out_dir, row, k, rng))
    (out_dir / "labels.json").write_text(json.dumps({"crops": rows, "frames": frames}, indent=1) + "\n")


def _write_frame(out_dir: Path, row: dict, k: int, rng: np.random.Generator) -> dict:
    """Paste a crop, enlarged, into a 320x240 textured frame (as a webcam frame) and save it."""
    crop = cv2.imread(str(out_dir / row["file"]), cv2.IMREAD_GRAYSCALE)
    scale = 1.6
    side = int(round(SIZE * scale))
    face = cv2.resize(crop, (side, side), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:240, 0:320]
    frame = (90 + 60 * np.sin(xx / 23.0) * np.cos(yy / 31.0) + rng.normal(0, 6, (240, 320))).clip(0, 255)
    x0, y0 = (40, 50) if k == 0 else (150, 40)
    frame[y0 : y0 + side, x0 : x0 + side] = face
    name = f"frame_{k}.jpg"
    cv2.imwrite(str(out_dir / name), frame.astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])

    def place(p):
        return [round((p[0] + 0.5) * scale - 0.5 + x0, 2), round((p[1] + 0.5) * scale - 0.5 + y0, 2)]

    return {
        "file": name,
        "from": row["file"],
        "width": 320,
        "height": 240,
        "face_box": [x0, y0, side, side],
        "nose": place(row["nose"]),
        "eye_left_outer": place(row["eye_left_outer"]),
        "eye_right_outer": place(row["eye_right_outer"]),
    }


def textured_frame(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Return a face-free textured backdrop for pasting faces into."""
    yy, xx = np.mgrid[0:height, 0:width]
    fx, fy = rng.uniform(15, 45, size=2)
    base = 110 + 50 * np.sin(xx / fx) * np.cos(yy / fy) + rng.normal(0, 8, (height, width))
    return base.clip(0, 255).astype(np.uint8)
