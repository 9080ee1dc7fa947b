"""The ONNX runtime wrapper's process settings."""

from __future__ import annotations

import platform

import pytest

from models.runtime import limit_heap_retention


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's"
)
def test_glibc_accepts_the_fixed_mmap_threshold():
    assert limit_heap_retention() is True
