"""Files on disk: hashed in chunks, and written whole or not at all."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path


def file_sha256(path: Path) -> str:
    """Return the hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_atomic(target: Path, write: Callable[[Path], object]) -> None:
    """Let `write` fill a temporary file in the target's folder, then rename it into place.

    Readers see the old file or the new one, never half of one; a failed write leaves no
    temporary file behind.
    """
    target = Path(target)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the file is as readable as any other
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# An absolute path inside a message: POSIX (/a/b, not the path of a URL) or Windows (C:\a\b).
_ABSOLUTE = re.compile(r"(?<![\w.~/:-])/(?:[^\s/'\"(),;]+/)*[^\s/'\"(),;:]+|\b[A-Za-z]:\\[^\s'\"(),;]+")


def shown_path(path: str | os.PathLike, root: Path) -> str:
    """Return a path as the outside may see it: relative to the project root, else its file name."""
    text = os.fspath(path)
    if re.match(r"[A-Za-z]:\\", text):
        return text.rsplit("\\", 1)[-1]
    path = Path(text)
    if not path.is_absolute():
        return path.as_posix()
    for base in (root, root.resolve()):
        if path.is_relative_to(base):
            return path.relative_to(base).as_posix()
    return path.name or "."


def without_paths(text: str, root: Path) -> str:
    """Replace every absolute path in a message by its shown form (see shown_path)."""
    for base in sorted({str(root), str(root.resolve())}, key=len, reverse=True):
        # The root first, as a whole: it may hold spaces, which the pattern does not cross.
        text = text.replace(base.rstrip(os.sep) + os.sep, "")
    return _ABSOLUTE.sub(lambda m: shown_path(m.group(0), root), text)
