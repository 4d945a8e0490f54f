"""The SQLite engine: one file, safe for many threads and many processes, with writes committed in groups.

A caller queues its write, and whichever caller holds the write lock (the leader) commits everything queued
so far in one transaction, each write inside its own savepoint so a refusal undoes only that write; one fsync
covers the whole group. The write lock is the in-process mutual exclusion; `BEGIN IMMEDIATE` (behind a
`flock`) is the one across processes. Reads use a small pool of connections and never wait for writes (WAL
readers see the last commit). sqlite3's errors become `Unavailable` here, opening the file included.

The file under a running store may be deleted, or replaced (its directory removed and made again, a backup
restored over it): SQLite would go on committing into the inode it holds open, which nobody will ever read
again. So every group commit checks, just before its COMMIT and again before it answers, that the path still
names the file this engine opened (device and inode, two `stat` calls) and that the WAL beside it was not
cut shorter than this engine last left it; a mismatch is a fault that stays: writes and reads are
`Unavailable` naming the path and the reason, and `health()` says it for the server.
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from errors import ReservationError, Unavailable
from storage.engine import WRITE_TIMEOUT_SECONDS, Events, T

log = logging.getLogger("bilheteria.storage.sqlite")


class _Job:
    """One queued write. Its owner sleeps on `wake` until a leader has committed it (`finished`) or has
    handed it the lead (`lead`): one wake-up per waiter, never a crowd woken to check and sleep again."""

    __slots__ = ("error", "finished", "lead", "op", "result", "wake")

    def __init__(self, op: Callable[[Any], Any]) -> None:
        self.op = op
        self.finished = False
        self.lead = False
        self.result: Any = None
        self.error: BaseException | None = None
        self.wake = threading.Lock()
        self.wake.acquire()


class SqliteEngine:
    """One SQLite file, safe for many threads and many processes, with writes committed in groups."""

    backend = "sqlite"
    serial_writes = True
    LEDGER_POLL_SECONDS = 0.1
    """How often a follower looks for other processes' commits; this process's own commits wake it at once."""

    def __init__(self, path: str, busy_timeout_ms: int = 10_000) -> None:
        self.path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._all_connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._pending: list[_Job] = []
        self._queue_lock = threading.Lock()
        """Guards the queue and the leader flag: with them, the in-process mutual exclusion of the write path."""
        self._leading = False
        self._idle = threading.Event()
        self._idle.set()
        self._committed = threading.Condition()
        self._closed = False
        self._fault: str | None = None
        """Why this engine stopped taking writes (its file is gone or replaced); None while healthy. Never cleared."""
        self._wal_seen: tuple[int, int, int] | None = None
        """The WAL's (device, inode, size) after this engine's last commit."""
        try:
            self._writer_connection = self._connect()
            self._process_lock = os.open(f"{path}.write-lock", os.O_RDWR | os.O_CREAT, 0o600)
            self._identity = _identity(path)
        except (sqlite3.Error, OSError) as exc:
            self._close_connections()
            raise Unavailable(f"database error: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=self._busy_timeout_ms / 1000)
        connection.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = FULL")
        connection.execute("PRAGMA foreign_keys = ON")
        with self._connections_lock:
            self._all_connections.append(connection)
        return connection

    def health(self) -> str | None:
        """None while the path still names the file this engine writes; otherwise the reason, one line."""
        if self._fault is None:
            self._check_files()
        return self._fault

    def _check_files(self) -> None:
        """Record a fault if the database file at the path is not the one open here, or the WAL was cut short."""
        if self._fault is not None:
            return
        try:
            if _identity(self.path) != self._identity:
                self._fault = f"{self.path} was replaced by another file under the running store"
                return
        except FileNotFoundError:
            self._fault = f"{self.path} was deleted under the running store"
        except OSError as exc:
            self._fault = f"{self.path} cannot be checked: {exc.strerror}"
        if self._fault is None and self._wal_seen is not None:
            wal = _wal_state(self.path)
            if wal is None or wal[:2] != self._wal_seen[:2]:
                self._fault = f"{self.path}-wal was deleted or replaced under the running store"
            elif wal[2] < self._wal_seen[2]:
                self._fault = f"{self.path}-wal was truncated under the running store ({wal[2]} bytes, was {self._wal_seen[2]})"
        if self._fault is not None:
            log.error("database unusable, refusing every write: %s", self._fault)

    def _refuse_if_faulty(self) -> None:
        if self._fault is not None:
            raise Unavailable(f"the database cannot be used: {self._fault}")

    @contextmanager
    def reader(self) -> Iterator[sqlite3.Connection]:
        if self._closed:
            raise Unavailable("the store is closed")
        self._refuse_if_faulty()
        try:
            connection = self._readers.get_nowait()
        except queue.Empty:
            try:
                connection = self._connect()
            except sqlite3.Error as exc:
                raise Unavailable(f"database error: {exc}") from exc
        try:
            yield connection
        except sqlite3.Error as exc:
            raise Unavailable(f"database error: {exc}") from exc
        finally:
            if connection.in_transaction:
                connection.rollback()
            self._readers.put(connection)

    def migrate(self, migrations: Sequence[str], seed: Callable[[sqlite3.Connection], None]) -> None:
        """Bring the schema to `len(migrations)`; a file that is not a database (or not writable) is `Unavailable`."""
        try:
            self._migrate(migrations, seed)
        except sqlite3.Error as exc:
            raise Unavailable(f"database error: {exc}") from exc

    def _migrate(self, migrations: Sequence[str], seed: Callable[[sqlite3.Connection], None]) -> None:
        connection = self._writer_connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version > len(migrations):
                raise RuntimeError(f"{self.path} has schema version {version}, newer than this program ({len(migrations)})")
            for number in range(version, len(migrations)):
                for statement in migrations[number].split(";"):
                    if statement.strip():
                        connection.execute(statement)
                log.info("migrated %s to schema version %d", self.path, number + 1)
            connection.execute(f"PRAGMA user_version = {len(migrations)}")
            if version == 0:
                seed(connection)
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise

    def submit(self, op: Callable[[sqlite3.Connection], T], events: Events) -> T:
        """Run `op` inside the next group commit and return once it is durable. Writers take turns here, so
        `events` (what a side-by-side engine would lock) needs nothing.

        Callers queue their write; if nobody is committing, the caller becomes the leader, takes every
        write queued so far (its own and others') and commits them in one transaction. It then wakes the
        owner of each write it committed, and hands the lead to the oldest write still queued, if any.
        No writer thread, so no hand-off on the way in, and each caller is woken exactly once.
        """
        job = _Job(op)
        with self._queue_lock:
            if self._closed:
                raise Unavailable("the store is closed")
            self._pending.append(job)
            if not self._leading:
                job.lead = self._leading = True
                self._idle.clear()
        if not job.lead and not job.wake.acquire(timeout=WRITE_TIMEOUT_SECONDS):
            self._give_up(job)
        if not job.finished:
            self._lead()
        if job.error is not None:
            raise job.error
        return job.result

    def _give_up(self, job: _Job) -> None:
        """A follower that waited too long leaves, unless its write is already being committed or it was
        just handed the lead (then it stays: nobody else would lead)."""
        with self._queue_lock:
            if job in self._pending and not job.lead:
                self._pending.remove(job)
                raise Unavailable(f"the database did not finish the write within {WRITE_TIMEOUT_SECONDS:.0f} s")
        job.wake.acquire()

    def _lead(self) -> None:
        with self._queue_lock:
            batch, self._pending = self._pending, []
        try:
            self._commit_batch(batch)
        finally:
            with self._queue_lock:
                if self._pending and not self._closed:
                    successor = self._pending[0]
                    successor.lead = True
                else:
                    successor = None
                    self._leading = False
                    self._idle.set()
            for other in batch:
                if not other.lead:
                    other.wake.release()
            if successor is not None:
                successor.wake.release()

    def _commit_batch(self, batch: list[_Job]) -> None:
        """One transaction for the whole group; every job leaves finished, with a result or an error."""
        connection = self._writer_connection
        committed = False
        reason = "the write was interrupted"
        # SQLite makes a writer that finds the file locked sleep and poll, up to 100 ms a time, while the
        # holder may take the lock straight back; a kernel lock queues the server processes instead.
        fcntl.flock(self._process_lock, fcntl.LOCK_EX)
        try:
            self._check_files()
            self._refuse_if_faulty()
            connection.execute("BEGIN IMMEDIATE")
            for job in batch:
                connection.execute("SAVEPOINT request")
                try:
                    job.result = job.op(connection)
                except Exception as exc:  # noqa: BLE001 - whatever went wrong, only this request's savepoint is undone
                    connection.execute("ROLLBACK TO request")
                    job.error = exc if isinstance(exc, ReservationError) else _as_unavailable(exc)
                connection.execute("RELEASE request")
            self._check_files()
            self._refuse_if_faulty()
            connection.execute("COMMIT")
            self._check_files()
            if self._fault is not None:
                reason = f"the write went into a file that is no longer {self.path} and will be lost: {self._fault}"
            else:
                self._wal_seen = _wal_state(self.path)
                committed = True
        except Unavailable as exc:
            reason = str(exc)
        except sqlite3.Error as exc:
            log.error("group of %d writes not committed: %s", len(batch), exc)
            reason = f"the database could not commit: {exc}"
        finally:
            if not committed:
                self._roll_back(connection)
                for job in batch:
                    job.result, job.error = None, Unavailable(reason)
            for job in batch:
                job.finished = True
            fcntl.flock(self._process_lock, fcntl.LOCK_UN)
        if committed:
            with self._committed:
                self._committed.notify_all()

    def _roll_back(self, connection: sqlite3.Connection) -> None:
        """Undo an unfinished transaction; if even that fails (a full disk), start over on a new connection,
        since closing one discards what it had not committed."""
        if not connection.in_transaction:
            return
        try:
            connection.execute("ROLLBACK")
        except sqlite3.Error as exc:
            log.error("rollback failed (%s); reopening the write connection", exc)
            with self._connections_lock:
                self._all_connections.remove(connection)
            connection.close()
            self._writer_connection = self._connect()

    def wait_for_ledger(self, timeout: float) -> None:
        """Woken by this process's commits; other processes' commits are seen at the next poll."""
        with self._committed:
            self._committed.wait(min(timeout, self.LEDGER_POLL_SECONDS))

    def close(self) -> None:
        """Let the write in progress finish, then close every connection (the last close checkpoints the WAL)."""
        with self._queue_lock:
            if self._closed:
                return
            self._closed = True
            abandoned, self._pending = self._pending, []
            for job in abandoned:
                job.error, job.finished = Unavailable("the store is closed"), True
                if job.lead:  # the lead was handed to a write that will now never run
                    self._leading = False
                    self._idle.set()
                else:
                    job.wake.release()
        self._idle.wait(WRITE_TIMEOUT_SECONDS)
        os.close(self._process_lock)
        self._close_connections()

    def _close_connections(self) -> None:
        with self._connections_lock:
            for connection in self._all_connections:
                connection.close()
            self._all_connections.clear()


def _identity(path: str) -> tuple[int, int]:
    """(device, inode) of the file at `path`: the same pair means the same file, whatever its contents."""
    found = os.stat(path)
    return found.st_dev, found.st_ino


def _wal_state(path: str) -> tuple[int, int, int] | None:
    """(device, inode, size) of the WAL beside the database, or None when there is none."""
    try:
        found = os.stat(f"{path}-wal")
    except OSError:
        return None
    return found.st_dev, found.st_ino, found.st_size


def _as_unavailable(exc: BaseException) -> BaseException:
    """A driver error inside a write is the system failing, not the user asking for the impossible."""
    if isinstance(exc, sqlite3.Error):
        return Unavailable(f"database error: {exc}")
    log.exception("unexpected error inside a write", exc_info=exc)
    return exc
