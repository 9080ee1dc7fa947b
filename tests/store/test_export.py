"""The export of labelled images as a zip for retraining."""

from __future__ import annotations

import io
import zipfile

from tests.store.conftest import new_image, png


def test_export_zip_holds_the_labelled_images_of_one_model(store):
    a = store.save(new_image(png(8, 8, "L", 10), model="numbers", label="1"))
    store.save(new_image(model="numbers"))  # not labelled: not exported
    store.save(new_image(model="doodles", label="cat"))
    buf = io.BytesIO()
    assert store.export_zip(buf, model="numbers") == 1
    with zipfile.ZipFile(buf) as archive:
        assert sorted(archive.namelist()) == sorted(["labels.csv", f"images/{a}.png"])
        rows = archive.read("labels.csv").decode().splitlines()
        assert rows[0].split(",")[:3] == ["file", "label", "id"]
        assert rows[1].startswith(f"images/{a}.png,1,{a},numbers,")
        assert archive.read(f"images/{a}.png") == png(8, 8, "L", 10)
    assert store.export_zip(io.BytesIO()) == 2
