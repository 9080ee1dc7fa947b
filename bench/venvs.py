"""The pinned virtual environments of the peers the benchmarks compare with (bench/peers/.venv-*).

Each is created once and reinstalled only when what it is installed from changes: a stamp file in
the venv holds the SHA-256 of the pins file (and of any other file named, e.g. pyproject.toml).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.payloads import ROOT


def stamp(pins: Path, also: Sequence[Path] = ()) -> str:
    """Return the hash of the files an environment is installed from."""
    digest = hashlib.sha256()
    for path in (pins, *also):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def installed(venv: Path, pins: Path, also: Sequence[Path] = ()) -> bool:
    """Say whether `venv` is installed from the current `pins` (and `also`)."""
    marker = venv / ".installed"
    python = venv / "bin" / "python"
    return python.is_file() and marker.is_file() and marker.read_text().strip() == stamp(pins, also)


def ensure(
    venv: Path, pins: Path, *, label: str, pip_args: Sequence[str] = (), also: Sequence[Path] = ()
) -> Path:
    """Create or update `venv` from `pins` (pip install [pip_args] -r pins, from the repo root); return its python."""
    python = venv / "bin" / "python"
    if installed(venv, pins, also):
        return python
    print(f"installing {label} into {venv.relative_to(ROOT)} ...", flush=True)
    if not python.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *pip_args, "-r", str(pins)], cwd=ROOT, check=True
    )
    (venv / ".installed").write_text(stamp(pins, also) + "\n")
    return python
