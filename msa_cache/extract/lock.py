"""One writer per shard: an O_CREAT|O_EXCL lock file holding "<pid> <host>".

A lock left by a process that died (kill -9, crash) on this host is taken over
with a message; a lock from another host cannot be checked and is respected.
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Callable

from msa_cache.atomic import pid_alive
from msa_cache.errors import UserError


class LockedError(UserError, RuntimeError):
    """Another live process is writing the shard."""


class ShardLock:
    def __init__(self, path: Path):
        self.path, self.held = Path(path), False
        self.owner = f"{os.getpid()} {socket.gethostname()}"

    def acquire(self, log: Callable[[str], None] = print) -> None:
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale(log)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(self.owner + "\n")
            self.held = True
            return
        raise LockedError(f"{self.path}: could not take the lock; another process keeps creating it")

    def _take_over_if_stale(self, log) -> None:
        try:
            content = self.path.read_text().strip()
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return  # released meanwhile: retry
        pid, _, host = content.partition(" ")
        if not pid.isdigit():
            if age < 5:  # being written right now by its creator
                time.sleep(0.2)
                return
            stale_why = "an unreadable lock"
        elif host != socket.gethostname():
            raise LockedError(f"{self.path.parent.name}/{self.path.name} is held by pid {pid} on host {host}; "
                              "if no extraction runs there, delete the lock file and run again")
        elif pid_alive(int(pid)) and int(pid) != os.getpid():
            raise LockedError(f"{self.path.parent.name}/{self.path.name} is held by running process {pid}; "
                              "two writers on one shard are refused (use --num-shards/--shard-index to split work)")
        else:
            stale_why = "an earlier run in this process" if int(pid) == os.getpid() else f"dead process {pid}"
        # Rename before removing so two processes cannot both take over the same stale lock.
        aside = self.path.with_name(f"{self.path.name}.stale-{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        if aside.read_text().strip() != content:  # someone else's fresh lock: put it back
            os.replace(aside, self.path)
            return
        aside.unlink()
        log(f"taking over the stale lock of {stale_why} on {self.path.name}")

    def release(self) -> None:
        if self.held:
            self.held = False
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
