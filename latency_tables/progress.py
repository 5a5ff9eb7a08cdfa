"""Progress bars that stay readable in CI logs: redrawn at most every few seconds when
the output is not a terminal."""
from __future__ import annotations

import sys


def progress_bar(**kwargs):
    from tqdm import tqdm

    if not sys.stderr.isatty():
        kwargs.setdefault("mininterval", 10.0)
    return tqdm(**kwargs)
