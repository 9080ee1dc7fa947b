# The vision service: gunicorn + the ONNX models, as a non-root user.
#   docker build -t vision .
#   docker run --rm -p 8000:8000 vision          # then http://localhost:8000
# See docs/DEPLOYMENT.md (docker-compose.yml adds PostgreSQL, Redis and a Celery worker).

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- build: a virtual environment with the serving dependencies only (no TensorFlow) ---------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# Dependencies first, from pyproject.toml's exact pins (the serving ones, PostgreSQL driver
# included), so code changes reuse this layer.
WORKDIR /src
COPY pyproject.toml ./
RUN python -c "import tomllib; reqs = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; \
open('requirements.txt', 'w').write(chr(10).join(reqs) + chr(10))" \
    && pip install --no-compile -r requirements.txt

# The application, with its models baked in; readable by all, writable by root only.
COPY . /app
WORKDIR /app
RUN chmod -R a+rX,go-w /app \
    && python -m compileall -q /app /opt/venv \
    && VISION_SAVE_IMAGES=false VISION_LOG_LEVEL=WARNING VISION_DATABASE_URL=sqlite:// VISION_IMAGE_DIR=/tmp/images \
       python -c "import sys; from app import create_app; r = create_app().extensions['registry']; \
print('models:', sorted(r.models), 'failed:', r.failures); sys.exit(0 if r.ready else 1)" \
    && rm -rf /app/instance

# --- runtime: the same base, the venv and the app, no build tools --------------------------
FROM ${PYTHON_IMAGE} AS runtime

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    VISION_IMAGE_DIR=/data/images \
    DATABASE_URL=sqlite:////data/images.db

RUN groupadd --system --gid 10001 vision \
    && useradd --system --uid 10001 --gid vision --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin vision \
    && mkdir -p /data/images /app/instance \
    && chown -R vision:vision /data /app/instance

COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app

WORKDIR /app
USER 10001:10001
EXPOSE 8000
# Saved images and the embedded SQLite database; compose mounts shared storage here.
VOLUME ["/data"]

# No curl in the slim image: the standard library asks /health, on the port the settings give.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; from config import load_config; urllib.request.urlopen(f\"http://127.0.0.1:{load_config()['PORT']}/health\", timeout=4)"]

# gunicorn.conf.py binds HOST:PORT from the settings (above); GUNICORN_WORKERS defaults to the CPU count.
CMD ["gunicorn", "-c", "gunicorn.conf.py", "app:create_app()"]
