"""Download the training data sets from their public sources, verify them, and lay them out.

    make data                                   # or: python -m training.download_data
    python -m training.download_data --only mnist quickdraw --out data

Writes under --out (default data/), where each training script's --data takes it:

    mnist/mnist.npz              python -m training.numbers --data data/mnist/mnist.npz
    quickdraw/quickdraw_28.npz   python -m training.doodles --data data/quickdraw/quickdraw_28.npz
    quickdraw/labels.txt
    faces/faces_96.npz           python -m training.tracking --data data/faces/faces_96.npz ...

The sources (the model cards say more about each set):
- MNIST: Keras's copy of the official arrays (11 MB), checked against the SHA-256 Keras publishes.
- Quick, Draw!: Google's numpy_bitmap files (CC BY 4.0), only the first 800-4500 drawings of each
  of the 24 classes, fetched with HTTP range requests (48 MB of the 2.5 GB files).
- Faces: two public GitHub repositories at fixed commits, Udacity's facial keypoints data
  (YouTube Faces frames, 68 points each) and the 300-W annotations of HELEN; cropped to 96x96 as
  their provenance says, HELEN's random crops read from training/faces_helen_crops.csv.

Every result is checked against SHA-256 digests of the arrays the committed models were trained
on (computed from those copies): a set that differs in one pixel is refused, naming what differs.
Without internet it stops with a message that says so; --mirror BASE reads every URL from a copy
laid out as BASE/<host>/<path> (file:// or http://), e.g. a machine's offline cache.
"""

from __future__ import annotations

import argparse
import ast
import csv
import hashlib
import io
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from models.files import file_sha256
from training.data_sources import DATASETS, FILES, Faces, Mnist, QuickDraw

SIDE = 96  # the face crops' size
ROW_BYTES = 28 * 28  # one Quick, Draw! bitmap


class DownloadError(RuntimeError):
    """A source could not be read, or what was read is not what the models were trained on."""


def content_sha256(arrays: Mapping[str, np.ndarray]) -> str:
    """Return the SHA-256 of arrays' names, dtypes, shapes and bytes (independent of the .npz zip)."""
    digest = hashlib.sha256()
    for key in sorted(arrays):
        array = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


# --- fetching --------------------------------------------------------------------------------


def mirrored(url: str, mirror: str | None) -> str:
    """Return where to read a URL: itself, or BASE/<host>/<path> under a mirror."""
    if not mirror:
        return url
    parts = urllib.parse.urlsplit(url)
    return f"{mirror.rstrip('/')}/{parts.netloc}{parts.path}"


def open_url(url: str, mirror: str | None, *, first_bytes: int | None = None):
    """Open a URL for reading, or raise DownloadError saying why (no internet, HTTP error)."""
    target = mirrored(url, mirror)
    headers = {"User-Agent": "vision-service training.download_data"}
    if first_bytes is not None:
        headers["Range"] = f"bytes=0-{first_bytes - 1}"  # servers without ranges send it all: fine
    try:
        return urllib.request.urlopen(urllib.request.Request(target, headers=headers), timeout=60)
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"{target}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(
            f"cannot read {target}: {reason}.\nmake data downloads the training data sets from their "
            "public sources and needs internet access (or --mirror with a copy laid out as "
            "BASE/<host>/<path>). Nothing was written for this data set."
        ) from None


def read_all(url: str, mirror: str | None) -> bytes:
    """Download a whole (small) file into memory."""
    with open_url(url, mirror) as response:
        return response.read()


def read_rows(url: str, mirror: str | None, rows: int) -> bytes:
    """Return the bytes of the first `rows` 784-byte rows of a uint8 (N, 784) .npy file."""
    with open_url(url, mirror, first_bytes=4096 + rows * ROW_BYTES) as response:
        start = response.read(8)  # magic, then the format version
        if start[:6] != b"\x93NUMPY":
            raise DownloadError(f"{url} is not a .npy file")
        length = int.from_bytes(response.read(2 if start[6] == 1 else 4), "little")
        meta = ast.literal_eval(response.read(length).decode("latin1"))
        shape = meta.get("shape", ())
        if meta.get("descr") != "|u1" or len(shape) != 2 or shape[1] != ROW_BYTES or shape[0] < rows:
            raise DownloadError(f"{url}: expected a uint8 (N>={rows}, {ROW_BYTES}) array, found {meta}")
        data = response.read(rows * ROW_BYTES)
    if len(data) != rows * ROW_BYTES:
        raise DownloadError(f"{url} ended after {len(data)} of {rows * ROW_BYTES} bytes")
    return data


def extract(url: str, mirror: str | None, wanted: Iterable[str], dest: Path) -> None:
    """Stream a GitHub .tar.gz and write the members under `wanted` folders or names into dest."""
    prefixes = tuple(wanted)
    with open_url(url, mirror) as response, tarfile.open(fileobj=response, mode="r|gz") as archive:
        for member in archive:
            # GitHub archives hold everything under one <repo>-<commit>/ folder.
            name = member.name.split("/", 1)[1] if "/" in member.name else ""
            if not member.isfile() or not name.startswith(prefixes) or ".." in name.split("/"):
                continue
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.extractfile(member) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)


def check(what: str, got: str, expected: str) -> None:
    """Refuse data whose digest is not the expected one."""
    if got != expected:
        raise DownloadError(
            f"{what}: SHA-256 {got}, expected {expected}: not the data the models were trained on"
        )


# --- building each data set ------------------------------------------------------------------


def build_mnist(spec: Mnist, mirror: str | None) -> dict[str, np.ndarray]:
    """Download MNIST and return its four arrays."""
    data = read_all(spec.url, mirror)
    check(spec.url, hashlib.sha256(data).hexdigest(), spec.sha256)
    with np.load(io.BytesIO(data)) as npz:
        return {key: npz[key] for key in ("x_train", "y_train", "x_test", "y_test")}


def build_quickdraw(spec: QuickDraw, mirror: str | None) -> dict[str, np.ndarray]:
    """Download the first rows of each class and return x, y, src_index and class_names."""
    xs, ys, src = [], [], []
    for label, (name, rows, sha256) in enumerate(spec.classes):
        source = spec.source(name)
        url = spec.url.format(name=urllib.parse.quote(source))
        print(
            f"  {name}: first {rows} drawings" + (f" of {source}.npy" if source != name else ""), flush=True
        )
        data = read_rows(url, mirror, rows)
        check(url, hashlib.sha256(data).hexdigest(), sha256)
        xs.append(np.frombuffer(data, np.uint8).reshape(rows, 28, 28))
        ys.append(np.full(rows, label, np.uint8))
        src.append(np.arange(rows, dtype=np.int32))
    names = np.array([name for name, _, _ in spec.classes])
    return {
        "x": np.concatenate(xs),
        "y": np.concatenate(ys),
        "src_index": np.concatenate(src),
        "class_names": names,
    }


def crop_face(image: Image.Image, box: tuple[int, int, int, int], points: np.ndarray):
    """Crop (zero-padded outside the image) and resize to 96x96; map the points into the crop."""
    side = box[2] - box[0]
    crop = image.crop(box)  # PIL fills what lies outside the image with zeros
    # LANCZOS when shrinking, BILINEAR when enlarging (faces_96's provenance).
    method = Image.Resampling.LANCZOS if side > SIDE else Image.Resampling.BILINEAR
    pixels = np.asarray(crop.resize((SIDE, SIDE), method), np.uint8)
    mapped = ((points + 0.5 - np.array(box[:2], np.float64)) * (SIDE / side) - 0.5).astype(np.float32)
    return pixels, mapped


def centre_box(width: int, height: int, points: np.ndarray) -> tuple[int, int, int, int]:
    """The central square of a frame, or the padded square around it when a point falls outside."""
    side = min(width, height)
    x0, y0 = round((width - side) / 2), round((height - side) / 2)
    if (points.min(axis=0) < (x0, y0)).any() or (points.max(axis=0) > (x0 + side - 1, y0 + side - 1)).any():
        side = max(width, height)
        x0, y0 = round((width - side) / 2), round((height - side) / 2)
    return (x0, y0, x0 + side, y0 + side)


def gray(path: Path) -> Image.Image:
    """Open an image as 8-bit gray (RGBA and RGB drop to RGB first, as faces_96 was made)."""
    with Image.open(path) as image:
        return image.convert("RGB").convert("L")


def build_faces(spec: Faces, mirror: str | None, work: Path) -> dict[str, np.ndarray]:
    """Download both archives and return the faces_96 arrays."""
    with open(spec.helen_crops, newline="") as fh:
        helen = [
            (row["file"], tuple(int(row[k]) for k in ("x0", "y0", "x1", "y1"))) for row in csv.DictReader(fh)
        ]
    print("  Udacity facial keypoints (YouTube Faces frames)", flush=True)
    extract(spec.udacity, mirror, ("data/training", "data/test"), work)
    print("  300-W HELEN", flush=True)
    extract(spec.helen, mirror, ("helen/trainset/", "helen/testset/"), work)
    rows: dict[str, list] = {
        k: [] for k in ("images", "landmarks68", "source", "names", "crop_box", "orig_size")
    }

    def add(source: int, name: str, image: Image.Image, box, points: np.ndarray) -> None:
        pixels, mapped = crop_face(image, box, points)
        for key, value in zip(rows, (pixels, mapped, source, name, box, image.size), strict=True):
            rows[key].append(value)

    for source, split in enumerate(("training", "test")):
        with open(work / "data" / f"{split}_frames_keypoints.csv", newline="") as fh:
            table = list(csv.reader(fh))[1:]
        for line in table:
            points = np.array(line[1:], np.float64).reshape(-1, 2)
            image = gray(work / "data" / split / line[0])
            add(source, f"ytf_udacity/{split}/{line[0]}", image, centre_box(*image.size, points), points)
    for file, box in helen:
        text = (work / file).with_suffix(".pts").read_text().splitlines()
        numbers = [line.split() for line in text if len(line.split()) == 2 and line[0] not in "vn{}"]
        if len(numbers) != 68:
            raise DownloadError(f"{file}: {len(numbers)} points in its .pts file, not 68")
        points = np.array(numbers, np.float64) - 1  # .pts files count from 1
        add(2 if "/trainset/" in file else 3, f"300w/{file}", gray(work / file), box, points)
    landmarks = np.stack(rows["landmarks68"])
    return {
        "images": np.stack(rows["images"]),
        "nose": landmarks[:, 30].copy(),
        "landmarks68": landmarks,
        "source": np.array(rows["source"], np.uint8),
        "source_names": np.array(spec.source_names),
        "names": np.array(rows["names"]),
        "crop_box": np.array(rows["crop_box"], np.int32),
        "orig_size": np.array(rows["orig_size"], np.int32),
    }


def verify(name: str, spec: Mnist | QuickDraw | Faces, arrays: Mapping[str, np.ndarray]) -> None:
    """Check the arrays against the digests of the copies the models were trained on."""
    if isinstance(spec, Faces):
        wrong = [
            k for k, sha in spec.arrays.items() if k not in arrays or content_sha256({k: arrays[k]}) != sha
        ]
        if wrong:
            raise DownloadError(
                f"{name}: {', '.join(wrong)} differ from the set the tracker was trained on "
                "(if only the images differ, check that Pillow is the version pyproject.toml pins)"
            )
    else:
        check(name, content_sha256(arrays), spec.content)


def write(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write an .npz atomically: a half-written file never lies where training looks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    os.replace(partial, path)


def fetch(name: str, spec: Mnist | QuickDraw | Faces, out: Path, mirror: str | None) -> Path:
    """Download, verify and write one data set (kept as it is when already there and verified)."""
    path = out / FILES[name]
    if path.is_file():
        with np.load(path) as npz:
            arrays = {key: npz[key] for key in npz.files}
        try:
            verify(name, spec, arrays)
            print(f"{name}: {path} is there and verified", flush=True)
            return path
        except DownloadError:
            print(f"{name}: {path} differs from the expected set; downloading it again", flush=True)
    print(f"{name}: downloading", flush=True)
    try:
        if isinstance(spec, Mnist):
            arrays = build_mnist(spec, mirror)
        elif isinstance(spec, QuickDraw):
            arrays = build_quickdraw(spec, mirror)
        else:
            out.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix=".faces-", dir=out) as work:
                arrays = build_faces(spec, mirror, Path(work))
    except (OSError, EOFError, ValueError, KeyError, tarfile.TarError) as exc:
        # A cut download or a source laid out otherwise: say which, not a traceback.
        raise DownloadError(
            f"the download is not laid out as expected ({type(exc).__name__}: {exc})"
        ) from exc
    verify(name, spec, arrays)
    write(path, arrays)
    if isinstance(spec, QuickDraw):
        (path.parent / "labels.txt").write_text("".join(f"{n}\n" for n, _, _ in spec.classes))
    same = (
        "the same file" if file_sha256(path) == spec.file else "the same arrays (another zlib: other bytes)"
    )
    print(f"{name}: {path} verified, {same} as the set the models were trained on", flush=True)
    return path


def main(argv: list[str] | None = None) -> int:
    """Download every data set asked for; say what failed and why."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", type=Path, default=Path("data"), help="where to lay the data sets out (data/)"
    )
    parser.add_argument("--only", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument(
        "--mirror", help="read every URL from BASE/<host>/<path> instead (file:// or http://)"
    )
    args = parser.parse_args(argv)
    failed = []
    for name in args.only:
        try:
            fetch(name, DATASETS[name], args.out, args.mirror)
        except DownloadError as exc:
            print(f"{name}: {exc}", file=sys.stderr, flush=True)
            failed.append(name)
    if failed:
        print(f"not downloaded: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
