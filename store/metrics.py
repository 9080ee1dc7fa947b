"""The store's Prometheus counters, shared by the writer, the thumbnails and the sweeper."""

from __future__ import annotations

from prometheus_client import Counter

FAILURES = Counter(
    "image_store_failures_total",
    "Images the store could not keep or finish, by reason (disk, database, queue_full, "
    "broker_unavailable, thumbnail, unexpected).",
    ["reason"],
)
SAVED = Counter("image_store_saved_total", "Images written to the store, by source endpoint.", ["endpoint"])
THUMBNAILS = Counter("image_store_thumbnails_total", "Thumbnails finished, by outcome.", ["status"])
