"""Configuration precedence and validation."""

from __future__ import annotations

import json
import re
import runpy
from pathlib import Path
from types import SimpleNamespace

import pytest

from app import create_app
from config import DEFAULTS, ConfigError, Settings, load_config
from tests.conftest import hide_environment

ROOT = Path(__file__).resolve().parent.parent


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
        ({"VISION_STORE_SYNC": "never"}, "STORE_SYNC"),
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


def test_every_whole_number_setting_has_its_bounds_beside_its_default():
    for name, field in Settings.model_fields.items():
        if field.annotation is int:
            assert any(hasattr(m, "ge") for m in field.metadata), f"{name} has no lower bound"
        assert not field.is_required(), f"{name} has no default"


def test_text_settings_are_taken_as_written_and_flags_share_one_vocabulary():
    env = {"VISION_DEFAULT_CLASSIFIER": "123", "DATABASE_URL": "1", "VISION_SAVE_IMAGES": "1"}
    config = load_config(environ=env)
    assert config["DEFAULT_CLASSIFIER"] == "123" and config["DATABASE_URL"] == "1"
    assert config["SAVE_IMAGES"] is True
    assert load_config(environ={"VISION_SAVE_IMAGES": "Off"})["SAVE_IMAGES"] is False


def test_other_keys_pass_through_and_the_body_limit_admits_the_image():
    config = load_config({"TESTING": True, "MAX_IMAGE_BYTES": 12 * 1024 * 1024}, environ={})
    assert config["TESTING"] is True
    assert config["MAX_CONTENT_LENGTH"] >= 12 * 1024 * 1024 * 4 // 3


# --- where the server listens: one source, read by gunicorn.conf.py and serve.py -----------------


def gunicorn_settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict:
    """Run gunicorn.conf.py as gunicorn does, in an environment of only these variables."""
    hide_environment(monkeypatch)
    monkeypatch.delenv("GUNICORN_BIND", raising=False)
    # The file sets it when unset; set here, it is restored (removed) after the test.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "/nonexistent/vision-metrics")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(ROOT / "gunicorn.conf.py"))


def test_gunicorn_binds_where_the_settings_say(monkeypatch, tmp_path):
    assert gunicorn_settings(monkeypatch)["bind"] == f"{DEFAULTS['HOST']}:{DEFAULTS['PORT']}"
    assert gunicorn_settings(monkeypatch, VISION_HOST="::1", PORT="8001")["bind"] == "[::1]:8001"
    toml = tmp_path / "vision.toml"
    toml.write_text('host = "10.0.0.5"\nport = 7000\n')
    assert gunicorn_settings(monkeypatch, VISION_CONFIG=str(toml))["bind"] == "10.0.0.5:7000"
    # One run elsewhere (the benchmark harness), as gunicorn's own --bind.
    assert gunicorn_settings(monkeypatch, GUNICORN_BIND="127.0.0.1:9")["bind"] == "127.0.0.1:9"


def test_the_container_listens_on_all_interfaces_port_8000(monkeypatch):
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text(encoding="utf-8"))
    runtime = text.split(" AS runtime", 1)[1]
    env = dict(re.findall(r"\b(HOST|PORT)=(\S+)", " ".join(re.findall(r"^ENV (.*)$", runtime, re.M))))
    assert env == {"HOST": "0.0.0.0", "PORT": "8000"}
    assert gunicorn_settings(monkeypatch, **env)["bind"] == "0.0.0.0:8000"


def test_gunicorn_refuses_a_wrong_setting(monkeypatch):
    with pytest.raises(ConfigError, match="PORT"):
        gunicorn_settings(monkeypatch, PORT="http")


def test_serve_py_listens_where_the_settings_say_and_checks_its_flags(monkeypatch):
    import waitress

    import app as app_module
    import serve

    served = {}
    hide_environment(monkeypatch)
    monkeypatch.setattr(
        app_module, "create_app", lambda overrides: SimpleNamespace(config=load_config(overrides))
    )
    monkeypatch.setattr(waitress, "serve", lambda app, host, port, **kw: served.update(host=host, port=port))
    serve.main([])
    assert served == {"host": DEFAULTS["HOST"], "port": DEFAULTS["PORT"]}
    serve.main(["--host", "0.0.0.0", "--port", "8000"])
    assert served == {"host": "0.0.0.0", "port": 8000}
    with pytest.raises(ConfigError, match="PORT"):
        serve.main(["--port", "70000"])
