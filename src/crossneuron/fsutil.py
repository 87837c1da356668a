"""Atomic writes: write a temporary file, fsync, rename. A crash leaves the old file or the new one."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import CrossneuronError


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then move the file into place atomically (same folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp (and some writers, safetensors) make 0600: the usual mode
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def output_folder(path: str | Path, what: str = "--out", create: bool = True) -> Path:
    """``path`` as a folder to write into: created when missing (``create``); one clear error where it
    is a file or cannot be created."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CrossneuronError(f"{what} {path} is a file: pass a folder (it is created when missing)")
    if not create:
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CrossneuronError(f"cannot create {what} {path}: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise CrossneuronError(f"{what} {path} is not writable: choose another folder")
    return path


_HELD: dict[Path, list] = {}  # folder -> [open lock file, depth]: a process may re-enter its own lock


@contextlib.contextmanager
def folder_lock(folder: str | Path):
    """Hold an exclusive OS lock on ``folder`` (``flock`` on ``folder/.lock``, created) while writing into it.
    The OS releases it when the process dies, so a killed run leaves no stale lock; a second process is
    refused with one line naming the holder's pid. Re-entrant within one process."""
    folder = Path(folder).resolve()
    if folder in _HELD:
        _HELD[folder][1] += 1
        try:
            yield
        finally:
            _HELD[folder][1] -= 1
        return
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / ".lock", "a+")  # noqa: SIM115 - held open for the lock's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise CrossneuronError(f"{folder} is being written by another crossneuron process (pid {holder}): wait for "
                               "it to finish, or choose another --out") from None  # fmt: skip
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    _HELD[folder] = [handle, 1]
    try:
        yield
    finally:
        _HELD[folder][1] -= 1
        if _HELD[folder][1] == 0:
            del _HELD[folder]
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()


def write_json(path: str | Path, data) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, sort_keys=False)
            f.write("\n")

    atomic_write(path, write)
