"""Hostile Teachable Machine zips on POST /api/classifier/models: each gets a clear 4xx, fast, and leaves nothing.

Classes: not a zip; names outside the folder (../, absolute, drive letters, backslashes); links;
zip bombs (by ratio, by declared size, by total, by entry count, an entry lying about its size);
encrypted or exotically compressed entries; files no export holds; missing files; two exports in
one zip; wrong shapes and labels; a huge declared tensor; a corrupt model.
"""

from __future__ import annotations

import io
import json
import stat
import struct
import time
import warnings
import zipfile
import zlib
from pathlib import Path

import pytest

from app import create_app
from models.converters import archive
from tests.blueprints.test_classifier_upload import DATA, EXPORTS, export_zip, upload
from tests.conftest import hide_environment

MiB = 1024 * 1024


def zip_of(*entries: tuple[str | zipfile.ZipInfo, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    """Build a zip from (name or ZipInfo, data) pairs, names kept exactly as given."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a duplicate name is the point of one case
        with zipfile.ZipFile(buf, "w", method) as out:
            for name, data in entries:
                info = name if isinstance(name, zipfile.ZipInfo) else zipfile.ZipInfo(name)
                info.compress_type = method
                out.writestr(info, data)
    return buf.getvalue()


def export_files(fmt: str) -> list[tuple[str, bytes]]:
    """The files of a committed export, as (name, data)."""
    folder, names = EXPORTS[fmt]
    return [(name, (DATA / folder / name).read_bytes()) for name in names]


def link(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    """A symbolic link entry, as `zip --symlinks` stores one."""
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


def patch_central(data: bytes, name: str, *, flags: int | None = None, size: int | None = None) -> bytes:
    """Rewrite an entry's flags or declared size in the zip's central directory (and local header)."""
    out = bytearray(data)
    encoded = name.encode()
    for signature, flag_at, size_at, name_at in ((b"PK\x01\x02", 8, 24, 46), (b"PK\x03\x04", 6, 22, 30)):
        start = 0
        while (at := out.find(signature, start)) >= 0:
            start = at + 4
            if out[at + name_at : at + name_at + len(encoded)] != encoded:
                continue
            if flags is not None:
                struct.pack_into("<H", out, at + flag_at, flags)
            if size is not None:
                struct.pack_into("<I", out, at + size_at, size)
    return bytes(out)


def tfjs_with(edit) -> bytes:
    """The TF.js export with its model.json edited."""
    files = dict(export_files("tfjs"))
    doc = json.loads(files["model.json"])
    edit(doc)
    files["model.json"] = json.dumps(doc).encode()
    return zip_of(*files.items())


def first_weight(doc: dict) -> dict:
    return doc["weightsManifest"][0]["weights"][0]


def bomb(size: int) -> bytes:
    """`size` zero bytes: deflated, a thousandth of that."""
    return bytes(size)


# (case id, zip bytes, status, code, a word the message holds)
CASES = [
    ("empty", lambda: b"", 400, "invalid_archive", "not a readable zip"),
    ("png", lambda: (DATA / "images" / "red.png").read_bytes(), 400, "invalid_archive", "zip"),
    ("truncated", lambda: export_zip("tfjs")[:5000], 400, "invalid_archive", "zip"),
    (
        "dot-dot",
        lambda: zip_of(("../keras_model.h5", b"x"), ("labels.txt", b"0 a")),
        400,
        "invalid_archive",
        "outside",
    ),
    ("deep-dot-dot", lambda: zip_of(("a/../../labels.txt", b"0 a")), 400, "invalid_archive", "outside"),
    ("absolute", lambda: zip_of(("/etc/cron.d/labels.txt", b"0 a")), 400, "invalid_archive", "relative"),
    ("drive", lambda: zip_of(("C:/labels.txt", b"0 a")), 400, "invalid_archive", "relative"),
    ("backslash", lambda: zip_of(("..\\labels.txt", b"0 a")), 400, "invalid_archive", "relative"),
    (
        "symlink",
        lambda: zip_of(link("labels.txt", "/etc/passwd"), *export_files("keras_h5")[:1]),
        400,
        "invalid_archive",
        "link",
    ),
    (
        "dir-symlink",
        lambda: zip_of(link("sub", "/"), ("sub/labels.txt", b"0 a")),
        400,
        "invalid_archive",
        "link",
    ),
    (
        "ratio-bomb",
        lambda: zip_of(("keras_model.h5", bomb(40 * MiB)), ("labels.txt", b"0 a")),
        413,
        "archive_too_large",
        "bomb",
    ),
    (
        "total-ratio-bomb",
        lambda: zip_of(*((f"w{i}.bin", bomb(MiB)) for i in range(20))),
        413,
        "archive_too_large",
        "bomb",
    ),
    (
        "declared-4GB",
        lambda: patch_central(zip_of(*export_files("tfjs")), "weights.bin", size=0xFFFFFFF0),
        413,
        "archive_too_large",
        "declares",
    ),
    (
        "lies-about-size",
        lambda: patch_central(zip_of(*export_files("tfjs")), "weights.bin", size=1000),
        400,
        "invalid_archive",
        "weights.bin",
    ),
    (
        "too-many-entries",
        lambda: zip_of(*((f"l{i}.txt", b"0 a") for i in range(40))),
        413,
        "archive_too_large",
        "entries",
    ),
    (
        "encrypted",
        lambda: patch_central(zip_of(*export_files("keras_h5")), "labels.txt", flags=1),
        400,
        "invalid_archive",
        "encrypted",
    ),
    (
        "bzip2",
        lambda: zip_of(*export_files("keras_h5"), method=zipfile.ZIP_BZIP2),
        400,
        "invalid_archive",
        "compression",
    ),
    (
        "script",
        lambda: zip_of(*export_files("keras_h5"), ("run.sh", b"#!/bin/sh\nrm -rf /\n")),
        400,
        "invalid_archive",
        "run.sh",
    ),
    (
        "dotfile",
        lambda: zip_of(*export_files("keras_h5"), (".htaccess", b"x")),
        400,
        "invalid_archive",
        ".htaccess",
    ),
    (
        "nested",
        lambda: zip_of(("a/b/keras_model.h5", b"x"), ("a/b/labels.txt", b"0 a")),
        400,
        "invalid_archive",
        "together",
    ),
    (
        "scattered",
        lambda: zip_of(("a/keras_model.h5", b"x"), ("b/labels.txt", b"0 a")),
        400,
        "invalid_archive",
        "together",
    ),
    (
        "duplicate",
        lambda: zip_of(("labels.txt", b"0 a"), ("LABELS.txt", b"0 b")),
        400,
        "invalid_archive",
        "twice",
    ),
    ("only-folders", lambda: zip_of(("empty/", b"")), 400, "invalid_archive", "no files"),
    (
        "only-labels",
        lambda: zip_of(("labels.txt", b"0 a\n1 b\n")),
        400,
        "incomplete_export",
        "no Teachable Machine export",
    ),
    (
        "two-exports",
        lambda: zip_of(*export_files("keras_h5"), *export_files("tflite_quantized")[:1]),
        400,
        "incomplete_export",
        "more than one",
    ),
    (
        "no-labels",
        lambda: export_zip("keras_h5", drop=("labels.txt",)),
        422,
        "invalid_model",
        "labels file not found: labels.txt",
    ),
    (
        "no-metadata",
        lambda: export_zip("tfjs", drop=("metadata.json",)),
        422,
        "invalid_model",
        "metadata.json",
    ),
    ("no-weights", lambda: export_zip("tfjs", drop=("weights.bin",)), 422, "invalid_model", "weights.bin"),
    (
        "labels-mismatch",
        lambda: zip_of(export_files("tflite_quantized")[0], ("labels.txt", b"0 a\n1 b\n")),
        422,
        "invalid_model",
        "6 outputs",
    ),
    (
        "huge-tensor",
        lambda: tfjs_with(lambda d: first_weight(d).update(shape=[65536, 65536, 64])),
        422,
        "invalid_model",
        "more than",
    ),
    (
        "wrong-shape",
        lambda: tfjs_with(
            lambda d: first_weight(d).update(shape=list(reversed(first_weight(d)["shape"])) + [1])
        ),
        422,
        "invalid_model",
        "",
    ),
    (
        "not-hdf5",
        lambda: zip_of(("keras_model.h5", b"\x89HDF\r\n\x1a\n" + bytes(5000)), ("labels.txt", b"0 a")),
        422,
        "invalid_model",
        "corrupt",
    ),
    (
        "truncated-tflite",
        lambda: zip_of(
            ("model.tflite", export_files("tflite_quantized")[0][1][:5000]), ("labels.txt", b"0 a")
        ),
        422,
        "invalid_model",
        "",
    ),
]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile-uploads")
    with pytest.MonkeyPatch.context() as mp:
        hide_environment(mp)
        app = create_app(
            {
                "SAVE_IMAGES": False,
                "LOG_LEVEL": "ERROR",
                "IMAGE_DIR": str(folder / "images"),
                "DATABASE_URL": f"sqlite:///{folder / 'db.sqlite'}",
                "CLASSIFIER_DIRS": [str(folder / "classifiers" / "uploads")],
            }
        )
    app.config["TEST_ROOT"] = folder
    return app


def everything_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize(
    ("data", "status", "code", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_a_hostile_zip_is_refused_and_leaves_nothing(app, data, status, code, words):
    root = app.config["TEST_ROOT"] / "classifiers"
    before = everything_under(root)
    models_before = set(app.extensions["registry"].specs)
    start = time.perf_counter()
    r = upload(app.test_client(), "hostile", data())
    took = time.perf_counter() - start
    body = r.get_json()
    assert (r.status_code, body["code"]) == (status, code), body
    assert words in body["error"]
    assert str(root) not in body["error"] and ".upload-" not in body["error"]  # no server path
    assert took < 5, f"refused after {took:.1f} s"
    assert everything_under(root) == before
    assert not (root.parent / "keras_model.h5").exists() and not (root / "labels.txt").exists()
    assert set(app.extensions["registry"].specs) == models_before


def test_bombs_are_refused_before_anything_is_unpacked(app, monkeypatch):
    """A bomb is refused from its central directory: nothing is ever decompressed or written."""
    cases = ("ratio-bomb", "total-ratio-bomb", "declared-4GB", "too-many-entries", "dot-dot", "symlink")
    zips = [next(c[1] for c in CASES if c[0] == case)() for case in cases]
    opened = []
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, *a, **k: opened.append(a))
    for case, data in zip(cases, zips, strict=True):
        r = upload(app.test_client(), "hostile", data)
        assert r.status_code in (400, 413), (case, r.get_json())
    assert opened == []


def test_the_unpacked_total_is_capped(app, monkeypatch):
    # Each file of the TF.js export is under this cap, the three together over it.
    monkeypatch.setattr(archive, "MAX_UNPACKED_BYTES", 2_200_000)
    r = upload(app.test_client(), "hostile", export_zip("tfjs"))
    assert (r.status_code, r.get_json()["code"]) == (413, "archive_too_large")
    assert "would unpack to" in r.get_json()["error"]


def test_a_zipped_folder_of_the_files_is_taken_and_mac_junk_skipped(app):
    data = zip_of(
        *((f"converted_keras/{name}", body) for name, body in export_files("keras_h5")),
        ("__MACOSX/converted_keras/._labels.txt", b"\x00\x05\x16\x07"),
        ("converted_keras/.DS_Store", b"junk"),
    )
    client = app.test_client()
    r = upload(client, "zipped-folder", data)
    assert r.status_code == 201, r.get_json()
    folder = app.config["TEST_ROOT"] / "classifiers" / "uploads" / "zipped-folder"
    assert {p.name for p in folder.iterdir()} >= {"keras_model.h5", "labels.txt", "upload.json"}
    assert not (folder / ".DS_Store").exists() and not (folder.parent / "__MACOSX").exists()
    assert client.delete("/api/classifier/models/zipped-folder").status_code == 204


def test_a_deflate_stream_longer_than_declared_stops_at_the_declared_size(tmp_path):
    """zipfile reads no more than an entry declares; the CRC then tells the lie."""
    data = zip_of(("labels.txt", b"0 a\n" * 100_000))
    lying = patch_central(data, "labels.txt", size=10)
    with pytest.raises(archive.ExportRefused) as info:
        archive.unpack_export(io.BytesIO(lying), tmp_path)
    assert info.value.status == 400
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) <= 10


def test_raw_deflate_bomb_ratio_is_what_the_check_sees():
    """Sanity: the bombs above compress as a real bomb does (x1000), real exports do not (x1.1)."""
    assert len(zlib.compress(bomb(MiB))) * 500 < MiB
    real = zipfile.ZipFile(io.BytesIO(export_zip("keras_h5")))
    assert all(i.file_size < 20 * max(i.compress_size, 1) for i in real.infolist())
