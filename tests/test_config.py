"""Configuration precedence and validation."""

from __future__ import annotations

import json

import pytest

from app import create_app
from config import DEFAULTS, ConfigError, load_config


def test_defaults_apply_with_an_empty_environment():
    config = load_config(environ={})
    assert config["PORT"] == DEFAULTS["PORT"] and config["SAVE_IMAGES"] is True
    assert config["PREDICT_THRESHOLD"] == 60.0 and config["ONNX_THREADS"] == 1


def test_file_then_env_then_overrides(tmp_path):
    toml = tmp_path / "vision.toml"
    toml.write_text('port = 6000\nlog_level = "debug"\nsave_images = false\npredict_threshold = 70\n')
    env = {"VISION_CONFIG": str(toml), "VISION_PORT": "7000"}
    config = load_config(environ=env)
    assert config["PORT"] == 7000  # env beats file
    assert config["LOG_LEVEL"] == "DEBUG" and config["SAVE_IMAGES"] is False  # file beats defaults
    assert config["PREDICT_THRESHOLD"] == 70.0
    assert load_config({"PORT": 8000}, environ=env)["PORT"] == 8000  # overrides beat env


def test_json_file_and_unprefixed_conventional_env(tmp_path):
    path = tmp_path / "vision.json"
    path.write_text(json.dumps({"ALLOWED_IPS": ["10.0.0.0/8"]}))
    env = {"VISION_CONFIG": str(path), "DATABASE_URL": "postgresql://u@db/vision", "PORT": "5050"}
    config = load_config(environ=env)
    assert config["ALLOWED_IPS"] == ["10.0.0.0/8"] and config["PORT"] == 5050
    assert config["DATABASE_URL"] == "postgresql://u@db/vision"
    assert load_config(environ={**env, "VISION_PORT": "5151"})["PORT"] == 5151  # prefixed wins


def test_env_values_parse_as_json_or_string():
    config = load_config(environ={"VISION_SAVE_IMAGES": "false", "VISION_ALLOWED_IPS": "127.0.0.1, ::1"})
    assert config["SAVE_IMAGES"] is False and config["ALLOWED_IPS"] == ["127.0.0.1", "::1"]


@pytest.mark.parametrize(
    "env,setting",
    [
        ({"VISION_PORT": "99999"}, "PORT"),
        ({"VISION_PORT": "http"}, "PORT"),
        ({"VISION_LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"VISION_SAVE_IMAGES": "maybe"}, "SAVE_IMAGES"),
        ({"VISION_ALLOWED_IPS": "not-an-ip"}, "ALLOWED_IPS"),
        ({"VISION_PREDICT_THRESHOLD": "120"}, "PREDICT_THRESHOLD"),
        ({"VISION_ONNX_THREADS": "0"}, "ONNX_THREADS"),
        ({"VISION_MODELS": '{"numbers": {"type": "numbers"}}'}, "MODELS.numbers"),
        ({"VISION_CONFIG": "/nonexistent/vision.toml"}, "VISION_CONFIG"),
    ],
)
def test_wrong_values_name_the_setting(env, setting):
    with pytest.raises(ConfigError, match=setting.replace(".", r"\.")):
        load_config(environ=env)


def test_bad_config_file_is_named(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("port = = 1")
    with pytest.raises(ConfigError, match="VISION_CONFIG"):
        load_config(environ={"VISION_CONFIG": str(bad)})


def test_create_app_refuses_a_wrong_setting(monkeypatch):
    monkeypatch.setenv("VISION_MAX_IMAGE_PIXELS", "-5")
    with pytest.raises(ConfigError, match="MAX_IMAGE_PIXELS"):
        create_app({"SAVE_IMAGES": False})
