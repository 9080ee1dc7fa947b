"""The store's reads: one record, a page of records, its size, its models, pending thumbnails.

Mixed into ImageStore (store.images), whose engine and ensure_schema() they use. Lists never read
the EXIF column (SUMMARY_COLUMNS): it is the large one, and a list never shows it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import case, func, select
from sqlalchemy.engine import Engine

from store.records import PENDING, InvalidImageId, StoredImage, as_utc, validate_id
from store.schema import SUMMARY_COLUMNS, images


class StoreQueries:
    """Read-only queries of the images table."""

    engine: Engine

    def ensure_schema(self) -> None:  # pragma: no cover - ImageStore's
        raise NotImplementedError

    def get(self, image_id: str, *, exif: bool = True) -> StoredImage | None:
        """Return a record (its EXIF None unless `exif`), or None when there is none with this id."""
        try:
            validate_id(image_id)
        except InvalidImageId:
            return None
        self.ensure_schema()
        columns = (images,) if exif else SUMMARY_COLUMNS
        with self.engine.connect() as conn:
            row = conn.execute(select(*columns).where(images.c.id == image_id)).mappings().first()
        return StoredImage.from_row(row) if row else None

    def list(
        self,
        *,
        page: int = 1,
        per_page: int = 24,
        model: str | None = None,
        label: str | None = None,
        labelled: bool | None = None,
        endpoint: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> tuple[list[StoredImage], int]:
        """Return one page of records (without EXIF), newest first, and the total that match."""
        self.ensure_schema()
        conditions = []
        if model is not None:
            conditions.append(images.c.model == model)
        if label is not None:
            conditions.append(images.c.label == label)
        if labelled is True:
            conditions.append(images.c.label.is_not(None))
        elif labelled is False:
            conditions.append(images.c.label.is_(None))
        if endpoint is not None:
            conditions.append(images.c.endpoint == endpoint)
        if since is not None:
            conditions.append(images.c.created_at >= as_utc(since))
        if until is not None:
            conditions.append(images.c.created_at < as_utc(until))
        query = (
            select(*SUMMARY_COLUMNS)
            .where(*conditions)
            .order_by(images.c.created_at.desc(), images.c.id.desc())
            .limit(per_page)
            .offset((page - 1) * per_page)
        )
        with self.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(images).where(*conditions)).scalar_one()
            rows = conn.execute(query).mappings().all()
        return [StoredImage.from_row(r) for r in rows], int(total)

    def size(self) -> dict[str, int]:
        """Return the store's size: images and bytes of their files, in all and labelled."""
        self.ensure_schema()
        labelled = images.c.label.is_not(None)
        query = select(
            func.count(),
            func.coalesce(func.sum(images.c.byte_size), 0),
            func.coalesce(func.sum(case((labelled, 1), else_=0)), 0),
            func.coalesce(func.sum(case((labelled, images.c.byte_size), else_=0)), 0),
        ).select_from(images)
        with self.engine.connect() as conn:
            counts = [int(n) for n in conn.execute(query).one()]
        return dict(zip(("images", "bytes", "labelled_images", "labelled_bytes"), counts, strict=True))

    def pending_count(self) -> int:
        """Return how many thumbnails are pending."""
        self.ensure_schema()
        with self.engine.connect() as conn:
            query = select(func.count()).select_from(images).where(images.c.thumb_status == PENDING)
            return int(conn.execute(query).scalar_one())

    def models(self) -> list[str]:
        """Return the model names that have images, sorted."""
        self.ensure_schema()
        with self.engine.connect() as conn:
            rows = conn.execute(select(images.c.model).where(images.c.model.is_not(None)).distinct())
            return sorted(r[0] for r in rows)
