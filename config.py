"""Configuration: defaults in code, then a TOML/JSON file, then environment variables, then overrides.

- `Settings` lists every setting with its type, default and bounds.
- The file's path comes from the environment variable VISION_CONFIG (TOML or JSON, by extension).
- Every setting can be set from the environment as VISION_<NAME>: text settings take the value as
  written, the others parse it as JSON when it parses (else as a string); the conventional
  unprefixed HOST, PORT, DATABASE_URL and CELERY_BROKER_URL are read too, the prefixed form winning.
- Keys that are not settings pass through untouched (Flask's own, such as TESTING).
- A wrong value stops start-up with a ConfigError naming the setting.

The web app (create_app), gunicorn.conf.py, serve.py and the Celery worker all read it here.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    computed_field,
)

ENV_PREFIX = "VISION_"
CONFIG_FILE_ENV = "VISION_CONFIG"
UNPREFIXED_ENV = ("HOST", "PORT", "DATABASE_URL", "CELERY_BROKER_URL")
# The one true/false vocabulary, for settings and for request options (blueprints/options.py).
TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")

MiB = 1024 * 1024


class ConfigError(ValueError):
    """A setting with a wrong value; the message names the setting."""


def _whole(value: Any) -> Any:
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be a whole number")
    return value


def _flag(value: Any) -> bool:
    if isinstance(value, str) and value.strip().lower() in TRUE + FALSE:
        return value.strip().lower() in TRUE
    if isinstance(value, int) and value in (0, 1):  # JSON 1 / 0, and booleans
        return bool(value)
    raise ValueError("must be true or false")


def _percent(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError("must be a percentage from 0 to 100") from None


def _comma_list(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _log_level(value: str) -> str:
    level = value.upper()
    if level not in logging.getLevelNamesMapping():
        raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
    return level


def _token(value: Any) -> Any:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None  # unset: only loopback clients may change the store
    if not isinstance(value, str) or len(value) < 16 or not value.isascii() or not value.isprintable():
        raise ValueError("must be at least 16 printable ASCII characters (e.g. `openssl rand -hex 32`)")
    return value


def _networks(values: list[str]) -> list[str]:
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError as exc:
            raise ValueError(f"has an entry that is not an address or network: {exc}") from None
    return values


Whole = Annotated[int, BeforeValidator(_whole)]
Flag = Annotated[bool, BeforeValidator(_flag)]
Percent = Annotated[float, BeforeValidator(_percent), Field(ge=0, le=100)]
Words = Annotated[list[str], BeforeValidator(_comma_list)]
Text = Annotated[str, Field(min_length=1)]


class ModelSpec(BaseModel):
    """One served model: its type, its file, and the type's own options (labels, detector, ...)."""

    model_config = ConfigDict(extra="allow")

    type: Text
    path: Text


def served_path(name: str) -> Path:
    """Return the file a default model is served from (e.g. its int8 file), absolute."""
    path = Path(_default_models()[name].path)
    return path if path.is_absolute() else Path(__file__).resolve().parent / path


def _default_models() -> dict[str, ModelSpec]:
    return {
        "numbers": ModelSpec(type="numbers", path="models/numbers.int8.onnx"),
        "doodles": ModelSpec(
            type="doodle", path="models/doodles.int8.onnx", labels="models/doodles_labels.txt"
        ),
        "ocr": ModelSpec(type="ocr", path="models/ocr.int8.onnx"),
        "tracking": ModelSpec(
            type="tracking", path="models/tracking.onnx", detector="models/face_detector.onnx"
        ),
    }


class Settings(BaseModel):
    """Every setting, with its type, default and bounds."""

    model_config = ConfigDict(extra="allow", validate_default=True)

    # Where serve.py and gunicorn (gunicorn.conf.py) listen; the Docker image sets 0.0.0.0:8000.
    HOST: Text = "127.0.0.1"
    PORT: Whole = Field(5000, ge=1, le=65535)
    # Optional allow-list of client addresses or networks (CIDR); empty means everyone.
    ALLOWED_IPS: Annotated[Words, AfterValidator(_networks)] = []
    # Honour X-Forwarded-For through at most this many proxies (nginx in front: 1), and only from
    # the proxies at TRUSTED_PROXY_IPS: a client that reaches the server directly cannot forge it.
    TRUSTED_PROXIES: Whole = Field(0, ge=0, le=10)
    TRUSTED_PROXY_IPS: Annotated[Words, AfterValidator(_networks)] = ["127.0.0.1", "::1"]
    # The credential for changing or removing stored data and for the bulk export (blueprints/auth.py),
    # sent as `Authorization: Bearer <token>`; unset, only loopback clients may do those.
    ADMIN_TOKEN: Annotated[str | None, BeforeValidator(_token)] = None
    LOG_LEVEL: Annotated[str, AfterValidator(_log_level)] = "INFO"
    LOG_FILE: str | None = None
    LOG_FILE_MAX_BYTES: Whole = Field(10 * MiB, ge=1024)
    LOG_FILE_BACKUPS: Whole = Field(5, ge=0, le=100)
    # Request bodies and decoded images. MAX_CONTENT_LENGTH, the whole body, is derived from
    # MAX_IMAGE_BYTES (body_limit below): an image of MAX_IMAGE_BYTES fits in every encoding, and one
    # byte more is 413 in every encoding. A larger value set here is kept, a smaller one raised.
    MAX_CONTENT_LENGTH: Whole | None = Field(None, ge=1024)
    MAX_IMAGE_BYTES: Whole = Field(8 * MiB, ge=1024)
    MAX_IMAGE_PIXELS: Whole = Field(40_000_000, ge=1)
    # URLs (path and query, as sent) longer than this are 414 JSON on API paths; gunicorn.conf.py lets
    # request lines up to gunicorn's own maximum (8,190 bytes) reach the app.
    MAX_URL_LENGTH: Whole = Field(4096, ge=256, le=8000)
    # Models: name -> {"type", "path", options}; paths are relative to the project root.
    MODELS: dict[str, ModelSpec] = Field(default_factory=_default_models)
    # Folders whose sub-folders hold Teachable Machine exports (keras_model.h5 + labels.txt).
    CLASSIFIER_DIRS: Words = ["models/classifiers"]
    DEFAULT_CLASSIFIER: str = "doodles"
    ONNX_THREADS: Whole = Field(1, ge=1, le=64)
    # Intel IPP inside OpenCV: off by default, because each IPP-dispatched call runs a CPUID
    # instruction, which traps to the hypervisor on a virtual machine (8 us a call on ours,
    # 10-13% of a /api/predict request's CPU); on bare metal, turning it on may help large images.
    OPENCV_IPP: Flag = False
    # Certainty (percent) under which /api/predict answers 422 low_certainty.
    PREDICT_THRESHOLD: Percent = 60.0
    # The image store.
    SAVE_IMAGES: Flag = True
    IMAGE_DIR: str = "saved_images"
    DATABASE_URL: str | None = None
    CELERY_BROKER_URL: str | None = None
    THUMBNAIL_SIZE: Whole = Field(128, ge=16, le=1024)
    THUMBNAIL_WORKERS: Whole = Field(1, ge=1, le=32)
    # Seconds between sweeps that re-send thumbnails still pending (broker was down, worker died).
    THUMBNAIL_RETRY_SECONDS: Whole = Field(60, ge=1, le=86400)
    # Images waiting for the background writer; when it is full a request waits up to
    # STORE_QUEUE_WAIT_MS for room, then its image is dropped and counted.
    STORE_QUEUE_SIZE: Whole = Field(256, ge=1, le=100_000)
    STORE_QUEUE_WAIT_MS: Whole = Field(2000, ge=0, le=30_000)
    # How the writer flushes a batch of files before their rows commit: "batch" (one syncfs on
    # Linux >= 5.8, else an fsync each) or "file" (an fsync each). store/durable.py says why.
    STORE_SYNC: Literal["batch", "file"] = "batch"
    # The images of these endpoints are kept (when SAVE_IMAGES is on); uploads always are. Webcam
    # frames (image_64, image_bin, track) are not kept unless listed.
    SAVE_ENDPOINTS: Words = ["predict", "classifier", "ocr"]
    # Retention (store/retention.py): unlabelled images older than RETENTION_DAYS are deleted, and the
    # oldest unlabelled ones while the store holds more than RETENTION_MAX_IMAGES images or
    # RETENTION_MAX_BYTES bytes (0 turns a limit off). Labelled images are never deleted. Checked every
    # RETENTION_CHECK_SECONDS, which also refreshes the store's size in /metrics.
    RETENTION_DAYS: Whole = Field(30, ge=0, le=36500)
    RETENTION_MAX_IMAGES: Whole = Field(50_000, ge=0)
    RETENTION_MAX_BYTES: Whole = Field(2048 * MiB, ge=0)
    RETENTION_CHECK_SECONDS: Whole = Field(60, ge=1, le=86400)

    @computed_field
    @property
    def ALLOWED_NETWORKS(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:  # noqa: N802
        """ALLOWED_IPS parsed, as the allow-list checks them."""
        return [ipaddress.ip_network(a, strict=False) for a in self.ALLOWED_IPS]

    @computed_field
    @property
    def TRUSTED_PROXY_NETWORKS(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:  # noqa: N802
        """TRUSTED_PROXY_IPS parsed, as the client address is resolved with them."""
        return [ipaddress.ip_network(a, strict=False) for a in self.TRUSTED_PROXY_IPS]

    def model_post_init(self, context: Any) -> None:
        """Size the request body limit from the image limit (never under it)."""
        self.MAX_CONTENT_LENGTH = max(self.MAX_CONTENT_LENGTH or 0, body_limit(self.MAX_IMAGE_BYTES))


def body_limit(image_bytes: int) -> int:
    """Return the body limit that admits an image of `image_bytes` in every encoding.

    Base64 (in JSON, as a data URL) is 4/3 of the bytes, raw and multipart about 1/1; 64 KiB more
    holds the JSON or multipart around the image and its options. Rounded up to a whole MiB, as
    nginx's client_max_body_size is written: 8 MiB images give 11 MiB bodies.
    """
    return math.ceil((4 * math.ceil(image_bytes / 3) + 64 * 1024) / MiB) * MiB


# Settings whose value is text: the environment's value is taken as written, never parsed as JSON.
TEXT_SETTINGS = frozenset(
    name for name, field in Settings.model_fields.items() if field.annotation in (str, str | None)
)
DEFAULTS: dict[str, Any] = Settings().model_dump()


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
    raw: dict[str, str] = {name: environ[name] for name in UNPREFIXED_ENV if environ.get(name)}
    for key, value in environ.items():
        if key.startswith(ENV_PREFIX) and key != CONFIG_FILE_ENV:
            raw[key[len(ENV_PREFIX) :]] = value
    return {name: value if name in TEXT_SETTINGS else parse_env_value(value) for name, value in raw.items()}


def load_config(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Merge file, environment and overrides over the defaults, then validate."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    if environ.get(CONFIG_FILE_ENV):
        values.update(read_file(environ[CONFIG_FILE_ENV]))
    values.update(read_env(environ))
    if overrides:
        values.update(overrides)
    try:
        settings = Settings.model_validate(values)
    except ValidationError as exc:
        raise _config_error(exc) from None
    return settings.model_dump()


def _config_error(exc: ValidationError) -> ConfigError:
    """Name the first wrong setting, what it must be, and the value it got."""
    error = exc.errors()[0]
    name = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    message = message[:1].lower() + message[1:]
    field = Settings.model_fields.get(str(error["loc"][0]))
    if error["type"] in ("greater_than_equal", "less_than_equal") and field is not None:
        low = next((m.ge for m in field.metadata if hasattr(m, "ge")), None)
        high = next((m.le for m in field.metadata if hasattr(m, "le")), None)
        message = f"must be between {low} and {high}" if high is not None else f"must be >= {low}"
    got = "a value not shown (a secret)" if name == "ADMIN_TOKEN" else repr(error.get("input"))
    return ConfigError(f"{name} {message}, got {got}")
