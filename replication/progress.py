"""Progress bars for long passes (epochs, Firefly's candidate passes): shown only on an interactive terminal, so
logs and notebooks stay free of bar redraws."""
from __future__ import annotations

import sys


def progress(iterable, total: int, desc: str, enabled: bool = True):
    if not enabled or not sys.stderr.isatty():
        return iterable
    from tqdm import tqdm
    return tqdm(iterable, total=total, desc=desc, leave=False)
