"""Benchmarks: gunicorn with the production config under wrk; `python -m bench.run` (make bench)."""
