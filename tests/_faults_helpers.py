"""A small disk that can be filled or made read-only under a running session or evolve run.

As root (the test machines) it is a real tmpfs of a few hundred KiB mounted on a temp folder: filling it gives the
kernel's own ENOSPC to every writer (Python, SQLite), and ``mount -o remount,ro`` gives EROFS. Where mounting is
impossible, the same switches inject the errno at the write layer for paths under the folder (``open`` for
writing, ``os.open`` with write flags, ``mkdir``, ``replace``/``rename``); the file operations themselves stay real.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import io
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def _can_mount() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("mount") is not None


class SmallDisk:
    def __init__(self, path: Path, size: str = "4m") -> None:
        self.path = path
        self.path.mkdir(parents=True, exist_ok=True)
        self.mounted = False
        self._bound = False
        self._injected: int | None = None
        if _can_mount():
            proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                  capture_output=True, text=True, check=False)
            self.mounted = proc.returncode == 0
        self._patches: contextlib.ExitStack | None = None

    # ---- switches

    def fill(self) -> None:
        """No space left: a filler file takes every free block (real), or ENOSPC is injected."""
        if self.mounted:
            with contextlib.suppress(OSError), open(self.path / ".filler", "ab") as fh:
                chunk = b"\0" * 65536
                while True:
                    fh.write(chunk)
                    fh.flush()
            return
        self._inject(errno.ENOSPC)

    def read_only(self) -> None:
        """Every new open for writing, create, rename or mkdir under the folder fails with EROFS. (A read-only
        bind mount of the folder on itself: ``remount,ro`` of the tmpfs itself is refused while a session holds
        its lock file open for writing; descriptors already open keep working, as on a folder made read-only.)"""
        if self.mounted:
            subprocess.run(["mount", "--bind", str(self.path), str(self.path)], check=True)
            self._bound = True
            subprocess.run(["mount", "-o", "remount,bind,ro", str(self.path)], check=True)
            return
        self._inject(errno.EROFS)

    def heal(self) -> None:
        """Space and write access back, as after a person fixed the machine."""
        if self.mounted:
            if self._bound:
                subprocess.run(["umount", "-l", str(self.path)], check=True)
                self._bound = False
            with contextlib.suppress(FileNotFoundError):
                (self.path / ".filler").unlink()
            return
        self._uninject()

    def close(self) -> None:
        self._uninject()
        if self.mounted:
            self.heal()
            subprocess.run(["umount", "-l", str(self.path)], check=False)
            self.mounted = False

    # ---- injection fallback

    def _inject(self, code: int) -> None:
        self._uninject()
        prefix = str(self.path.resolve())
        real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir
        real_replace, real_rename = os.replace, os.rename

        def hit(p: Any) -> bool:
            try:
                return os.path.abspath(os.fsdecode(p)).startswith(prefix)
            except TypeError:
                return False

        def err(p: Any) -> OSError:
            return OSError(code, os.strerror(code), os.fsdecode(p))

        def fake_open(file: Any, mode: str = "r", *a: Any, **k: Any) -> Any:
            if not isinstance(file, int) and hit(file) and any(c in mode for c in "wax+"):
                raise err(file)
            return real_open(file, mode, *a, **k)

        def fake_os_open(path: Any, flags: int, *a: Any, **k: Any) -> int:
            if hit(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND):
                raise err(path)
            return real_os_open(path, flags, *a, **k)

        def fake_mkdir(path: Any, *a: Any, **k: Any) -> None:
            if hit(path):
                raise err(path)
            real_mkdir(path, *a, **k)

        def fake_replace(src: Any, dst: Any, *a: Any, **k: Any) -> None:
            if hit(dst):
                raise err(dst)
            real_replace(src, dst, *a, **k)

        def fake_rename(src: Any, dst: Any, *a: Any, **k: Any) -> None:
            if hit(dst):
                raise err(dst)
            real_rename(src, dst, *a, **k)

        mp = pytest.MonkeyPatch()
        mp.setattr(builtins, "open", fake_open)
        mp.setattr(io, "open", fake_open)
        mp.setattr(os, "open", fake_os_open)
        mp.setattr(os, "mkdir", fake_mkdir)
        mp.setattr(os, "replace", fake_replace)
        mp.setattr(os, "rename", fake_rename)
        self._patches = contextlib.ExitStack()
        self._patches.callback(mp.undo)
        self._injected = code

    def _uninject(self) -> None:
        if self._patches is not None:
            self._patches.close()
            self._patches = None
        self._injected = None


@contextlib.contextmanager
def small_disk(path: Path, size: str = "4m") -> Iterator[SmallDisk]:
    disk = SmallDisk(path, size)
    try:
        yield disk
    finally:
        disk.close()
