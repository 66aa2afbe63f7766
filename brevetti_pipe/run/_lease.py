"""Job lease: one running process per job id, as a lock object ``<root>/jobs/<id>/.lock`` renewed while it runs.

On a local root the lock is created with ``O_EXCL``, so of two processes starting the same job
exactly one wins. A lock whose owner process is gone (same host) or whose lease expired (the
owner stopped renewing it: killed, hung, or on another host) is stale and taken over; a lock
whose owner runs on this host is held as long as that process lives, whatever its lease says.
An owner that finds its lock taken over stops writing: :meth:`JobLease.check` raises. Object
stores have no exclusive create here: the lease is written, then read back, so two starts a few
milliseconds apart may both proceed (best effort); a running owner is always seen.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from brevetti_pipe._util.paths import strip_local_scheme
from brevetti_pipe._util.secrets import redact
from brevetti_pipe.errors import JobLockedError, StorageError
from brevetti_pipe.storage import IoTools, is_local

__all__ = ["JobLease", "LEASE_SECONDS"]

log = logging.getLogger(__name__)

#: A lease not renewed for this long is stale; the owner renews it every third of that.
LEASE_SECONDS = 60.0

#: Tokens of the leases this process holds now: a lock with this pid and another token was left
#: by an earlier job of this process (a sweep, a notebook) that could not remove it.
_HELD: set[str] = set()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _iso(seconds: float) -> str:
    return _dt.datetime.fromtimestamp(seconds, _dt.timezone.utc).isoformat(timespec="seconds")


class JobLease:
    """The lock of one job id; :meth:`acquire` before the job writes anything, :meth:`release` at its end.

    Args:
        io: the job's storage access.
        url: the lock's URL (``<root>/jobs/<id>/.lock``).
        job_id: for messages.
        seconds: lease length; renewed every ``seconds / 3`` by a background thread.
    """

    def __init__(self, io: IoTools, url: str, job_id: str, seconds: float = LEASE_SECONDS) -> None:
        self.io, self.url, self.job_id, self.seconds = io, url, job_id, seconds
        self.local = is_local(url)
        self.path = strip_local_scheme(url) if self.local else url
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._owner: dict[str, Any] = {}  # who took the lock over, for the error
        self._thread: threading.Thread | None = None

    def _record(self) -> dict[str, Any]:
        now = time.time()
        return {"token": self.token, "pid": os.getpid(), "host": socket.gethostname(),
                "started_at": _iso(now), "expires_at": now + self.seconds, "expires": _iso(now + self.seconds)}

    def _read(self, io: IoTools | None = None) -> dict[str, Any] | None:
        """The current lock's record; ``{}`` while its owner is still writing it; None without a lock."""
        io = io or self.io
        try:
            if self.local:
                with open(self.path, encoding="utf-8") as fh:
                    text = fh.read()
                mtime = os.path.getmtime(self.path)
            else:
                if not io.exists(self.url):
                    return None
                text, mtime = io.read_file(self.url).decode("utf-8", "replace"), time.time()
        except FileNotFoundError:
            return None
        try:
            record = json.loads(text)
            return record if isinstance(record, dict) else {"expires_at": mtime + self.seconds}
        except ValueError:
            return {"expires_at": mtime + self.seconds}  # half-written: trust it for one lease

    def _stale_reason(self, held: dict[str, Any]) -> str | None:
        if held.get("host") == socket.gethostname() and isinstance(held.get("pid"), int):
            if held["pid"] == os.getpid() and held.get("token") not in _HELD:
                return f"an earlier job of this process (pid {held['pid']}) left it"
            # a live owner on this host holds the lock even when its renewals failed
            return None if _alive(held["pid"]) else f"its owner (pid {held['pid']} on {held['host']}) is gone"
        expires = held.get("expires_at")
        if isinstance(expires, (int, float)) and expires < time.time():
            return f"its lease expired at {_iso(expires)} (owner pid {held.get('pid')} on {held.get('host')})"
        return None

    def _refuse(self, held: dict[str, Any]) -> JobLockedError:
        owner = f"pid {held.get('pid', '?')} on {held.get('host', '?')}, started {held.get('started_at', '?')}"
        return JobLockedError(
            f"Job '{self.job_id}' is already running ({owner}); lock {redact(self.url)} is held until "
            f"{held.get('expires', 'its owner ends')}. Wait for it to end, or pick another job.id."
        )

    def acquire(self) -> None:
        """Take the lock (taking over a stale one) and start renewing it.

        Raises:
            JobLockedError: another live process holds the lock.
        """
        for _ in range(5):
            if self._try_create():
                _HELD.add(self.token)
                self._thread = threading.Thread(target=self._renew, name="brevetti-pipe-lease", daemon=True)
                self._thread.start()
                return
            held = self._read()
            if held is None:
                continue  # released meanwhile
            reason = self._stale_reason(held)
            if reason is None:
                raise self._refuse(held)
            if self._take_over(held):
                log.warning("Taking over the lock of job %s: %s", self.job_id, reason)
        raise self._refuse(self._read() or {})

    def _try_create(self) -> bool:
        record = json.dumps(self._record())
        if not self.local:
            if self._read() is not None:
                return False
            self.io.write_file(self.url, record)
            return (self._read() or {}).get("token") == self.token  # a racing writer wins: we refuse
        created = False
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            created = True
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(record)
        except FileExistsError:
            return False
        except OSError as exc:
            if created:  # an empty lock would refuse the next run for a whole lease
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
            raise StorageError(f"Cannot take the lock of job '{self.job_id}': writing {self.path} failed: "
                               f"{exc.strerror or exc}") from None
        return True

    def _take_over(self, held: dict[str, Any]) -> bool:
        """Remove the stale lock ``held``; False when another process replaced it meanwhile."""
        if not self.local:
            fs, path = self.io.fs(self.url)
            try:
                self.io.call(lambda: fs.rm_file(path), self.url)
            except FileNotFoundError:
                return False
            return True
        aside = f"{self.path}.stale-{self.token}"
        try:
            os.rename(self.path, aside)  # atomic: of two processes taking over, one moves it
        except FileNotFoundError:
            return False
        with open(aside, encoding="utf-8") as fh:
            moved = fh.read()
        if held.get("token") and held["token"] not in moved:
            try:  # a fresh lock replaced the stale one in between: put it back
                os.link(aside, self.path)
            except FileExistsError:
                pass
            os.unlink(aside)
            return False
        os.unlink(aside)
        return True

    def _renew(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            try:
                held = self._read()
                if held is None or held.get("token") != self.token:
                    self._owner = held or {}
                    self._lost.set()
                    log.error("The lock of job %s was taken by another process; this run no longer holds it", self.job_id)
                    return
                self.io.best_effort().write_file(self.url, json.dumps({**held, **{k: v for k, v in self._record().items()
                                                                   if k.startswith("expires")}}))
            except Exception as exc:  # renewal is best effort; the lease runs out on its own
                log.warning("Could not renew the lock of job %s: %s", self.job_id, exc)

    @property
    def lost(self) -> bool:
        """True once this run found its lock taken over by another process."""
        return self._lost.is_set()

    def check(self) -> None:
        """Read the lock now and raise if another process took it over (before the job's final writes).

        Raises:
            JobLockedError: the lock now belongs to another run of the same job id.
        """
        if not self.lost:
            try:
                held = self._read(self.io.best_effort())
            except Exception as exc:  # cannot tell: the renewals decide
                log.warning("Could not read the lock of job %s: %s", self.job_id, exc)
                return
            if held and held.get("token") == self.token:
                return
            self._lost.set()
            self._owner = held or {}
        raise self.lost_error()

    def lost_error(self) -> JobLockedError:
        """The error of a run whose lock another run took over."""
        owner = self._owner
        return JobLockedError(
            f"Job '{self.job_id}' lost its lock {redact(self.url)} to another run (pid {owner.get('pid', '?')} on "
            f"{owner.get('host', '?')}); this run stops without writing its results. Run one job per job.id."
        )

    def release(self) -> None:
        """Stop renewing and remove the lock if this process still holds it (best effort)."""
        self._stop.set()
        _HELD.discard(self.token)
        if self._thread is None:
            return
        self._thread.join(timeout=5)
        self._thread = None
        try:
            if (self._read() or {}).get("token") != self.token:
                return
            if self.local:
                os.unlink(self.path)
            else:
                fs, path = self.io.fs(self.url)
                self.io.call(lambda: fs.rm_file(path), self.url)
        except Exception as exc:
            log.warning("Could not remove the lock %s of job %s: %s; it expires on its own", redact(self.url), self.job_id, exc)
