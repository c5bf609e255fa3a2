"""Leftovers of killed publishes and deletes, found and removed by ``ModelStore.gc`` (model lock held)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from vitserve.model_store.locking import try_lock


def remove_leftovers(model_dir: Path) -> list[str]:
    """Staging dirs whose publisher died, trash from interrupted deletes, stray temp files (lock held)."""
    removed = []
    for path in sorted(model_dir.iterdir()):
        if path.name.startswith(".staging-") and path.is_dir():
            lock_path = path.with_name(path.name + ".lock")
            fd = try_lock(lock_path)
            if fd is None and lock_path.exists():
                continue  # its publisher is still writing
            shutil.rmtree(path, ignore_errors=True)
            lock_path.unlink(missing_ok=True)
            if fd is not None:
                os.close(fd)
            removed.append(path.name)
        elif path.name.startswith(".staging-") and path.name.endswith(".lock"):
            if not path.with_suffix("").exists() and (fd := try_lock(path)) is not None:
                path.unlink(missing_ok=True)
                os.close(fd)
        elif path.name.startswith(".trash-") or path.name.endswith(".tmp"):
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
            removed.append(path.name)
        elif path.name.isascii() and path.name.isdigit() and path.is_dir():  # a card update killed before its rename
            for stray in path.glob(".*.tmp"):
                stray.unlink(missing_ok=True)
                removed.append(f"{path.name}/{stray.name}")
    return removed
