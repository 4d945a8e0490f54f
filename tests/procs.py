"""The tests' side of the process harness: the system's real processes are started, waited for and stopped
by tools/harness.py (the one harness the demo, the tour and the benchmark use too), re-exported here under
the names the tests use; what only tests need (polling a condition, simulated terminals on threads,
reading a pseudo-terminal's screen) is below it."""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Self

import pexpect

from tools.harness import ROOT, free_port
from tools.harness import Child as Process
from tools.harness import start_child as start

__all__ = ["ROOT", "Process", "PseudoTerminal", "Transcript", "free_port", "plain_text", "start", "terminals", "wait_until"]


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    """Poll `predicate` until it returns something truthy; the polling interval is not a synchronisation sleep."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception as exc:  # noqa: BLE001 - the condition may legitimately fail while the system settles
            last_error = exc
        else:
            if value:
                return value
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached in {timeout} s" + (f" (last error: {last_error!r})" if last_error else ""))


class Transcript:
    """A pexpect log sink that keeps everything a terminal program showed, for assertions at the end."""

    def __init__(self, into: list[str]) -> None:
        self.into = into

    def write(self, text: str) -> None:
        self.into.append(text)

    def flush(self) -> None:
        """pexpect flushes its log after each read; nothing is buffered here."""


def plain_text(text: str) -> str:
    """Terminal output without its colour and cursor escape sequences."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


class PseudoTerminal:
    """`python ARGS` in a pseudo-terminal, as a person at a keyboard runs it, with everything it showed kept.
    As a context manager it is closed (killed if need be) on the way out, so `child.exitstatus` is set after."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str], *, timeout: float = 20,
                 dimensions: tuple[int, int] = (50, 200)) -> None:
        self.child = pexpect.spawn(sys.executable, list(args), cwd=str(ROOT), env=dict(env), encoding="utf-8", timeout=timeout,
                                   dimensions=dimensions)
        self.seen: list[str] = []
        self.child.logfile_read = Transcript(self.seen)

    @property
    def screen(self) -> str:
        """Everything shown so far, without escape sequences."""
        return plain_text("".join(self.seen))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.child.close(force=True)


@contextmanager
def terminals(count: int, target: Callable[[int], object], name: str = "terminal", timeout: float = 60.0) -> Iterator[None]:
    """Run `target(n)` for n in range(count) on threads, each a simulated terminal; the body of the `with`
    runs meanwhile. On exit every thread must have finished within `timeout` and none may have raised:
    a hung terminal or an exception fails the test (the first exception is re-raised)."""
    failures: list[BaseException] = []

    def run(n: int) -> None:
        try:
            target(n)
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread, which fails with it
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(n,), name=f"{name}-{n}") for n in range(count)]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
    hung = [thread.name for thread in threads if thread.is_alive()]
    assert not hung, f"terminals hung: {', '.join(hung)}"
    if failures:
        raise failures[0]
