"""A JSON cache of benchmark rows shared by processes that run at once (a file lock around each update)."""

from __future__ import annotations

import fcntl
import json
from pathlib import Path


def update_cache(path: Path, key: str, value: dict) -> None:
    """Set ``key`` to ``value`` in the JSON object stored at ``path`` (created if absent), under a lock."""
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        text = f.read()
        cache = json.loads(text) if text.strip() else {}
        cache[key] = value
        f.seek(0)
        f.truncate()
        f.write(json.dumps(cache, indent=1))
