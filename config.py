"""Configuration: defaults in code, then a TOML/JSON file, then environment variables, then overrides.

- The file's path comes from the environment variable VISION_CONFIG (TOML or JSON, by extension).
- Every setting can be set from the environment as VISION_<NAME> (values are parsed as JSON when
  they parse, else taken as strings); the conventional unprefixed HOST, PORT, DATABASE_URL and
  CELERY_BROKER_URL are read too, the prefixed form winning.
- A wrong value stops start-up with a ConfigError naming the setting.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ENV_PREFIX = "VISION_"
CONFIG_FILE_ENV = "VISION_CONFIG"
UNPREFIXED_ENV = ("HOST", "PORT", "DATABASE_URL", "CELERY_BROKER_URL")

DEFAULTS: dict[str, Any] = {
    "HOST": "127.0.0.1",
    "PORT": 5000,
    # Optional allow-list of client addresses or networks (CIDR); empty means everyone.
    "ALLOWED_IPS": [],
    # Honour X-Forwarded-For from this many proxies (nginx in front: 1).
    "TRUSTED_PROXIES": 0,
    "LOG_LEVEL": "INFO",
    "LOG_FILE": None,
    "LOG_FILE_MAX_BYTES": 10 * 1024 * 1024,
    "LOG_FILE_BACKUPS": 5,
    # Request bodies and decoded images.
    "MAX_CONTENT_LENGTH": 8 * 1024 * 1024,
    "MAX_IMAGE_BYTES": 8 * 1024 * 1024,
    "MAX_IMAGE_PIXELS": 40_000_000,
    # Models: name -> {"type", "path", options}; paths are relative to the project root.
    "MODELS": {
        "numbers": {"type": "numbers", "path": "models/numbers.onnx"},
        "doodles": {"type": "doodle", "path": "models/doodles.onnx", "labels": "models/doodles_labels.txt"},
        "ocr": {"type": "ocr", "path": "models/ocr.onnx"},
        "tracking": {
            "type": "tracking",
            "path": "models/tracking.onnx",
            "detector": "models/face_detector.onnx",
        },
    },
    # Folders whose sub-folders hold Teachable Machine exports (keras_model.h5 + labels.txt).
    "CLASSIFIER_DIRS": ["models/classifiers"],
    "DEFAULT_CLASSIFIER": "doodles",
    "ONNX_THREADS": 1,
    # Intel IPP inside OpenCV: off by default, because each IPP-dispatched call runs a CPUID
    # instruction, which traps to the hypervisor on a virtual machine (8 us a call on ours,
    # 10-13% of a /api/predict request's CPU); on bare metal, turning it on may help large images.
    "OPENCV_IPP": False,
    # Certainty (percent) under which /api/predict answers 422 low_certainty.
    "PREDICT_THRESHOLD": 60.0,
    # The image store.
    "SAVE_IMAGES": True,
    "IMAGE_DIR": "saved_images",
    "DATABASE_URL": None,
    "CELERY_BROKER_URL": None,
    "THUMBNAIL_SIZE": 128,
    "THUMBNAIL_WORKERS": 1,
    # Seconds between sweeps that re-send thumbnails still pending (broker was down, worker died).
    "THUMBNAIL_RETRY_SECONDS": 60,
    # Images waiting for the background writer; when it is full a request waits up to
    # STORE_QUEUE_WAIT_MS for room, then its image is dropped and counted.
    "STORE_QUEUE_SIZE": 256,
    "STORE_QUEUE_WAIT_MS": 2000,
}


class ConfigError(ValueError):
    """A setting with a wrong value; the message names the setting."""


def parse_env_value(raw: str) -> Any:
    """Parse an environment value as JSON when it is JSON, else keep the string."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def read_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a TOML or JSON settings file."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
        else:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{CONFIG_FILE_ENV}: config file {path} does not exist") from None
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{CONFIG_FILE_ENV}: cannot parse {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{CONFIG_FILE_ENV}: {path} must hold a table of settings")
    return {k.upper(): v for k, v in data.items()}


def read_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """Collect settings from environment variables."""
    values: dict[str, Any] = {}
    for name in UNPREFIXED_ENV:
        if environ.get(name):
            values[name] = parse_env_value(environ[name])
    for key, raw in environ.items():
        if key.startswith(ENV_PREFIX) and key != CONFIG_FILE_ENV:
            values[key[len(ENV_PREFIX) :]] = parse_env_value(raw)
    # DATABASE_URL and broker URLs are strings even when they would parse as JSON.
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "LOG_FILE", "HOST"):
        if name in values and values[name] is not None and not isinstance(values[name], str):
            values[name] = str(values[name])
    return values


def load_config(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Merge defaults, file, environment and overrides, then validate."""
    environ = os.environ if environ is None else environ
    config = json.loads(json.dumps(DEFAULTS))  # deep copy, defaults stay pristine
    if environ.get(CONFIG_FILE_ENV):
        config.update(read_file(environ[CONFIG_FILE_ENV]))
    config.update(read_env(environ))
    if overrides:
        config.update(overrides)
    return validate(config)


def _int(config: dict, name: str, minimum: int, maximum: int | None = None) -> None:
    value = config[name]
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ConfigError(f"{name} must be an integer {bounds}, got {config[name]!r}")
    config[name] = value


def _bool(config: dict, name: str) -> None:
    value = config[name]
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            value = True
        elif lowered in ("0", "false", "no", "off"):
            value = False
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {config[name]!r}")
    config[name] = value


def validate(config: dict[str, Any]) -> dict[str, Any]:
    """Check and normalise every setting, naming the first wrong one."""
    _int(config, "PORT", 1, 65535)
    _int(config, "TRUSTED_PROXIES", 0, 10)
    _int(config, "MAX_CONTENT_LENGTH", 1024)
    _int(config, "MAX_IMAGE_BYTES", 1024)
    _int(config, "MAX_IMAGE_PIXELS", 1)
    _int(config, "ONNX_THREADS", 1, 64)
    _int(config, "THUMBNAIL_SIZE", 16, 1024)
    _int(config, "THUMBNAIL_WORKERS", 1, 32)
    _int(config, "THUMBNAIL_RETRY_SECONDS", 1, 86400)
    _int(config, "STORE_QUEUE_SIZE", 1, 100_000)
    _int(config, "STORE_QUEUE_WAIT_MS", 0, 30_000)
    _int(config, "LOG_FILE_MAX_BYTES", 1024)
    _int(config, "LOG_FILE_BACKUPS", 0, 100)
    _bool(config, "SAVE_IMAGES")
    _bool(config, "OPENCV_IPP")

    level = str(config["LOG_LEVEL"]).upper()
    if level not in logging.getLevelNamesMapping():
        raise ConfigError(
            f"LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, got {config['LOG_LEVEL']!r}"
        )
    config["LOG_LEVEL"] = level

    threshold = config["PREDICT_THRESHOLD"]
    try:
        threshold = float(threshold)
    except (TypeError, ValueError):
        threshold = -1.0
    if not 0 <= threshold <= 100:
        raise ConfigError(
            f"PREDICT_THRESHOLD must be a percentage from 0 to 100, got {config['PREDICT_THRESHOLD']!r}"
        )
    config["PREDICT_THRESHOLD"] = threshold

    allowed = config["ALLOWED_IPS"]
    if isinstance(allowed, str):
        allowed = [part.strip() for part in allowed.split(",") if part.strip()]
    if not isinstance(allowed, list):
        raise ConfigError(f"ALLOWED_IPS must be a list of addresses or networks, got {allowed!r}")
    try:
        config["ALLOWED_NETWORKS"] = [ipaddress.ip_network(str(a), strict=False) for a in allowed]
    except ValueError as exc:
        raise ConfigError(f"ALLOWED_IPS has an entry that is not an address or network: {exc}") from None
    config["ALLOWED_IPS"] = allowed

    models = config["MODELS"]
    if not isinstance(models, dict):
        raise ConfigError("MODELS must be a table of name -> {type, path, ...}")
    for name, spec in models.items():
        if not isinstance(spec, dict) or not spec.get("type") or not spec.get("path"):
            raise ConfigError(f"MODELS.{name} must have a 'type' and a 'path', got {spec!r}")
    dirs = config["CLASSIFIER_DIRS"]
    if isinstance(dirs, str):
        dirs = [d for d in dirs.split(",") if d]
    if not isinstance(dirs, list):
        raise ConfigError(f"CLASSIFIER_DIRS must be a list of folders, got {dirs!r}")
    config["CLASSIFIER_DIRS"] = dirs
    if config["MAX_IMAGE_BYTES"] > config["MAX_CONTENT_LENGTH"]:
        # An image inside base64 JSON is 4/3 of its bytes; the body limit must admit it.
        config["MAX_CONTENT_LENGTH"] = config["MAX_IMAGE_BYTES"] * 4 // 3 + 4096
    return config
