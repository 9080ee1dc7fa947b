"""gunicorn settings for production: `gunicorn -c gunicorn.conf.py "app:create_app()"`."""

import multiprocessing
import os
import shutil
import sys
import tempfile
from pathlib import Path

# The app's settings say where to listen: gunicorn runs from its own bin folder, so the project
# folder goes on the path first. A wrong setting stops gunicorn here, naming it.
_root = str(Path(__file__).resolve().parent)
if _root not in sys.path:
    sys.path.insert(0, _root)
from config import load_config  # noqa: E402

_settings = load_config()
_host = f"[{_settings['HOST']}]" if ":" in _settings["HOST"] else _settings["HOST"]  # IPv6 in brackets

# HOST:PORT from the settings (default 127.0.0.1:5000; the Docker image sets HOST=0.0.0.0 PORT=8000).
# GUNICORN_BIND overrides it for one run (bench, load tests), as gunicorn's own --bind does.
bind = os.environ.get("GUNICORN_BIND") or f"{_host}:{_settings['PORT']}"

# One worker per core: inference is CPU-bound, more processes than cores only add switching.
workers = int(os.environ.get("GUNICORN_WORKERS", multiprocessing.cpu_count()))

# gthread: a few threads per worker overlap request I/O (upload, JSON, saving) with inference.
# ONNX Runtime sessions are thread-safe and use 1 intra-op thread each (ONNX_THREADS).
# Two: in interleaved runs at 8 clients (docs/PERFORMANCE.md, 2026-12-04), 4 threads took turns on
# one core's GIL and queued behind each other: p99 3.0-3.1x p50 on the 400 px canvas, 3.3-4.4x on
# the page's export, 3.5-7.2x on /health and /api/system_info. With 2: 1.4-2.5x on every model
# route, 2.6-3.3x on those two, and the digit and doodle routes served 3-16% more requests/s. One
# thread met every tail goal too, but a long request (an OCR page: seconds) then holds its worker's
# queued connections, and uploads (which wait on fsync) lost 7-29%. GUNICORN_THREADS sets it.
# Balanced: a worker takes a new connection only while no sibling holds fewer (gthread_balanced.py);
# plain gthread let every kept-alive connection land on one worker in 7 of 18 benchmark rounds.
worker_class = "gthread_balanced.BalancedThreadWorker"
threads = int(os.environ.get("GUNICORN_THREADS", "2"))

# Never load the app before the fork: each worker builds its own model registry after forking,
# because ONNX Runtime/TensorFlow state created before a fork can hang when used after it.
preload_app = False

# A request that takes 30 s is stuck (inference is milliseconds); restart the worker.
timeout = 30
# Let in-flight requests finish on reload or shutdown.
graceful_timeout = 20
# Keep-alive between a load balancer and gunicorn. A request body the app did not read (a 413) is
# drained up to 64 KiB before the connection is reused; a longer one closes the connection after
# the answer, so a request pipelined behind it is never read from the middle of a body.
keepalive = 5

# The longest request line (method, URL, version) gunicorn hands to the app: gunicorn's own maximum.
# The app answers URLs over MAX_URL_LENGTH (4,096 by default) with a JSON 414; only a line past
# 8,190 bytes is refused by gunicorn itself, with its own HTML 414, before the app sees it (0
# would mean "unlimited" here, which no server should offer).
limit_request_line = 8190

# Recycle workers now and then so slow leaks cannot grow without bound; jitter avoids all at once.
# At a few thousand requests/s a worker would restart every few seconds with 20,000, each restart
# costing a second of start-up; 200,000 is still hours at a normal service's rate.
max_requests = 200000
max_requests_jitter = 20000

# No control socket: gunicorn 27 puts it in ~/.gunicorn, shared by every instance and read-only
# in containers and systemd sandboxes; nothing here uses gunicornc.
control_socket_disable = True

# Logs to stdout/stderr, for journald or docker logs; the app logs each request itself.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")

# Prometheus metrics from every worker go to one folder, so /metrics sums all workers.
# Set before any worker imports prometheus_client; emptied at each start.
_metrics_dir = os.environ.setdefault(
    "PROMETHEUS_MULTIPROC_DIR", os.path.join(tempfile.gettempdir(), f"vision-metrics-{os.getpid()}")
)


def on_starting(server):
    """Start with an empty metrics folder so old workers' counts are not added."""
    shutil.rmtree(_metrics_dir, ignore_errors=True)
    os.makedirs(_metrics_dir, exist_ok=True)


def child_exit(server, worker):
    """Mark a dead worker's gauges so they stop counting and free its place in the connection table."""
    from prometheus_client import multiprocess

    import gthread_balanced

    multiprocess.mark_process_dead(worker.pid)
    gthread_balanced.release(worker.pid)
