"""Retention: the store never fills the disk. Unlabelled images go first; labelled ones are kept.

Every `interval` seconds each process (a gunicorn worker, the dev server) runs one pass:

- age: unlabelled images older than `days` are deleted;
- count, bytes: while the store holds more than `max_images` images or `max_bytes` bytes of
  original files, the oldest unlabelled images are deleted. Labelled images count towards the
  limits but are never deleted (the log says when they alone exceed one);
- the store's size (images and bytes, labelled or not) is set in /metrics;
- journalled images whose save failed (database down) are queued again.

Rows go in batches, `DELETE ... WHERE label IS NULL RETURNING id`, so an image labelled meanwhile
stays; then their files and thumbnails. Passes in several processes at once are harmless.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import delete, select
from sqlalchemy.exc import SQLAlchemyError

from store.metrics import RETAINED_DELETED, STORE_BYTES, STORE_IMAGES
from store.records import StoreError
from store.schema import images, write_transaction

if TYPE_CHECKING:
    from store.images import ImageStore

log = logging.getLogger(__name__)

BATCH = 500


class Retention:
    """Delete unlabelled images by age, count and bytes, every `interval` seconds, on a daemon thread."""

    def __init__(
        self,
        store: ImageStore,
        *,
        days: int = 30,
        max_images: int = 0,
        max_bytes: int = 0,
        interval: float = 60.0,
    ):
        self.store = store
        self.days = days
        self.max_images = max_images
        self.max_bytes = max_bytes
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the passes (once): the first now, then every `interval` seconds."""
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._loop, name="image-store-retention", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run()
                self.store.writer.retry_failed()
            except Exception as exc:  # the database may be down: try again next round
                log.warning("image store retention pass failed: %s", exc)
            if self._stop.wait(self.interval):
                return

    def close(self) -> None:
        """Stop the passes."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def run(self, now: datetime | None = None) -> dict[str, int]:
        """Run one pass; return how many images each rule deleted."""
        now = now or datetime.now(UTC)
        deleted = {"age": 0, "count": 0, "bytes": 0}
        if self.days:
            deleted["age"] = self._delete_oldest(older_than=now - timedelta(days=self.days))
        size = self.store.size()
        if self.max_images and size["images"] > self.max_images:
            deleted["count"] = self._delete_oldest(count=size["images"] - self.max_images)
            size = self.store.size()
        if self.max_bytes and size["bytes"] > self.max_bytes:
            deleted["bytes"] = self._delete_oldest(byte_count=size["bytes"] - self.max_bytes)
        size = self.refresh_metrics()
        for rule, count in deleted.items():
            if count:
                RETAINED_DELETED.labels(rule).inc(count)
                log.info("retention deleted %d unlabelled images (%s)", count, rule)
        if (self.max_images and size["images"] > self.max_images) or (
            self.max_bytes and size["bytes"] > self.max_bytes
        ):
            log.warning(
                "the image store holds %d images (%d bytes), over RETENTION_MAX_IMAGES %d or "
                "RETENTION_MAX_BYTES %d, and %d of them are labelled, which retention keeps: "
                "export and delete them, or raise the limits",
                size["images"],
                size["bytes"],
                self.max_images,
                self.max_bytes,
                size["labelled_images"],
            )
        return deleted

    def _delete_oldest(
        self, *, count: int | None = None, byte_count: int | None = None, older_than: datetime | None = None
    ) -> int:
        """Delete the oldest unlabelled images: `count` of them, enough for `byte_count` bytes, or all
        older than `older_than`; return how many went."""
        deleted = freed = 0
        while True:
            want = BATCH if count is None else min(BATCH, count - deleted)
            if want <= 0 or (byte_count is not None and freed >= byte_count):
                return deleted
            query = (
                select(images.c.id, images.c.byte_size)
                .where(images.c.label.is_(None))
                .order_by(images.c.created_at, images.c.id)
                .limit(want)
            )
            if older_than is not None:
                query = query.where(images.c.created_at < older_than)
            self.store.ensure_schema()
            with self.store.engine.connect() as conn:
                candidates = conn.execute(query).all()
            chosen, planned = [], freed
            for image_id, byte_size in candidates:
                if byte_count is not None and planned >= byte_count:
                    break
                chosen.append(image_id)
                planned += byte_size
            removed = self._delete(chosen) if chosen else []
            deleted += len(removed)
            freed += sum(size for _, size in removed)
            if not removed or len(candidates) < want:
                return deleted

    def _delete(self, ids: list[str]) -> list[tuple[str, int]]:
        """Delete rows that are still unlabelled, then their files; return (id, bytes) of each."""
        store = self.store
        try:
            with write_transaction(store.engine) as conn:
                rows = conn.execute(
                    delete(images)
                    .where(images.c.id.in_(ids), images.c.label.is_(None))
                    .returning(images.c.id, images.c.file_name, images.c.byte_size)
                ).all()
        except SQLAlchemyError as exc:
            raise StoreError("database", f"retention could not delete images: {exc}") from exc
        # Rows first: a file whose row is gone is invisible, a row without its file is not.
        for image_id, file_name, _ in rows:
            for path in (store.image_dir / file_name, store.thumbnail_path(image_id)):
                try:
                    path.unlink(missing_ok=True)
                except OSError as exc:
                    log.warning("retention could not remove %s: %s", path, exc)
        return [(image_id, byte_size) for image_id, _, byte_size in rows]

    def refresh_metrics(self) -> dict[str, int]:
        """Set the store's size in /metrics; return it."""
        size = self.store.size()
        STORE_IMAGES.labels("true").set(size["labelled_images"])
        STORE_IMAGES.labels("false").set(size["images"] - size["labelled_images"])
        STORE_BYTES.labels("true").set(size["labelled_bytes"])
        STORE_BYTES.labels("false").set(size["bytes"] - size["labelled_bytes"])
        return size
