"""What must hold after the run: the store against what was acknowledged, one node's image seen
through the other, each node's /metrics."""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, func, select

from bench.cluster.scenario import Timeline
from bench.cluster.services import Cluster, Node
from config import load_config
from store.records import DONE, PENDING
from store.render import serves_itself
from store.schema import images

# locust.py's request names -> the `endpoint` the store records for the images they send.
STORE_ENDPOINTS = {
    "/api/predict": "predict",
    "/api/classifier": "classifier",
    "/api/ocr": "ocr",
    "/image-64": "image_64",
    "/image-bin": "image_bin",
    "/images": "upload",
}
# Answers given after the image was handed to the store (/api/predict keeps a 422 low-certainty image).
ANSWERED = {200, 201, 422}


@dataclass
class EndpointCount:
    """One endpoint: requests sent, answered, and rows the store holds."""

    name: str
    endpoint: str
    kept: bool  # SAVE_ENDPOINTS lists it (uploads always are)
    sent: int
    answered: int
    rows: int

    @property
    def lost(self) -> int:
        """Answered images the store does not hold."""
        return max(0, self.answered - self.rows) if self.kept else 0

    @property
    def extra(self) -> int:
        """Rows beyond the requests sent: an image kept twice."""
        return max(0, self.rows - self.sent) if self.kept else 0


@dataclass
class StoreCheck:
    """The store against the acknowledged requests, and the files against the rows."""

    rows: int
    endpoints: list[EndpointCount]
    uploads_answered: int
    uploads_missing: list[str]  # ids answered 201 that have no row
    bad_files: list[str]  # rows whose file is missing or differs from its sha256
    missing_thumbnails: list[str]  # rows whose thumbnail is not done, or done with no file
    orphan_files: list[str]  # image files no row names (a write cut off before its commit)
    temp_files: int  # the store's own dot files left: journal locks, temporary files
    journal_entries: int  # of those, images journalled and not yet written (kept at next start)
    thumbnails_waited_s: float
    queued_while_stopped: int = 0  # images saved while the Celery worker was stopped
    caught_up_s: float | None = None  # from the worker's restart to the last of their thumbnails

    @property
    def ok(self) -> bool:
        """Every acknowledged image once in the database, on disk, with its thumbnail."""
        return not (
            self.uploads_missing
            or self.bad_files
            or self.missing_thumbnails
            or any(e.lost or e.extra for e in self.endpoints)
        )


def kept_endpoints(cluster: Cluster) -> set[str] | None:
    """The endpoints whose images the nodes keep (None: every one)."""
    settings = load_config(environ=cluster.nodes[0].environ)
    listed = settings.get("SAVE_ENDPOINTS")
    return None if listed is None else set(listed)


def wait_for_thumbnails(database_url: str, timeout: float) -> float:
    """Wait until no thumbnail is pending (the worker catches up, the sweeper re-sends); return the wait."""
    engine = create_engine(database_url)
    began = time.monotonic()
    try:
        while time.monotonic() - began < timeout:
            with engine.connect() as conn:
                pending = conn.execute(
                    select(func.count()).select_from(images).where(images.c.thumb_status == PENDING)
                ).scalar_one()
            if not pending:
                break
            time.sleep(0.25)
    finally:
        engine.dispose()
    return time.monotonic() - began


def check_store(
    cluster: Cluster, timeline: Timeline, records: list[dict[str, Any]], thumbnail_timeout: float
) -> StoreCheck:
    """Compare the database and the image folder with every request nginx answered."""
    waited = wait_for_thumbnails(cluster.postgres.url, thumbnail_timeout)
    engine = create_engine(cluster.postgres.url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(
                    images.c.id,
                    images.c.endpoint,
                    images.c.file_name,
                    images.c.sha256,
                    images.c.format,
                    images.c.width,
                    images.c.height,
                    images.c.thumb_status,
                    images.c.created_at,
                    images.c.thumb_updated_at,
                )
            ).all()
    finally:
        engine.dispose()
    root = cluster.image_dir
    by_id = {row.id: row for row in rows}
    per_endpoint = Counter(row.endpoint for row in rows)
    sent = [r for r in records if r.get("kind") in ("request", "calibration")]
    kept = kept_endpoints(cluster)
    counts = []
    for name, endpoint in STORE_ENDPOINTS.items():
        mine = [r for r in sent if r["name"] == name]
        counts.append(
            EndpointCount(
                name=name,
                endpoint=endpoint,
                kept=endpoint == "upload" or kept is None or endpoint in kept,
                sent=len(mine),
                answered=sum(r["status"] in ANSWERED for r in mine),
                rows=per_endpoint.get(endpoint, 0),
            )
        )
    upload_ids = [r["id"] for r in sent if r["name"] == "/images" and r.get("id")]
    bad_files, missing_thumbs = [], []
    thumbnail_size = int(load_config(environ=cluster.nodes[0].environ)["THUMBNAIL_SIZE"])
    for row in rows:
        path = root / row.file_name
        data = path.read_bytes() if path.is_file() else b""
        if not data or hashlib.sha256(data).hexdigest() != row.sha256:
            bad_files.append(row.id)
        thumb = root / "thumbs" / row.id[:2] / f"{row.id}.jpg"
        # A small PNG is its own thumbnail (store.render.own_thumbnail): done, and no JPEG.
        own = serves_itself(data, row.format, row.width, row.height, thumbnail_size)
        if row.thumb_status != DONE or not (own or (thumb.is_file() and thumb.stat().st_size > 0)):
            missing_thumbs.append(f"{row.id} ({row.thumb_status})")
    named = {row.file_name for row in rows}
    files = [p.relative_to(root) for p in root.rglob("*") if p.is_file()]
    files = [p for p in files if p.parts[0] != "thumbs"]
    # Dot names are the store's own: temporary files and the journal (.journal/) of each process.
    hidden = [p for p in files if any(part.startswith(".") for part in p.parts)]
    stopped = [
        r for r in rows if timeline.worker_stopped <= r.created_at.timestamp() < timeline.worker_started
    ]
    made = [r.thumb_updated_at.timestamp() for r in stopped if r.thumb_status == DONE]
    return StoreCheck(
        queued_while_stopped=len(stopped),
        caught_up_s=max(made) - timeline.worker_ready if stopped and len(made) == len(stopped) else None,
        rows=len(rows),
        endpoints=counts,
        uploads_answered=len(upload_ids),
        uploads_missing=[i for i in upload_ids if i not in by_id],
        bad_files=bad_files,
        missing_thumbnails=missing_thumbs,
        orphan_files=[str(p) for p in files if p not in hidden and str(p) not in named],
        temp_files=len(hidden),
        journal_entries=sum(p.suffix == ".entry" for p in hidden),
        thumbnails_waited_s=waited,
    )


@dataclass
class CrossNode:
    """An image saved through one node, then listed, downloaded and thumbnailed through the other."""

    saved_by: str
    read_by: str
    image_id: str | None = None
    listed: bool = False
    downloaded: bool = False  # the same bytes
    thumbnail_s: float | None = None  # until the other node served its thumbnail
    problem: str | None = None

    @property
    def ok(self) -> bool:
        """Saved, listed, downloaded and thumbnailed across nodes."""
        return self.listed and self.downloaded and self.thumbnail_s is not None


def marker_png() -> bytes:
    """A small PNG no other request sends (its bytes say when it was made)."""
    buf = io.BytesIO()
    image = Image.new("RGB", (48, 32), (int(time.time()) % 256, 90, 160))
    image.save(buf, format="PNG", pnginfo=_text_chunk(f"cluster check {time.time():.6f}"))
    return buf.getvalue()


def _text_chunk(text: str):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Comment", text)
    return info


def check_cross_node(saver: Node, reader: Node, timeout: float = 60) -> CrossNode:
    """Upload straight to `saver`, then find, download and get the thumbnail from `reader`."""
    import urllib.request

    result = CrossNode(saved_by=saver.name, read_by=reader.name)
    data = marker_png()
    request = urllib.request.Request(
        saver.base_url + "/images", data=data, method="POST", headers={"Content-Type": "image/png"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        result.image_id = json.loads(response.read())["id"]
    began = time.monotonic()
    status, body = reader.get("/images?endpoint=upload&per_page=100")
    result.listed = status == 200 and any(i["id"] == result.image_id for i in json.loads(body)["items"])
    status, body = reader.get(f"/images/{result.image_id}/download")
    result.downloaded = status == 200 and body == data
    while time.monotonic() - began < timeout:
        status, body = reader.get(f"/vignette/{result.image_id}")
        if status == 200:
            result.thumbnail_s = time.monotonic() - began
            break
        if status != 202:
            result.problem = f"/vignette answered {status}: {body[:200]!r}"
            break
        time.sleep(0.1)
    return result


@dataclass
class NodeMetrics:
    """What a node's own /metrics says (counted since the node last started)."""

    name: str
    status: int
    requests: dict[str, float] = field(default_factory=dict)  # status class -> count
    saved: float = 0.0
    store_failures: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        """Every request the node counted."""
        return sum(self.requests.values())


def node_metrics(node: Node) -> NodeMetrics:
    """Read one node's /metrics straight from it."""
    status, body = node.get("/metrics")
    result = NodeMetrics(name=node.name, status=status)
    if status != 200:
        return result
    requests: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    for family in text_string_to_metric_families(body.decode("utf-8", "replace")):
        for sample in family.samples:
            if sample.name == "http_requests_total":
                requests[f"{str(sample.labels.get('status', '?'))[:1]}xx"] += sample.value
            elif sample.name == "image_store_saved_total":
                result.saved += sample.value
            elif sample.name == "image_store_failures_total":
                failures[sample.labels.get("reason", "?")] += sample.value
    result.requests = dict(requests)
    result.store_failures = {k: v for k, v in failures.items() if v}
    return result


def log_tail(path: Path, lines: int = 15) -> str:
    """The end of a log file, for a report that failed."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
