"""Watching the process's ``fsync`` calls: which file each one synced, and whether SQLite's
write turn (the queue's lock file beside the database) was free at that moment. The real
``fsync`` is still done, or fails as told (to test a failing disk)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest


class Syncs:
    """Every ``fsync`` of the process (the real one is still done): the file synced, and
    whether the database's write turn was free at that moment."""

    def __init__(self, database: Path) -> None:
        self.turn_file = f"{database}-writers.lock"
        self.calls: list[tuple[str, bool]] = []
        self.fail_with: int | None = None

    def paths(self) -> list[str]:
        return [path for path, _free in self.calls]

    def turn_is_free(self) -> bool:
        if not os.path.exists(self.turn_file):
            return True
        probe = os.open(self.turn_file, os.O_RDWR)
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(probe)  # also releases the probe's lock
        return True

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real = os.fsync

        def fsync(fd: int) -> None:
            path = os.readlink(f"/proc/self/fd/{fd}")
            self.calls.append((path, self.turn_is_free()))
            if self.fail_with is not None:
                raise OSError(self.fail_with, os.strerror(self.fail_with))
            real(fd)

        monkeypatch.setattr(os, "fsync", fsync)
