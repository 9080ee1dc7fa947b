"""The store's Prometheus metrics, shared by the writer, the journal, the thumbnails and retention."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

FAILURES = Counter(
    "image_store_failures_total",
    "Images the store could not keep or finish, by reason (disk, database, queue_full, "
    "broker_unavailable, thumbnail, unexpected).",
    ["reason"],
)
SAVED = Counter("image_store_saved_total", "Images written to the store, by source endpoint.", ["endpoint"])
THUMBNAILS = Counter("image_store_thumbnails_total", "Thumbnails finished, by outcome.", ["status"])
DROPPED = Counter(
    "image_store_dropped_total",
    "Images of answered requests that will not be kept, by reason (queue_full, journal, closed, "
    "journal_unreadable).",
    ["reason"],
)
RECOVERED = Counter(
    "image_store_recovered_total",
    "Journalled images kept at start-up after the process that took them ended.",
)
RETAINED_DELETED = Counter(
    "image_store_retention_deleted_total",
    "Images deleted by retention, by rule (age, count, bytes).",
    ["rule"],
)
# Set from the database by every worker (after each retention pass): the most recent value is the size.
STORE_IMAGES = Gauge(
    "image_store_images",
    "Images in the store, by labelled (true/false).",
    ["labelled"],
    multiprocess_mode="mostrecent",
)
STORE_BYTES = Gauge(
    "image_store_bytes",
    "Bytes of the original files in the store, by labelled (true/false).",
    ["labelled"],
    multiprocess_mode="mostrecent",
)
