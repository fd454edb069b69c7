"""Page-cache residency of the files a timed scan reads, checked right before it.

A "cached" scan is only cached if its pages are in memory when it starts, and
this VM's reclaim (DAMON) drops page cache that has been idle for ~60 s, so a
file read a minute ago may be half on disk again. Before each timed scan the
bench asks the kernel how much of the file is resident: `fincore` (util-linux)
when it is installed, else mincore(2) over a read-only mapping via ctypes. If
any of it is missing, the file is read once (which warms it) and checked again;
the fractions and whether it had to be warmed go into the results.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

FINCORE_TIMEOUT_S = 10.0
WARM_CHUNK = 16 << 20
FULLY = 0.999  # a partial last page or two of a huge file is rounding, not a cold file

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
MAP_FAILED = ctypes.c_void_p(-1).value


@dataclass(frozen=True)
class CacheCheck:
    """What one check before a timed scan found and did."""

    before: float  # resident fraction when checked
    after: float  # after warming (== before when it was not needed)
    warmed: bool
    warm_s: float
    method: str

    def as_dict(self) -> dict[str, object]:
        return {
            "before": round(self.before, 4),
            "after": round(self.after, 4),
            "warmed": self.warmed,
            "warm_s": round(self.warm_s, 3),
            "method": self.method,
        }


def method() -> str:
    return "fincore" if shutil.which("fincore") else "mincore"


def _fincore_bytes(path: Path) -> int | None:
    """Resident bytes per util-linux fincore; None if it failed (then mincore decides)."""
    try:
        done = subprocess.run(
            ["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
            capture_output=True,
            text=True,
            timeout=FINCORE_TIMEOUT_S,
            check=True,
        )
        return int(done.stdout.split()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def _mincore_bytes(path: Path) -> int:
    """Resident bytes per mincore(2): map the file read-only (touching nothing) and ask."""
    size = path.stat().st_size
    if size == 0:
        return 0
    fd = os.open(path, os.O_RDONLY)
    try:
        address = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if address in (None, MAP_FAILED):
            raise OSError(ctypes.get_errno(), "mmap failed")
        try:
            pages = -(-size // mmap.PAGESIZE)
            vector = ctypes.create_string_buffer(pages)
            if _libc.mincore(address, size, vector) != 0:
                raise OSError(ctypes.get_errno(), "mincore failed")
            resident = sum(byte & 1 for byte in vector.raw)
        finally:
            _libc.munmap(address, size)
    finally:
        os.close(fd)
    return min(size, resident * mmap.PAGESIZE)


def resident_bytes(path: Path) -> int:
    found = _fincore_bytes(path) if method() == "fincore" else None
    return found if found is not None else _mincore_bytes(path)


def resident_fraction(paths: Sequence[Path]) -> float:
    total = sum(path.stat().st_size for path in paths)
    return sum(resident_bytes(path) for path in paths) / total if total else 1.0


def warm(paths: Sequence[Path]) -> float:
    """Seconds to read every file once to its end (bounded by the files' sizes)."""
    started = time.perf_counter()
    for path in paths:
        with open(path, "rb", buffering=0) as source:
            while source.read(WARM_CHUNK):
                pass
    return time.perf_counter() - started


def ensure_cached(paths: Sequence[Path]) -> CacheCheck:
    """Check residency; warm and check again if any page is missing."""
    before = resident_fraction(paths)
    if before >= FULLY:
        return CacheCheck(before, before, False, 0.0, method())
    warm_s = warm(paths)
    return CacheCheck(before, resident_fraction(paths), True, warm_s, method())


def summary(checks: Sequence[CacheCheck]) -> str:
    """One phrase for a row's note: the lowest fraction seen and how often it was warmed."""
    if not checks:
        return "page cache not checked"
    warmed = sum(check.warmed for check in checks)
    lowest = min(check.before for check in checks)
    after = min(check.after for check in checks)
    text = f"page cache ({checks[0].method}) before each of {len(checks)} timed scans: lowest {lowest:.1%} resident"
    return text + (f"; warmed {warmed}x, then ≥ {after:.1%}" if warmed else "")
