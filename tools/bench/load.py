"""The load generator: simulated terminals in a closed loop, run from a few load processes, and the
measurement of one window of their calls (throughput, latency percentiles, CPU per call on both sides).

Each terminal has its own connection and sends its next call as soon as the last one answered, one
`HANDLE_CALLATTR` message per call exactly as client_core does; the load processes keep the generator off the
GIL of the server it measures. What the kernel says about a server (its CPU time, its memory) is read here too.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import queue
import signal
import threading
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import rpyc
from rpyc.core import consts
from rpyc.core.stream import SocketStream
from rpyc.utils.factory import connect_stream

from backoff import Backoff
from client_core import CLIENT_CONFIG
from tools.bench import (
    CALL_TIMEOUT_SECONDS,
    MAX_LOAD_PROCESSES,
    SEATED_SECTOR,
    SECTOR,
    START_TIMEOUT_SECONDS,
)
from tools.harness import Child

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
LISTEN_RETRY = Backoff(base=0.01, ceiling=0.01, low=1.0, high=1.0)
"""10 ms between tries of a server that printed its readiness line a moment before it listens."""


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all its threads, from /proc (fields 14 and 15, after the command name)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


@dataclass(frozen=True)
class LoadPlan:
    """What every terminal of one measurement does; pickled to the load processes."""

    method: str
    addresses: tuple[str, ...]
    event_id: int = 0
    run_id: str = ""

    def args(self, terminal: int, sequence: int) -> tuple:
        """The arguments of one call; the no-op gets the same reserve arguments so it pays the same serialisation."""
        if self.method == "get_seat_map":
            return (self.event_id, SEATED_SECTOR)
        if self.method not in ("reserve", "reserve_record"):
            return ()
        request_id = f"{self.run_id}-{terminal}-{sequence}"
        return (self.event_id, 1, f"Bench Terminal {terminal}", f"terminal{terminal}@bench.example", SECTOR, "full", request_id, True)


@dataclass
class TerminalLog:
    """What one terminal saw: latencies inside the window, errors, and every code it was sold (warm-up included)."""

    latencies: array = field(default_factory=lambda: array("d"))
    errors: int = 0
    error_sample: str = ""
    codes: list[str] = field(default_factory=list)

    def failed(self, exc: BaseException) -> None:
        self.errors += 1
        if not self.error_sample:
            self.error_sample = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]


@dataclass(frozen=True)
class ProcessReport:
    """One load process's terminals folded together, sent back to the parent."""

    latencies: bytes
    errors: int
    error_sample: str
    codes: tuple[str, ...]
    cpu_seconds: float


def connect(address: str) -> rpyc.Connection:
    """One terminal's connection, configured as client_core configures its own."""
    host, _, port = address.rpartition(":")
    stream = SocketStream.connect(host, int(port), timeout=CALL_TIMEOUT_SECONDS, attempts=1, nodelay=True)
    return connect_stream(stream, rpyc.VoidService, dict(CLIENT_CONFIG, sync_request_timeout=CALL_TIMEOUT_SECONDS))


def connect_when_listening(address: str, timeout: float = START_TIMEOUT_SECONDS,
                           sleep: Callable[[float], object] = time.sleep) -> rpyc.Connection:
    """The first connection to a server: server.py prints its readiness line from the main thread while
    another thread may still be about to call listen(), so a refusal right then means "not yet"."""
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        try:
            return connect(address)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            sleep(LISTEN_RETRY.delay(attempt))
            attempt += 1


def call(connection: rpyc.Connection, method: str, *args: Any) -> Any:
    """One message per call: CALLATTR on the root, the path client_core takes."""
    return connection.sync_request(consts.HANDLE_CALLATTR, connection.root, method, args, ())


def run_terminal(plan: LoadPlan, terminal: int, opened: threading.Barrier, go: Any, window: Any, log: TerminalLog) -> None:
    """Connect, wait for everyone, then call in a closed loop until the window ends."""
    connection = None
    try:
        connection = connect(plan.addresses[terminal % len(plan.addresses)])
        connection.root  # noqa: B018 - fetch the root now, not inside the first measured call
    except Exception as exc:  # noqa: BLE001 - whatever failed, this terminal must still reach the barrier
        log.failed(exc)
    opened.wait()
    go.wait()
    if connection is None:
        return
    begin, end = window[0], window[1]
    clock, now = time.perf_counter, time.monotonic
    root, method, callattr = connection.root, plan.method, consts.HANDLE_CALLATTR
    sequence = 0
    try:
        while (started_at := now()) < end:
            args = plan.args(terminal, sequence)
            sequence += 1
            started = clock()
            try:
                result = connection.sync_request(callattr, root, method, args, ())
            except (OSError, EOFError) as exc:
                log.failed(exc)
                return
            except Exception as exc:  # noqa: BLE001 - a refusal arrives as a class made up on the spot; count it
                log.failed(exc)
                continue
            elapsed = clock() - started
            if started_at >= begin:
                log.latencies.append(elapsed)
            if method == "reserve" and result is not None:
                log.codes.append(result[0][1])
    finally:
        connection.close()


def load_process(plan: LoadPlan, terminals: tuple[int, ...], ready: Any, go: Any, window: Any, results: Any) -> None:
    """Entry point of a load process: one thread per terminal, one report back."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent cleans up
    logs = [TerminalLog() for _ in terminals]
    opened = threading.Barrier(len(terminals) + 1)
    threads = [
        threading.Thread(target=run_terminal, args=(plan, terminal, opened, go, window, log), daemon=True)
        for terminal, log in zip(terminals, logs, strict=True)
    ]
    for thread in threads:
        thread.start()
    opened.wait()
    ready.put(len(terminals))
    go.wait()
    time.sleep(max(0.0, window[0] - time.monotonic()))  # not synchronisation: the window's start, on the shared clock
    cpu_start = time.process_time()
    for thread in threads:
        thread.join()
    cpu = time.process_time() - cpu_start
    latencies = array("d")
    for log in logs:
        latencies.extend(log.latencies)
    sample = next((log.error_sample for log in logs if log.error_sample), "")
    codes = tuple(code for log in logs for code in log.codes)
    results.put(ProcessReport(latencies.tobytes(), sum(log.errors for log in logs), sample, codes, cpu))


def hold_idle_terminals(address: str, count: int, ready: Any, release: Any) -> None:
    """Entry point of the idle-terminal process: connect and ping `count` terminals, then keep them open."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    connections = []
    failures = 0
    for _ in range(count):
        try:
            connection = connect(address)
            call(connection, "ping")
            connections.append(connection)
        except (OSError, EOFError):
            failures += 1
    ready.put((len(connections), failures))
    release.wait()
    for connection in connections:
        connection.close()


@dataclass(frozen=True)
class Measurement:
    """One row of the table: one kind of call at one number of terminals, measured over one window."""

    scenario: str
    kind: str
    clients: int
    servers: int
    idle_terminals: int
    seconds: float
    calls: int
    errors: int
    calls_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    server_cpu_us_per_call: float | None
    load_cpu_us_per_call: float | None
    server_rss_mb: float
    ratio_to_noop: float | None = None
    error_sample: str = ""
    backend: str = "sqlite"

    @property
    def label(self) -> str:
        label = "noop + record reply" if self.kind == "noop_record" else self.kind
        if self.servers > 1:
            label += f" x{self.servers} replicas"
        if self.backend != "sqlite":
            label += f" {self.backend}"
        if self.scenario == "idle":
            label += f" +{self.idle_terminals} idle"
        return label


def percentile_ms(ordered: Sequence[float], fraction: float) -> float | None:
    """Nearest rank, in milliseconds: the smallest value with at least `fraction` of the samples at or below it."""
    if not ordered:
        return None
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)] * 1000


@dataclass(frozen=True)
class Window:
    """Warm-up (connections settled, caches hot, not recorded), then the measured seconds."""

    warmup: float
    seconds: float


def collect(messages: Any, workers: Sequence[Any], timeout: float, what: str) -> list[Any]:
    """One message per load process; a process that died says so at once instead of after the timeout."""
    received: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(received) < len(workers):
        try:
            received.append(messages.get(timeout=0.2))
        except queue.Empty:
            dead = [f"{worker.name} (exit {worker.exitcode})" for worker in workers if worker.exitcode not in (None, 0)]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"only {len(received)} of {len(workers)} load processes {what}; dead: {dead or 'none'}") from None
    return received


def measure(
    plan: LoadPlan, clients: int, servers: Sequence[Child], window: Window, *, scenario: str, kind: str, idle: int = 0
) -> tuple[Measurement, list[str]]:
    """Run `clients` terminals in a closed loop against `servers`; the row, and every code they were sold."""
    context = multiprocessing.get_context("spawn")
    ready, results = context.Queue(), context.Queue()
    go = context.Event()
    shared_window = context.Array("d", 2, lock=False)
    process_count = min(clients, MAX_LOAD_PROCESSES)
    workers = [
        context.Process(
            target=load_process,
            args=(plan, tuple(range(index, clients, process_count)), ready, go, shared_window, results),
            name=f"load-{index}", daemon=True,
        )
        for index in range(process_count)
    ]
    try:
        for worker in workers:
            worker.start()
        collect(ready, workers, START_TIMEOUT_SECONDS + clients * 0.1, "connected its terminals")
        begin = time.monotonic() + window.warmup
        shared_window[0], shared_window[1] = begin, begin + window.seconds
        go.set()
        time.sleep(max(0.0, begin - time.monotonic()))  # the window is timed on the shared monotonic clock
        cpu_before = sum(cpu_seconds(server.pid) for server in servers)
        time.sleep(max(0.0, begin + window.seconds - time.monotonic()))
        cpu_after = sum(cpu_seconds(server.pid) for server in servers)
        reports: list[ProcessReport] = collect(results, workers, CALL_TIMEOUT_SECONDS + 30, "reported")
        for worker in workers:
            worker.join(timeout=30)
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
                worker.join(timeout=5)
    return summarise(reports, clients, len(servers), window.seconds, cpu_after - cpu_before, servers,
                     scenario=scenario, kind=kind, idle=idle)


def summarise(
    reports: Sequence[ProcessReport], clients: int, server_count: int, seconds: float, server_cpu: float,
    servers: Sequence[Child], *, scenario: str, kind: str, idle: int,
) -> tuple[Measurement, list[str]]:
    latencies = array("d")
    for report in reports:
        latencies.frombytes(report.latencies)
    ordered = sorted(latencies)
    calls = len(ordered)
    load_cpu = sum(report.cpu_seconds for report in reports)
    measurement = Measurement(
        scenario=scenario, kind=kind, clients=clients, servers=server_count, idle_terminals=idle, seconds=seconds,
        calls=calls, errors=sum(report.errors for report in reports), calls_per_s=calls / seconds,
        p50_ms=percentile_ms(ordered, 0.50), p99_ms=percentile_ms(ordered, 0.99),
        server_cpu_us_per_call=server_cpu / calls * 1e6 if calls else None,
        load_cpu_us_per_call=load_cpu / calls * 1e6 if calls else None,
        server_rss_mb=sum(rss_mb(server.pid) for server in servers),
        error_sample=next((report.error_sample for report in reports if report.error_sample), ""),
    )
    return measurement, [code for report in reports for code in report.codes]


@contextlib.contextmanager
def idle_terminals(address: str, count: int) -> Iterator[int]:
    """`count` connected, silent terminals held by a separate process for the duration of the block."""
    context = multiprocessing.get_context("spawn")
    ready, release = context.Queue(), context.Event()
    holder = context.Process(target=hold_idle_terminals, args=(address, count, ready, release), name="idle-terminals", daemon=True)
    holder.start()
    try:
        opened, failures = ready.get(timeout=START_TIMEOUT_SECONDS + count * 0.1)
        if failures:
            raise RuntimeError(f"{failures} of {count} idle terminals could not connect (file descriptor limit?)")
        yield opened
    finally:
        release.set()
        holder.join(timeout=30)
        if holder.is_alive():
            holder.terminate()
