"""Read a Teachable Machine labels.txt, as the converters and the served classifier both do."""

from __future__ import annotations

from pathlib import Path

from models.runtime import ModelFileError


def parse_labels(path: Path) -> list[str]:
    """Read a Teachable Machine labels.txt ("0 Name" per line, UTF-8, BOM and blank lines tolerated)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ModelFileError(f"labels file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"cannot read labels file {path} as UTF-8: {exc}") from None
    rows = [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not rows:
        raise ModelFileError(f"labels file {path} has no labels")
    indexed = [line.split(maxsplit=1) for _, line in rows]
    numbered = [parts[0].isascii() and parts[0].isdigit() for parts in indexed]
    if not all(numbered):
        if any(n and len(parts) > 1 for n, parts in zip(numbered, indexed, strict=True)):
            bad = next(n for (n, _), ok in zip(rows, numbered, strict=True) if not ok)
            raise ModelFileError(
                f"labels file {path} line {bad}: expected '<index> <name>' like the other lines"
            )
        return [line for _, line in rows]  # a plain list of names, one a line
    labels: dict[int, str] = {}
    for (number, _), parts in zip(rows, indexed, strict=True):
        if len(parts) < 2:
            raise ModelFileError(f"labels file {path} line {number}: index {parts[0]} has no name")
        index = int(parts[0])
        if index in labels:
            raise ModelFileError(f"labels file {path} line {number}: index {index} appears twice")
        labels[index] = parts[1].strip()
    if sorted(labels) != list(range(len(labels))):
        raise ModelFileError(
            f"labels file {path}: indexes must run from 0 to {len(labels) - 1}, got {sorted(labels)}"
        )
    return [labels[i] for i in range(len(labels))]
