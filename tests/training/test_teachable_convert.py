"""The Keras 2 .h5 reader and the Keras 3 rebuild behind the Teachable Machine conversion."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from models.runtime import ModelFileError

h5py = pytest.importorskip("h5py")

from training.teachable_convert import (  # noqa: E402 - needs h5py, skipped above without it
    KNOWN_ALPHAS,
    infer_alpha,
    main,
    make_divisible,
    read_teachable,
)

FIXTURE = Path(__file__).parents[1] / "data" / "teachable" / "flask-mug" / "keras_model.h5"


def edited_copy(tmp_path: Path, edit) -> Path:
    """Copy the fixture and let `edit(h5py.File)` change it."""
    path = tmp_path / "keras_model.h5"
    shutil.copyfile(FIXTURE, path)
    with h5py.File(path, "r+") as fh:
        edit(fh)
    return path


def edit_config(change):
    def edit(fh):
        config = json.loads(fh.attrs["model_config"])
        change(config)
        fh.attrs["model_config"] = json.dumps(config)

    return edit


def backbone_layers(config: dict) -> list[dict]:
    return config["config"]["layers"][1]["config"]["layers"][1]["config"]["layers"]


def test_reads_the_teachable_machine_layout():
    spec = read_teachable(FIXTURE)
    assert spec.keras_version == "2.4.0"
    assert spec.input_shape == (224, 224, 3)
    assert len(spec.backbone) == 155
    assert spec.alpha == 0.35
    assert [e["class_name"] for e in spec.head] == ["GlobalAveragePooling2D", "Dense", "Dense"]
    assert spec.head[-1]["config"]["units"] == 2
    assert spec.weights["dense_Dense2"][0][1].shape == (100, 2)
    assert [name for name, _ in spec.weights["bn_Conv1"]] == [
        "gamma:0",
        "beta:0",
        "moving_mean:0",
        "moving_variance:0",
    ]


@pytest.mark.parametrize("alpha", KNOWN_ALPHAS)
def test_infer_alpha_from_block_16_project(alpha):
    layers = [{"name": "block_16_project", "config": {"filters": make_divisible(320 * alpha)}}]
    assert infer_alpha(layers, FIXTURE) == alpha


def test_infer_alpha_rejects_unknown_widths():
    with pytest.raises(ModelFileError, match="matches no MobileNetV2 alpha"):
        infer_alpha([{"name": "block_16_project", "config": {"filters": 100}}], FIXTURE)


def test_not_hdf5(tmp_path):
    path = tmp_path / "keras_model.h5"
    path.write_bytes(b"PK\x03\x04 a zip, not a Keras file")
    with pytest.raises(ModelFileError, match="corrupt or not HDF5"):
        read_teachable(path)


def test_weights_only_file(tmp_path):
    path = edited_copy(tmp_path, lambda fh: fh.attrs.__delitem__("model_config"))
    with pytest.raises(ModelFileError, match="no model_config"):
        read_teachable(path)


def test_backbone_must_end_at_out_relu(tmp_path):
    def change(config):
        config["config"]["layers"][1]["config"]["layers"][1]["config"]["output_layers"] = [
            ["Conv_1_bn", 0, 0]
        ]

    with pytest.raises(ModelFileError, match="must end at out_relu"):
        read_teachable(edited_copy(tmp_path, edit_config(change)))


def test_unsupported_head_layer(tmp_path):
    def change(config):
        config["config"]["layers"][2]["config"]["layers"].append(
            {"class_name": "LayerNormalization", "config": {"name": "norm"}}
        )

    with pytest.raises(ModelFileError, match="cannot rebuild head layer norm of type LayerNormalization"):
        read_teachable(edited_copy(tmp_path, edit_config(change)))


def test_cli_reports_a_bad_file(tmp_path, capsys):
    path = tmp_path / "keras_model.h5"
    path.write_bytes(b"nope")
    # The export's labels come first (models.teachable reads them before the model).
    (tmp_path / "labels.txt").write_text("0 Flask\n1 Mug\n", encoding="utf-8")
    assert main([str(path)]) == 1
    assert "corrupt or not HDF5" in capsys.readouterr().err


def test_cli_leaves_a_fresh_cache_alone(tmp_path, capsys):
    for name in ("keras_model.h5", "keras_model.onnx", "keras_model.onnx.json", "labels.txt"):
        shutil.copyfile(FIXTURE.parent / name, tmp_path / name)
    assert main([str(tmp_path / "keras_model.h5")]) == 0
    assert "cache is fresh" in capsys.readouterr().out


@pytest.mark.tensorflow
@pytest.mark.slow
def test_weight_shape_mismatch_is_named(tmp_path):
    pytest.importorskip("tensorflow")
    from training.teachable_convert import build_keras_model

    def change(fh):
        group = fh["model_weights"]["sequential_3"]["dense_Dense1"]
        del group["bias:0"]
        group["bias:0"] = [0.0] * 99

    with pytest.raises(
        ModelFileError, match=r"dense_Dense1 weight bias:0 has shape \(99,\), expected \(100,\)"
    ):
        build_keras_model(read_teachable(edited_copy(tmp_path, change)))


@pytest.mark.tensorflow
@pytest.mark.slow
def test_backbone_layer_mismatch_is_named(tmp_path):
    pytest.importorskip("tensorflow")
    from training.teachable_convert import build_keras_model

    def change(config):
        layers = backbone_layers(config)
        layers[:] = [e for e in layers if e["name"] != "block_3_pad"]

    with pytest.raises(ModelFileError, match=r"layers but MobileNetV2.*missing \['block_3_pad'\]"):
        build_keras_model(read_teachable(edited_copy(tmp_path, edit_config(change))))


@pytest.mark.tensorflow
@pytest.mark.slow
def test_layer_setting_mismatch_is_named(tmp_path):
    pytest.importorskip("tensorflow")
    from training.teachable_convert import build_keras_model

    def change(config):
        layer = next(e for e in backbone_layers(config) if e["name"] == "block_2_depthwise")
        layer["config"]["strides"] = [2, 2]

    with pytest.raises(ModelFileError, match=r"block_2_depthwise has strides=\[2, 2\] in the file"):
        build_keras_model(read_teachable(edited_copy(tmp_path, edit_config(change))))
