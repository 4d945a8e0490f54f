"""The one way tools and tests run the system's real processes: a free port, a child with its log, its
readiness line waited for (never a fixed sleep), and a stop that always ends it (SIGTERM, then SIGKILL).

The demo, the tour, the benchmark and the test suite all start name servers and ticket servers; they do it
through `start_child` so a child is started, waited for and stopped the same way everywhere. A child writes
stdout and stderr straight into its log file, so nothing is lost however its parent ends, and readiness is
read from that file: the first complete line containing the readiness text, whose last word is the address.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from types import FrameType

from client_core import parse_address

ROOT = Path(__file__).resolve().parent.parent
READY_SECONDS = 20.0
STOP_GRACE_SECONDS = 10.0
POLL_SECONDS = 0.05
"""How often a log is read while waiting for a line: a poll with a deadline, not a synchronising sleep."""
LOG_TAIL_LINES = 20

log = logging.getLogger("bilheteria.tools.harness")
_scratch: tempfile.TemporaryDirectory[str] | None = None
_numbers = count(1)


class LaunchError(RuntimeError):
    """A process did not come up; the message says which and where its log is."""


class NotReadyInTime(LaunchError, TimeoutError):
    """A process still running did not print its readiness line before the deadline."""


def port_is_free(port: int) -> bool:
    """Bind the way our servers do (create_server sets SO_REUSEADDR), so lingering TIME_WAIT is not 'busy'."""
    try:
        with socket.create_server(("127.0.0.1", port)):
            return True
    except OSError:
        return False


def free_port(wanted: int = 0, taken: set[int] | None = None) -> int:
    """`wanted` if nobody listens there (0 means any); otherwise a port the kernel hands out. A port found is
    added to `taken`, so several chosen for one cluster never collide."""
    taken = set() if taken is None else taken
    port = wanted
    while port == 0 or port in taken or not port_is_free(port):
        with socket.create_server(("127.0.0.1", 0)) as probe:
            port = probe.getsockname()[1]
    taken.add(port)
    return port


@dataclass
class Child:
    """A process started by `start_child`; its output is the part of `log` from `offset` on."""

    name: str
    popen: subprocess.Popen
    log: Path
    offset: int = 0
    address: str = ""
    """HOST:PORT, the last word of its readiness line."""

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def port(self) -> int:
        return parse_address(self.address)[1]

    def alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def lines(self) -> list[str]:
        """Its complete lines so far (a line still being written is left for the next read)."""
        running = self.alive()
        try:
            with self.log.open("rb") as handle:
                handle.seek(self.offset)
                text = handle.read().decode(errors="replace")
        except OSError:
            return []
        lines = text.split("\n")
        last = lines.pop()
        if last and not running:
            lines.append(last)
        return lines

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, text: str, timeout: float = READY_SECONDS) -> str:
        """Block until a line containing `text` was printed; fail with the end of the log if it never is."""
        deadline = time.monotonic() + timeout
        while True:
            exited = not self.alive()
            line = next((line for line in self.lines if text in line), None)
            if line is not None:
                return line
            if exited:
                raise LaunchError(f"the {self.name} exited (code {self.popen.returncode}) before printing {text!r}; "
                                  f"see {self.log}:\n{self.tail()}")
            if time.monotonic() >= deadline:
                raise NotReadyInTime(f"the {self.name} did not print {text!r} within {timeout:.0f} s; see {self.log}:\n{self.tail()}")
            time.sleep(POLL_SECONDS)

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(self.lines[-lines:])

    def signal(self, signum: int) -> None:
        if self.alive():
            os.kill(self.popen.pid, signum)

    def kill(self) -> None:
        """kill -9: no goodbye, no flush, no unregister."""
        self.signal(signal.SIGKILL)
        self.popen.wait(timeout=STOP_GRACE_SECONDS)

    def stop(self, timeout: float = STOP_GRACE_SECONDS, *, kill: bool = False, signalled: bool = False) -> int:
        """SIGTERM (or, with kill, SIGKILL at once; or nothing when `signalled` says it was sent already), then
        SIGKILL whatever is still running after `timeout`; returns the exit code. One SIGTERM only: a second one
        landing inside the first's handler can deadlock a child whose handler sets a threading.Event."""
        if self.alive() and not signalled:
            self.popen.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0f s of SIGTERM; killing it", self.name, timeout)
            self.popen.kill()
            return self.popen.wait()


def stop_child(child: Child, kill: bool = False, grace: float = STOP_GRACE_SECONDS, signalled: bool = False) -> None:
    """`child.stop(...)`, for callers that stop children they hold in a list."""
    child.stop(grace, kill=kill, signalled=signalled)


def scratch_log(name: str) -> Path:
    """A log file for a child whose caller keeps no directory (the tests); removed when this process exits."""
    global _scratch
    if _scratch is None:
        _scratch = tempfile.TemporaryDirectory(prefix="bilheteria-logs-")
    safe = re.sub(r"[^\w.-]", "_", name)
    return Path(_scratch.name) / f"{safe}-{next(_numbers)}.log"


def start_child(name: str, args: Sequence[str], ready: str, *, log: Path | None = None, env: Mapping[str, str] | None = None,
                timeout: float = READY_SECONDS, prefix: Sequence[str] = ()) -> Child:
    """Run `python <args>` from the project root (behind `prefix`, such as `ip netns exec HOST`), its output
    appended to `log` (a scratch file without one), and wait until it prints a line containing `ready`; a child
    that does not is stopped before the error."""
    path = log or scratch_log(name)
    with path.open("ab") as handle:
        offset = handle.tell()
        popen = subprocess.Popen([*prefix, sys.executable, *args], cwd=ROOT, stdin=subprocess.DEVNULL, stdout=handle,
                                 stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    child = Child(name, popen, path, offset)
    try:
        child.address = child.wait_for_line(ready, timeout).rsplit(maxsplit=1)[-1]
    except BaseException:
        child.stop(kill=True)
        raise
    return child


def _stop_once(signum: int, frame: FrameType | None) -> None:
    for other in (signal.SIGINT, signal.SIGTERM):
        signal.signal(other, signal.SIG_IGN)
    raise KeyboardInterrupt


def stop_on_signals() -> None:
    """For a tool that cli.py runs as a child: the first SIGINT or SIGTERM becomes KeyboardInterrupt, so it leaves
    the way Ctrl-C does and stops its own children; later ones are ignored (a Ctrl-C at a terminal reaches both
    the tool and cli.py, which passes it on too), so they cannot cut that clean stop short."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _stop_once)
