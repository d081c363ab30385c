"""The output directory's lock: one job at a time per directory.

A job holds an exclusive advisory lock (``fcntl.flock``) on ``<out_dir>/job.lock``
for its whole life: taken before the manifest is created or checked, released
when the job returns or raises (and by the kernel when the process dies, even
by SIGKILL).  Under ``torchrun`` the lock is taken by rank 0 alone, for all
ranks of its job: rank 0 takes it and checks the manifest, then tells the
other ranks the outcome (:meth:`sdekit.jobs.distributed.DistContext.broadcast`),
so either every rank of a job runs or every rank raises.  A second job in the
same directory while the first holds the lock is refused with
:class:`OutputDirectoryBusyError`, naming the directory and the holder (pid,
host, start time, written into the lock file by the holder).

``flock`` is advisory and, on some network file systems, local to one
machine; the manifest is also created exclusively (write-temp + ``os.link``,
:func:`sdekit.jobs.shard_io.create_exclusive`), so two jobs with different
configurations can never both take the directory as theirs.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
import time

LOCK_NAME = "job.lock"


class OutputDirectoryBusyError(RuntimeError):
    """Another job holds the output directory's lock (message names the directory and the holder)."""


def busy_message(directory: str, holder) -> str:
    """The error message for ``directory`` locked by ``holder`` (the lock file's JSON, or ``None``)."""
    if isinstance(holder, dict):
        who = f"pid {holder.get('pid')} on host {holder.get('host')!r}, started {holder.get('started')}"
    else:
        who = "holder unknown (it has not written its pid yet)"
    return (f"output directory {directory!r} is in use by another job ({who}); "
            f"wait for it to finish, or use another directory")


class DirectoryLock:
    """Exclusive, non-blocking ``flock`` on ``directory/job.lock``; use :meth:`acquire` / :meth:`release`."""

    def __init__(self, directory: str):
        self.directory = directory
        self.path = os.path.join(directory, LOCK_NAME)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock and record this process as the holder.

        Raises:
            OutputDirectoryBusyError: if another job (process, or another open
                of the lock file in this process) holds it.
        """
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            holder = _lock_or_holder(fd)
        except BaseException:
            os.close(fd)
            raise
        if holder is not False:
            os.close(fd)
            raise OutputDirectoryBusyError(busy_message(self.directory, holder))
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info, sort_keys=True) + "\n").encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Clear the holder record and drop the lock (no-op if not held)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _lock_or_holder(fd: int, patience_s: float = 2.0):
    """``False`` once this process holds the lock; else the holder's record (``None`` if it wrote none).

    A holder writes its record right after taking the lock, so a refused
    caller waits up to ``patience_s`` for it (or for the lock to come free).
    """
    deadline = time.monotonic() + patience_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            holder = _read_holder(fd)
            if holder is not None or time.monotonic() > deadline:
                return holder
            time.sleep(0.01)


def _read_holder(fd: int):
    try:
        text = os.pread(fd, 4096, 0).decode()
        return json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None
