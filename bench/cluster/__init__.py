"""Several nodes behind nginx, on one machine: `python -m bench.cluster` (or `make cluster`).

On loopback ports chosen at run time it starts PostgreSQL, Redis, two gunicorn nodes sharing one
image folder, a Celery worker and nginx with deploy/nginx/vision.conf, drives them with locust.py,
kills a node, stops the worker, reloads both nodes in turn, then checks and prints what held.

    services.py   the processes (tests/store_servers.py starts PostgreSQL, Redis and the worker)
    proxy.py      nginx's configuration from the example site, and its access log read back
    recorder.py   a second locustfile that writes every request down
    scenario.py   the load and the faults, on one clock
    checks.py     the store against the answers, one node's image through the other, /metrics
    report.py     the figures and the closing note
    measure.py    all of it, for the command line and the test
"""
