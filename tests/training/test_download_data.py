"""training/download_data.py (make data) against local mirrors of tiny fake data sets: no network."""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import io
import socket
import tarfile
import threading
import urllib.error
import urllib.parse
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training import download_data as dd
from training.download_data import DATASETS, DownloadError, content_sha256

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"


def at(mirror: Path, url: str) -> Path:
    """Where a URL lies in a mirror folder (BASE/<host>/<path>)."""
    parts = urllib.parse.urlsplit(url)
    return mirror / parts.netloc / urllib.parse.unquote(parts.path.lstrip("/"))


def put(mirror: Path, url: str, data: bytes) -> None:
    path = at(mirror, url)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def npz_bytes(arrays: dict) -> bytes:
    out = io.BytesIO()
    np.savez_compressed(out, **arrays)
    return out.getvalue()


def npy_bytes(array: np.ndarray, version=(1, 0)) -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array(out, array, version=version)
    return out.getvalue()


@pytest.fixture
def http_mirror(tmp_path):
    """A folder served over HTTP on loopback (no ranges: the script must cope with whole files)."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)


# --- MNIST -------------------------------------------------------------------------------------


def fake_mnist() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, 6, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (2, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, 2, dtype=np.uint8),
    }


def mnist_spec(data: bytes, arrays: dict) -> dd.Mnist:
    written = npz_bytes(arrays)  # what the script writes, with this numpy and zlib
    return dataclasses.replace(
        DATASETS["mnist"],
        sha256=hashlib.sha256(data).hexdigest(),
        content=content_sha256(arrays),
        file=hashlib.sha256(written).hexdigest(),
    )


def test_mnist_from_a_file_mirror_then_kept(tmp_path, capsys):
    arrays = fake_mnist()
    data = npz_bytes(arrays)
    mirror = tmp_path / "mirror"
    spec = mnist_spec(data, arrays)
    put(mirror, spec.url, data)
    path = dd.fetch("mnist", spec, tmp_path / "data", mirror.as_uri())
    assert path == tmp_path / "data" / "mnist" / "mnist.npz"
    with np.load(path) as npz:
        assert all(np.array_equal(npz[k], arrays[k]) for k in arrays)
    assert "verified, the same file" in capsys.readouterr().out
    # A second run reads nothing: the file is there and verified.
    dd.fetch("mnist", spec, tmp_path / "data", (tmp_path / "nowhere").as_uri())
    assert "is there and verified" in capsys.readouterr().out


def test_a_download_that_differs_is_refused_and_not_written(tmp_path):
    arrays = fake_mnist()
    spec = mnist_spec(npz_bytes(arrays), arrays)
    tampered = {**arrays, "y_test": arrays["y_test"] ^ 1}
    put(tmp_path / "mirror", spec.url, npz_bytes(tampered))
    with pytest.raises(DownloadError, match="SHA-256 .* not the data the models were trained on"):
        dd.fetch("mnist", spec, tmp_path / "data", (tmp_path / "mirror").as_uri())
    assert not (tmp_path / "data" / "mnist").exists()


def test_a_right_file_with_wrong_arrays_is_refused(tmp_path):
    arrays = fake_mnist()
    data = npz_bytes({**arrays, "y_test": arrays["y_test"] ^ 1})
    spec = dataclasses.replace(mnist_spec(data, arrays))  # the file's digest fits, its arrays do not
    put(tmp_path / "mirror", spec.url, data)
    with pytest.raises(DownloadError, match="mnist: SHA-256"):
        dd.fetch("mnist", spec, tmp_path / "data", (tmp_path / "mirror").as_uri())


# --- offline -----------------------------------------------------------------------------------


def test_without_internet_it_says_so(tmp_path, monkeypatch, capsys):
    def offline(*args, **kwargs):
        raise urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(dd.urllib.request, "urlopen", offline)
    assert dd.main(["--out", str(tmp_path / "data")]) == 1
    err = capsys.readouterr().err
    for name in DATASETS:
        assert f"{name}: cannot read https://" in err
    assert "needs internet access" in err and "not downloaded: mnist, quickdraw, faces" in err
    assert not list((tmp_path / "data").rglob("*.npz"))


def test_an_unreachable_mirror_says_so(tmp_path, capsys):
    with socket.socket() as sock:  # a loopback port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert dd.main(["--only", "mnist", "--out", str(tmp_path), "--mirror", f"http://127.0.0.1:{port}"]) == 1
    err = capsys.readouterr().err
    assert f"cannot read http://127.0.0.1:{port}/storage.googleapis.com/" in err and "refused" in err


# --- Quick, Draw! ------------------------------------------------------------------------------


def test_quickdraw_reads_the_first_rows_over_http(tmp_path, http_mirror):
    folder, base = http_mirror
    rng = np.random.default_rng(1)
    full = {
        "cat": rng.integers(0, 256, (5, 784), np.uint8),
        "house plant": rng.integers(0, 256, (4, 784), np.uint8),
    }
    take = {"cat": 3, "house plant": 2}
    spec = dataclasses.replace(
        DATASETS["quickdraw"],
        classes=tuple((n, take[n], hashlib.sha256(full[n][: take[n]].tobytes()).hexdigest()) for n in full),
    )
    expected = {
        "x": np.concatenate([full[n][: take[n]] for n in full]).reshape(-1, 28, 28),
        "y": np.array([0, 0, 0, 1, 1], np.uint8),
        "src_index": np.array([0, 1, 2, 0, 1], np.int32),
        "class_names": np.array(["cat", "house plant"]),
    }
    spec = dataclasses.replace(spec, content=content_sha256(expected), file="0" * 64)
    # Version 1 and version 2 .npy headers; "house plant" travels as house%20plant.npy.
    put(folder, spec.url.format(name="cat"), npy_bytes(full["cat"]))
    put(folder, spec.url.format(name="house%20plant"), npy_bytes(full["house plant"], version=(2, 0)))
    path = dd.fetch("quickdraw", spec, tmp_path / "data", base)
    with np.load(path) as npz:
        assert list(npz.files) == ["x", "y", "src_index", "class_names"]
        assert all(np.array_equal(npz[k], v) and npz[k].dtype == v.dtype for k, v in expected.items())
    assert (path.parent / "labels.txt").read_text() == "cat\nhouse plant\n"


def test_the_clock_class_is_read_from_googles_alarm_clock_file(tmp_path):
    rows = np.random.default_rng(2).integers(0, 256, (3, 784), np.uint8)
    spec = dataclasses.replace(
        DATASETS["quickdraw"], classes=(("clock", 2, hashlib.sha256(rows[:2].tobytes()).hexdigest()),)
    )
    assert spec.source("clock") == "alarm clock" and spec.source("cat") == "cat"
    mirror = tmp_path / "mirror"
    put(mirror, spec.url.format(name="alarm%20clock"), npy_bytes(rows))
    arrays = dd.build_quickdraw(spec, mirror.as_uri())
    assert np.array_equal(arrays["x"].reshape(2, 784), rows[:2])
    assert arrays["class_names"].tolist() == ["clock"]  # the class keeps its served name


def test_quickdraw_refuses_a_short_file(tmp_path):
    spec = dataclasses.replace(DATASETS["quickdraw"], classes=(("cat", 3, "0" * 64),))
    put(tmp_path / "mirror", spec.url.format(name="cat"), npy_bytes(np.zeros((2, 784), np.uint8)))
    with pytest.raises(DownloadError, match=r"N>=3"):
        dd.fetch("quickdraw", spec, tmp_path / "data", (tmp_path / "mirror").as_uri())


# --- faces -------------------------------------------------------------------------------------


def tarball(top: str, files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        hostile = {"../evil.txt": b"x", "data/training/../../evil.txt": b"x", "README.md": b"not wanted"}
        for name, data in {**files, **hostile}.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")  # (H, W, 4): RGBA, (H, W, 3): RGB
    return out.getvalue()


def gray(pixels: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(pixels).convert("RGB").convert("L"))


def points(rng, x_max: float, y_max: float) -> np.ndarray:
    return np.round(rng.uniform((2, 2), (x_max, y_max), (68, 2)) * 2) / 2  # the CSVs hold halves


def keypoint_csv(rows: list[tuple[str, np.ndarray]]) -> bytes:
    lines = ["," + ",".join(str(i) for i in range(136))]
    lines += [name + "," + ",".join(str(v) for v in pts.reshape(-1)) for name, pts in rows]
    return ("\n".join(lines) + "\n").encode()


def test_faces_built_from_both_archives(tmp_path):
    """96x96 frames are kept whole; a 96x80 frame with points outside its central square is padded."""
    rng = np.random.default_rng(2)
    rgba = rng.integers(0, 256, (96, 96, 4), np.uint8)
    short = rng.integers(0, 256, (80, 96, 3), np.uint8)
    helen = rng.integers(0, 256, (96, 96, 3), np.uint8)
    p_whole, p_short, p_helen = points(rng, 93, 93), points(rng, 93, 70), points(rng, 93, 93)
    p_short[5] = (40, 79.5)  # inside the frame, outside its central 80x80 square: pad to 96x96
    pts_text = (
        "version: 1\nn_points:  68\n{\n" + "".join(f"{x + 1:.3f} {y + 1:.3f}\n" for x, y in p_helen) + "}\n"
    )
    udacity = {
        "data/training/a.jpg": png(rgba),  # the Udacity frames are PNGs named .jpg
        "data/training_frames_keypoints.csv": keypoint_csv([("a.jpg", p_whole)]),
        "data/test/b.jpg": png(short),
        "data/test/unlabelled.jpg": png(short),
        "data/test_frames_keypoints.csv": keypoint_csv([("b.jpg", p_short)]),
    }
    helen_files = {"helen/testset/c.jpg": png(helen), "helen/testset/c.pts": pts_text.encode()}
    crops = tmp_path / "crops.csv"
    with open(crops, "w", newline="") as fh:
        csv.writer(fh).writerows([("file", "x0", "y0", "x1", "y1"), ("helen/testset/c.jpg", 0, 0, 96, 96)])

    padded = np.zeros((96, 96), np.uint8)
    padded[8:88] = gray(short)
    expected = {
        "images": np.stack([gray(rgba), padded, gray(helen)]),
        "landmarks68": np.stack([p_whole, p_short + (0, 8), p_helen]).astype(np.float32),
        "source": np.array([0, 1, 3], np.uint8),
        "source_names": np.array(DATASETS["faces"].source_names),
        "names": np.array(
            ["ytf_udacity/training/a.jpg", "ytf_udacity/test/b.jpg", "300w/helen/testset/c.jpg"]
        ),
        "crop_box": np.array([[0, 0, 96, 96], [0, -8, 96, 88], [0, 0, 96, 96]], np.int32),
        "orig_size": np.array([[96, 96], [96, 80], [96, 96]], np.int32),
    }
    expected["nose"] = expected["landmarks68"][:, 30]
    spec = dataclasses.replace(
        DATASETS["faces"],
        helen_crops=crops,
        arrays={k: content_sha256({k: v}) for k, v in expected.items()},
        file="0" * 64,
    )
    mirror = tmp_path / "mirror"
    put(mirror, spec.udacity, tarball("Facial_Keypoints-0bf8f6d", udacity))
    put(mirror, spec.helen, tarball("Face-alignement-e08a16a", helen_files))
    path = dd.fetch("faces", spec, tmp_path / "data", mirror.as_uri())
    with np.load(path) as npz:
        assert list(npz.files) == [
            "images",
            "nose",
            "landmarks68",
            "source",
            "source_names",
            "names",
            "crop_box",
            "orig_size",
        ]
        for key, value in expected.items():
            assert np.array_equal(npz[key], value) and npz[key].dtype == value.dtype, key
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["faces"]  # work files gone
    assert not (tmp_path / "evil.txt").exists()


def test_crop_face_shrinks_and_enlarges_to_96():
    image = Image.fromarray(np.random.default_rng(3).integers(0, 256, (300, 200), np.uint8))
    pts = np.array([[50.0, 60.0]])
    pixels, mapped = dd.crop_face(image, (0, 50, 200, 250), pts)
    assert pixels.shape == (96, 96) and np.allclose(mapped, [[(50.5) * 0.48 - 0.5, (10.5) * 0.48 - 0.5]])
    pixels, _ = dd.crop_face(image, (10, 10, 58, 58), pts)
    assert np.array_equal(pixels, np.asarray(image.crop((10, 10, 58, 58)).resize((96, 96), Image.BILINEAR)))


# --- the real manifest -------------------------------------------------------------------------


def test_every_source_is_https_and_laid_out_where_training_reads():
    for name, spec in DATASETS.items():
        urls = [v for v in vars(spec).values() if isinstance(v, str) and "://" in v]
        assert urls and all(u.startswith("https://") for u in urls), name
    assert dd.FILES == {
        "mnist": "mnist/mnist.npz",
        "quickdraw": "quickdraw/quickdraw_28.npz",
        "faces": "faces/faces_96.npz",
    }
    readme = (ROOT / "README.md").read_text()
    for path in dd.FILES.values():
        assert f"--data data/{path}" in readme
    assert "make data" in readme
    makefile = (ROOT / "Makefile").read_text()
    assert "\ndata: install\n\t$(BIN)/python -m training.download_data" in makefile


needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} is not here (a fresh clone)")


@needs_shared
def test_the_digests_are_those_of_the_shared_copies():
    """The manifest's digests were computed from the copies the committed models were trained on."""
    for name, path in dd.FILES.items():
        spec = DATASETS[name]
        with np.load(SHARED / path) as npz:
            arrays = {k: npz[k] for k in npz.files}
        dd.verify(name, spec, arrays)
        assert dd.file_sha256(SHARED / path) == spec.file
        if name == "quickdraw":
            assert [str(n) for n in arrays["class_names"]] == [n for n, _, _ in spec.classes]
            for label, (_, rows, sha) in enumerate(spec.classes):
                assert hashlib.sha256(arrays["x"][arrays["y"] == label].tobytes()).hexdigest() == sha
                assert (arrays["y"] == label).sum() == rows
            labels = "".join(f"{n}\n" for n, _, _ in spec.classes)
            assert (SHARED / "quickdraw" / "labels.txt").read_text() == labels
        if name == "faces":
            with open(spec.helen_crops, newline="") as fh:
                crops = list(csv.DictReader(fh))
            helen = arrays["source"] >= 2
            assert [f"300w/{r['file']}" for r in crops] == [str(n) for n in arrays["names"][helen]]
            boxes = [[int(r[k]) for k in ("x0", "y0", "x1", "y1")] for r in crops]
            assert np.array_equal(boxes, arrays["crop_box"][helen])
            assert tuple(map(str, arrays["source_names"])) == spec.source_names


@needs_shared
@pytest.mark.slow
def test_quickdraw_rebuilds_the_shared_copy_from_numpy_bitmap_files(tmp_path):
    """The real manifest, fed files that start with the shared rows, writes the shared file again."""
    spec = DATASETS["quickdraw"]
    with np.load(SHARED / "quickdraw" / "quickdraw_28.npz") as npz:
        x, y = npz["x"], npz["y"]
    mirror = tmp_path / "mirror"
    for label, (name, _, _) in enumerate(spec.classes):
        rows = x[y == label].reshape(-1, 784)
        extra = np.full((7, 784), 255, np.uint8)  # the real files go on for 100k+ rows
        url = spec.url.format(name=urllib.parse.quote(spec.source(name)))
        put(mirror, url, npy_bytes(np.concatenate([rows, extra])))
    path = dd.fetch("quickdraw", spec, tmp_path / "data", mirror.as_uri())
    assert dd.file_sha256(path) == spec.file
    assert (path.parent / "labels.txt").read_bytes() == (SHARED / "quickdraw" / "labels.txt").read_bytes()


def test_a_cut_archive_is_a_clear_error(tmp_path):
    spec = DATASETS["faces"]
    whole = tarball("Facial_Keypoints-0bf8f6d", {"data/training/a.jpg": b"x" * 5000})
    put(tmp_path / "mirror", spec.udacity, whole[: len(whole) // 2])
    with pytest.raises(DownloadError, match="not laid out as expected"):
        dd.fetch("faces", spec, tmp_path / "data", (tmp_path / "mirror").as_uri())
    assert not list((tmp_path / "data").rglob("*.npz"))
