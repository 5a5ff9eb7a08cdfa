"""Atomic file writes, shared by every layer (this package is the lowest one).

Run folders, tables, checkpoints and exports are all written the same way: into a
temporary file beside the target (named per process, so two writers never share
one), flushed to disk, then renamed over it. A crash, an interrupt or a power cut
mid-write leaves the old file or the new one, never half of one, so nothing already
written is lost.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Callable


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Create ``path``'s folder if needed, call ``write(f)`` on a binary file beside it,
    flush it to disk, then rename that file over ``path``. On any error the temporary
    file is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """``path.write_text(text)`` (UTF-8), atomically."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """``path.write_bytes(data)``, atomically."""
    atomic_write(path, lambda f: f.write(data))
