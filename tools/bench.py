"""How fast is the box office, measured against what RPyC alone can do on this machine.

`python bench.py [--quick] [--json FILE] [--clients 1,8,64,256] [--seconds 5]` starts everything it
measures as subprocesses and prints one table:

- the ceiling: a bare RPyC `ThreadedServer` whose methods do nothing (`python bench.py --serve-noop PORT`),
  with server.py's PROTOCOL_CONFIG, so the only difference from the product is the product's own work;
  and the same server returning a reservation record, to show what the record reply alone costs;
- the product: `reserve(..., confirm=True)` (each call its own request id, so every call is a real sale
  committed with synchronous=FULL), `list_events` and `get_seat_map` (a 20x30 room), against `server.py`
  on a fresh database;
- 8 active terminals buying next to N idle connected ones, against the same 8 alone;
- two and three replicas sharing one SQLite file, terminals spread round-robin; the same on a throwaway
  PostgreSQL (pgcluster.py) when this machine has its binaries.

The load is a closed loop: every simulated terminal has its own connection and sends its next call as
soon as the last one answered, from a few separate load processes (threads inside), so the load generator
does not share a GIL with the server it measures. Every call takes the cheapest correct path, one
`HANDLE_CALLATTR` message, exactly as client_core does, on the ceiling and the product alike.

Afterwards it audits each database: tickets sold == capacity - available, no request id twice, every
code a terminal was given is in the database exactly once, and the store's invariants hold. A violation
is printed in red and the exit code is 1. The targets are ratios within one run and never change the
exit code: timings on a shared machine are information, not verdicts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import platform
import queue
import resource
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import rpyc
from rich.console import Console
from rich.table import Table
from rpyc.core import consts
from rpyc.core.stream import SocketStream
from rpyc.utils.factory import connect_stream
from rpyc.utils.server import ThreadedServer

from client_core import CLIENT_CONFIG
from database import MAX_CAPACITY, Store, iso
from records import Reservation, to_wire
from server import PROTOCOL_CONFIG
from tools.pgcluster import PgCluster, find_binaries

ROOT = Path(__file__).resolve().parent.parent
PRODUCT_READY = "Ticket server listening on"
NOOP_READY = "No-op server listening on"
WARMUP_SECONDS = 0.3
MAX_LOAD_PROCESSES = 4
"""Two cores: more load processes would only fight the server for them."""
CALL_TIMEOUT_SECONDS = 30.0
"""Generous on purpose: at 256 terminals on two cores a slow answer is a data point, not an error."""
START_TIMEOUT_SECONDS = 30.0
SECTOR = "Pista"
SEATED_SECTOR = "Sala"
SEATED_ROOM = (20, 30)
"""The issue's example room: 20 rows of 30 seats, read whole by get_seat_map."""
CAPACITY = MAX_CAPACITY
"""The largest sector the store accepts, so no run sells out (a full run sells well under a million)."""
REFERENCE_CLIENTS = 64
NOOP_CODE = "NOOPNOOP"
FD_HEADROOM = 512


# -- the ceiling: a server that does nothing ---------------------------------------------------------


class NoopService(rpyc.Service):
    """The same wire, threads and configuration as the product; the methods return at once."""

    def exposed_reserve(self, *args: Any) -> None:
        return None

    def exposed_reserve_record(
        self, event_id: int, quantity: int, customer: str, email: str, sector: str, category: str, *rest: Any
    ) -> tuple:
        """The second ceiling: no store, but the reply the record contract prescribes (a reservation as
        (field, value) pairs), built per call as the product builds it. What separates it from `noop` is
        the cost of the reply alone, on both sides of the wire."""
        sold = Reservation(NOOP_CODE, event_id, sector, quantity, customer, email, category, 10000, 10000 * quantity,
                           "confirmed", iso(time.time()), None)
        return to_wire(sold)

    def exposed_list_events(self) -> None:
        return None


def serve_noop(port: int) -> int:
    """Run the ceiling server until SIGTERM/SIGINT; prints its readiness line with the real port."""
    server = ThreadedServer(NoopService, hostname="127.0.0.1", port=port, protocol_config=PROTOCOL_CONFIG, auto_register=False)
    server._listen()  # listen before saying so; start() then only accepts
    print(f"{NOOP_READY} 127.0.0.1:{server.port}", flush=True)
    try:
        server.start()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


# -- child processes ---------------------------------------------------------------------------------


@dataclass
class Child:
    """A server subprocess: stdout read by a thread (for the readiness line), stderr kept in a log file."""

    name: str
    popen: subprocess.Popen
    log_path: Path
    lines: queue.Queue = field(default_factory=queue.Queue)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def pump(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for_line(self, text: str, timeout: float = START_TIMEOUT_SECONDS) -> str:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                raise RuntimeError(f"{self.name} exited ({self.popen.wait()}) before it was ready:\n{self.log_tail()}")
            if text in line:
                return line
        raise TimeoutError(f"{self.name} did not print {text!r} within {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (the product finishes in-flight calls and closes the store), SIGKILL if it hangs."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=timeout)
        if self.popen.stdout is not None:
            self.popen.stdout.close()


def start_child(name: str, args: Sequence[str], ready: str, log_dir: Path) -> tuple[Child, str]:
    """Start `python <args>` and return it with the address from its readiness line ("... HOST:PORT")."""
    log_path = log_dir / f"{name}.log"
    with open(log_path, "w") as log_file:
        popen = subprocess.Popen(
            [sys.executable, *args], cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log_file, text=True,
        )
    child = Child(name, popen, log_path)
    threading.Thread(target=child.pump, name=f"pump-{name}", daemon=True).start()
    try:
        line = child.wait_for_line(ready)
    except BaseException:
        child.stop()
        raise
    return child, line.rsplit(" ", 1)[-1]


def unused_port() -> int:
    """A port nobody listens on (for the name server the product must not find)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- what the kernel knows about a server -------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


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


# -- the load: runs inside the load processes --------------------------------------------------------


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


def connect_when_listening(address: str, timeout: float = START_TIMEOUT_SECONDS) -> rpyc.Connection:
    """The first connection to a server: server.py prints its readiness line from the main thread while
    another thread may still be about to call listen(), so a refusal right then means "not yet"."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return connect(address)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


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


# -- measuring, in the parent ------------------------------------------------------------------------


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


# -- the systems under test ----------------------------------------------------------------------------


@dataclass
class Product:
    """N ticket servers on one fresh database with one huge on-sale event, and the codes sold through them."""

    name: str
    db: str
    """A SQLite file, or a PostgreSQL URL."""
    servers: list[Child]
    addresses: tuple[str, ...]
    token: str
    event_id: int = 0
    codes: list[str] = field(default_factory=list)

    def plan(self, method: str, run_id: str) -> LoadPlan:
        return LoadPlan(method, self.addresses, self.event_id, run_id)

    def sector_counts(self) -> tuple[int, int]:
        """(capacity, available) of the bench sector, as a client sees it through get_event."""
        connection = connect(self.addresses[0])
        try:
            event = dict(call(connection, "get_event", self.event_id))
        finally:
            connection.close()
        sector = next(dict(pairs) for pairs in event["sectors"] if dict(pairs)["name"] == SECTOR)
        return sector["capacity"], sector["available"]


@contextlib.contextmanager
def product(name: str, replicas: int, workdir: Path, log_level: str | None, database: str = "") -> Iterator[Product]:
    """Start `replicas` servers on one new database (a SQLite file, or the PostgreSQL URL given) and create the
    bench event; stop them all on the way out."""
    directory = workdir / name
    directory.mkdir()
    db = database or str(directory / "tickets.db")
    token = secrets.token_urlsafe(16)
    nowhere = f"127.0.0.1:{unused_port()}"
    servers: list[Child] = []
    try:
        addresses = []
        for index in range(replicas):
            args = ["server.py", "--port", "0", "--db", db, "--no-demo", f"--admin-token={token}", "--name-server", nowhere]
            if log_level:
                args += ["--log-level", log_level]
            server, address = start_child(f"{name}-server{index}", args, PRODUCT_READY, directory)
            servers.append(server)
            addresses.append(address)
            connect_when_listening(address).close()
        system = Product(name, db, servers, tuple(addresses), token)
        connection = connect(addresses[0])
        try:
            event = dict(call(connection, "admin_create_event", token, "Bench Night", "Bench Hall",
                              "2030-01-01T20:00:00-03:00", ((SECTOR, 10000, CAPACITY), (SEATED_SECTOR, 5000, *SEATED_ROOM))))
        finally:
            connection.close()
        system.event_id = event["id"]
        yield system
    finally:
        for server in servers:
            server.stop()


@contextlib.contextmanager
def noop_server(workdir: Path) -> Iterator[tuple[Child, str]]:
    child, address = start_child("noop-server", ["-m", "tools.bench", "--serve-noop", "0"], NOOP_READY, workdir)
    try:
        yield child, address
    finally:
        child.stop()


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


# -- the correctness audit -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Audit:
    """What one database says after its servers stopped, against what the terminals were told."""

    database: str
    capacity: int
    available: int
    sold: int
    reservations: int
    distinct_request_ids: int
    codes_returned: int
    codes_distinct: int
    codes_missing: int
    violations: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.violations


def audit(system: Product, capacity: int, available: int) -> Audit:
    """Run after the servers stopped: count in the database itself, then ask the store for its invariants."""
    store = Store(system.db, seed_demo=False)
    try:
        with store.engine.reader() as connection:
            rows, distinct = connection.execute("SELECT COUNT(*), COUNT(DISTINCT request_id) FROM reservations").fetchone()
            sold = connection.execute(
                "SELECT COALESCE(SUM(quantity), 0) FROM reservations WHERE status = 'confirmed' AND event_id = ? AND sector = ?",
                (system.event_id, SECTOR),
            ).fetchone()[0]
            stored = {code for (code,) in connection.execute("SELECT code FROM reservations").fetchall()}
        invariants = store.check_invariants()
    finally:
        store.close()
    returned = set(system.codes)
    missing = len(returned - stored)
    violations = [*invariants]
    if sold != capacity - available:
        violations.append(f"{sold} tickets sold but capacity {capacity} - available {available} = {capacity - available}")
    if rows != distinct:
        violations.append(f"{rows - distinct} request ids appear twice ({rows} reservations, {distinct} distinct request ids)")
    if missing:
        violations.append(f"{missing} codes a terminal was sold are not in the database")
    if len(returned) != len(system.codes):
        violations.append(f"{len(system.codes) - len(returned)} codes were handed to two terminals")
    if sold < len(system.codes):
        violations.append(f"terminals were sold {len(system.codes)} tickets but the database counts {sold}")
    return Audit(system.name, capacity, available, sold, rows, distinct, len(system.codes), len(returned), missing, tuple(violations))


# -- the scenarios -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """What one run measures; --quick shrinks it to a CI smoke test of correctness."""

    levels: tuple[int, ...]
    window: Window
    idle: int
    replicas: tuple[int, ...]
    replica_clients: int
    log_level: str | None
    postgres: bool
    """Replicas on a throwaway PostgreSQL too (pgcluster.py), besides SQLite."""


def run_levels(settings: Settings, system: Product, noop: tuple[Child, str], run_id: str) -> list[Measurement]:
    """Ceiling and product level by level, interleaved so drift on a shared machine hits both alike."""
    noop_child, noop_address = noop
    rows = []
    for clients in settings.levels:
        for kind, method in (("noop", "reserve"), ("noop_record", "reserve_record")):
            noop_row, _ = measure(LoadPlan(method, (noop_address,), 1, run_id), clients, [noop_child], settings.window,
                                  scenario="levels", kind=kind)
            rows.append(noop_row)
        for method in ("reserve", "list_events", "get_seat_map"):
            row, codes = measure(system.plan(method, f"{run_id}-{method}-{clients}"), clients, system.servers, settings.window,
                                 scenario="levels", kind=method)
            system.codes.extend(codes)
            rows.append(row)
    return rows


def run_idle(settings: Settings, system: Product, run_id: str) -> list[Measurement]:
    """The same 8 buyers without and then with idle terminals connected, back to back."""
    rows = []
    alone, codes = measure(system.plan("reserve", f"{run_id}-alone"), 8, system.servers, settings.window, scenario="idle", kind="reserve")
    system.codes.extend(codes)
    rows.append(alone)
    with idle_terminals(system.addresses[0], settings.idle) as opened:
        crowded, codes = measure(system.plan("reserve", f"{run_id}-crowded"), 8, system.servers, settings.window,
                                 scenario="idle", kind="reserve", idle=opened)
    system.codes.extend(codes)
    rows.append(crowded)
    return rows


def run_replicas(
    settings: Settings, workdir: Path, run_id: str, postgres: PgCluster | None
) -> tuple[list[Measurement], list[Audit]]:
    """N servers on one SQLite file, then on one PostgreSQL when there is one."""
    rows, audits = [], []
    for replicas in settings.replicas:
        for backend in ("sqlite", "postgresql") if postgres else ("sqlite",):
            database = postgres.create_database(f"bench{replicas}") if postgres and backend == "postgresql" else ""
            with product(f"{backend}-replicas{replicas}", replicas, workdir, settings.log_level, database) as system:
                row, codes = measure(system.plan("reserve", f"{run_id}-{backend}-x{replicas}"), settings.replica_clients,
                                     system.servers, settings.window, scenario="replicas", kind="reserve")
                system.codes.extend(codes)
                rows.append(replace(row, backend=backend))
                counts = system.sector_counts()
            audits.append(audit(system, *counts))
    return rows, audits


def measure_store(threads: int, window: Window, workdir: Path, run_id: str, database: str = "") -> tuple[Measurement, Audit]:
    """The store alone: `threads` threads of this process selling through one Store on a fresh database (a SQLite
    file, or the PostgreSQL URL given), no RPyC.

    What the server adds to a sale is the difference between this and the `reserve` row; CPU is this
    process's own (os.times) over the window, so it includes the group commit's hand-offs between threads.
    """
    name = f"store-{'postgresql' if database else 'sqlite'}-{threads}"
    if not database:
        (workdir / name).mkdir()
    db = database or str(workdir / name / "tickets.db")
    store = Store(db, seed_demo=False)
    try:
        event = store.create_event("Bench Night", "Bench Hall", "2030-01-01T20:00:00-03:00", ((SECTOR, 10000, CAPACITY),))
        logs = [TerminalLog() for _ in range(threads)]
        begin = time.monotonic() + window.warmup
        end = begin + window.seconds

        def sell(terminal: int) -> None:
            log, sequence = logs[terminal], 0
            customer, email = f"Bench Terminal {terminal}", f"terminal{terminal}@bench.example"
            while (started_at := time.monotonic()) < end:
                started = time.perf_counter()
                try:
                    sold = store.reserve(event.id, 1, customer, email, SECTOR, "full", f"{run_id}-{terminal}-{sequence}", True)
                except Exception as exc:  # noqa: BLE001 - counted and sampled like a terminal's error
                    log.failed(exc)
                    continue
                finally:
                    sequence += 1
                if started_at >= begin:
                    log.latencies.append(time.perf_counter() - started)
                log.codes.append(sold.code)

        workers = [threading.Thread(target=sell, args=(terminal,), name=f"store-bench-{terminal}") for terminal in range(threads)]
        for worker in workers:
            worker.start()
        time.sleep(max(0.0, begin - time.monotonic()))
        before = os.times()
        time.sleep(max(0.0, end - time.monotonic()))
        after = os.times()
        for worker in workers:
            worker.join()
        cpu = (after.user - before.user) + (after.system - before.system)
        report = ProcessReport(b"".join(log.latencies.tobytes() for log in logs), sum(log.errors for log in logs),
                               next((log.error_sample for log in logs if log.error_sample), ""),
                               tuple(code for log in logs for code in log.codes), 0.0)
        row, codes = summarise([report], threads, 0, window.seconds, cpu, [], scenario="store", kind="store.reserve", idle=0)
        counts = next((sector.capacity, sector.available) for sector in store.get_event(event.id).sectors if sector.name == SECTOR)
    finally:
        store.close()
    system = Product(name, db, [], (), "", event.id, codes)
    backend = "postgresql" if database else "sqlite"
    return replace(row, load_cpu_us_per_call=None, server_rss_mb=rss_mb(os.getpid()), backend=backend), audit(system, *counts)


def run_store(settings: Settings) -> tuple[list[Measurement], list[Audit]]:
    """Each level on a fresh SQLite file, then on a fresh PostgreSQL database when there is one."""
    rows, audits = [], []
    run_id = secrets.token_hex(4)
    with tempfile.TemporaryDirectory(prefix="bilheteria-bench-store-") as temp, contextlib.ExitStack() as stack:
        postgres = stack.enter_context(PgCluster()) if settings.postgres else None
        for backend in ("sqlite", "postgresql") if postgres else ("sqlite",):
            for threads in settings.levels:
                database = postgres.create_database(f"store{threads}") if postgres and backend == "postgresql" else ""
                row, checked = measure_store(threads, settings.window, Path(temp), run_id, database)
                rows.append(row)
                audits.append(checked)
    return rows, audits


def with_ratios(rows: list[Measurement]) -> list[Measurement]:
    """Each row's throughput as a fraction of the no-op ceiling at the same number of terminals."""
    ceiling = {row.clients: row.calls_per_s for row in rows if row.kind == "noop"}
    return [replace(row, ratio_to_noop=row.calls_per_s / ceiling[row.clients]) if ceiling.get(row.clients) else row for row in rows]


# -- targets -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A goal stated as a ratio within one run; `passed` is None when the run did not measure it."""

    goal: str
    measured: str
    passed: bool | None


def find(rows: Sequence[Measurement], **where: Any) -> Measurement | None:
    return next((row for row in rows if all(getattr(row, key) == value for key, value in where.items())), None)


def cpu_ratio(row: Measurement, noop: Measurement) -> float:
    """Server CPU per call of `row` as a multiple of the no-op's at the same level."""
    return (row.server_cpu_us_per_call or 0) / (noop.server_cpu_us_per_call or math.inf)


def evaluate_targets(rows: Sequence[Measurement], levels: Sequence[int]) -> list[Target]:
    clients = REFERENCE_CLIENTS if REFERENCE_CLIENTS in levels else max(levels)
    at = f" at {clients} clients"
    noop = find(rows, scenario="levels", kind="noop", clients=clients)
    reserve = find(rows, scenario="levels", kind="reserve", clients=clients)
    alone = find(rows, scenario="idle", idle_terminals=0)
    crowded = next((row for row in rows if row.scenario == "idle" and row.idle_terminals > 0), None)
    targets = []
    if noop and reserve and noop.calls and reserve.calls:
        ratio = reserve.calls_per_s / noop.calls_per_s
        targets.append(Target("reserve calls/s >= 0.75 x no-op" + at, f"{ratio:.2f} x", ratio >= 0.75))
        targets.append(Target("reserve p99 <= no-op p99" + at, f"{reserve.p99_ms:.1f} ms vs {noop.p99_ms:.1f} ms",
                              reserve.p99_ms <= noop.p99_ms))
        cpu = cpu_ratio(reserve, noop)
        targets.append(Target("server CPU per reservation <= 1.5 x per no-op call" + at,
                              f"{reserve.server_cpu_us_per_call:.0f} us vs {noop.server_cpu_us_per_call:.0f} us ({cpu:.1f} x)",
                              cpu <= 1.5))
    else:
        targets.append(Target("reserve vs no-op" + at, "not measured", None))
    record = find(rows, scenario="levels", kind="noop_record", clients=clients)
    if noop and record and noop.calls and record.calls:
        cpu = cpu_ratio(record, noop)
        targets.append(Target("for reference, the record reply alone: a no-op returning a reservation record" + at,
                              f"{record.calls_per_s / noop.calls_per_s:.2f} x calls/s, {cpu:.1f} x CPU", None))
    if alone and crowded and alone.calls and crowded.calls:
        growth = crowded.p99_ms / alone.p99_ms - 1
        targets.append(Target(f"active p99 with {crowded.idle_terminals} idle terminals within 10% of without",
                              f"{crowded.p99_ms:.1f} ms vs {alone.p99_ms:.1f} ms ({growth:+.0%})", growth <= 0.10))
        targets.append(Target(f"server RSS < 200 MB with {crowded.idle_terminals} idle terminals",
                              f"{crowded.server_rss_mb:.0f} MB (without: {alone.server_rss_mb:.0f} MB)", crowded.server_rss_mb < 200))
    return targets


# -- the report --------------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def results_table(rows: Sequence[Measurement], title: str = "bilheteria benchmark (closed loop, one CALLATTR message per call)") -> Table:
    table = Table(title=title)
    for heading in ("call", "clients", "calls", "calls/s", "p50 ms", "p99 ms", "errors", "server us/call", "load us/call",
                    "server RSS MB", "x no-op"):
        table.add_column(heading, justify="left" if heading == "call" else "right")
    scenario = None
    for row in rows:
        if scenario is not None and row.scenario != scenario:
            table.add_section()
        scenario = row.scenario
        table.add_row(
            row.label, str(row.clients), f"{row.calls:,}", fmt(row.calls_per_s, 0), fmt(row.p50_ms, 2), fmt(row.p99_ms, 2),
            f"[red]{row.errors}[/red]" if row.errors else "0", fmt(row.server_cpu_us_per_call, 0), fmt(row.load_cpu_us_per_call, 0),
            fmt(row.server_rss_mb, 0), fmt(row.ratio_to_noop, 2),
        )
    return table


def targets_table(targets: Sequence[Target]) -> Table:
    table = Table(title="targets (informational; never the exit code)")
    table.add_column("goal")
    table.add_column("measured", justify="right")
    table.add_column("result")
    for target in targets:
        verdict = {True: "[green]pass[/green]", False: "[yellow]fail[/yellow]", None: "[dim]-[/dim]"}[target.passed]
        table.add_row(target.goal, target.measured, verdict)
    return table


def print_audits(console: Console, audits: Sequence[Audit]) -> None:
    for check in audits:
        summary = (f"{check.database}: sold {check.sold:,} == capacity {check.capacity:,} - available {check.available:,}; "
                   f"{check.reservations:,} reservations, {check.distinct_request_ids:,} distinct request ids; "
                   f"{check.codes_returned:,} codes returned, all present and distinct")
        if check.ok:
            console.print(f"[green]correct[/green] {summary}")
        else:
            for violation in check.violations:
                console.print(f"[bold red]VIOLATION[/bold red] {check.database}: {violation}")


def machine() -> dict[str, Any]:
    with open("/proc/meminfo") as meminfo:
        total_kb = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:"))
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "memory_mb": total_kb // 1024,
        "python": platform.python_version(),
        "rpyc": rpyc.__version__,
        "platform": platform.platform(),
        "loadavg_at_start": os.getloadavg(),
    }


def write_json(path: str, info: dict, settings: Settings, rows: Sequence[Measurement], targets: Sequence[Target],
               audits: Sequence[Audit]) -> None:
    document = {
        "machine": {**info, "loadavg_at_end": os.getloadavg()},
        "settings": asdict(settings),
        "results": [{**asdict(row), "label": row.label} for row in rows],
        "targets": [asdict(target) for target in targets],
        "correctness": {"ok": all(check.ok for check in audits), "databases": [{**asdict(check), "ok": check.ok} for check in audits]},
    }
    Path(path).write_text(json.dumps(document, indent=2, allow_nan=False, default=str) + "\n")


# -- main ----------------------------------------------------------------------------------------------


def raise_file_limit(needed: int) -> None:
    """Children inherit the limit: the server needs a descriptor per terminal, the idle holder one per idle terminal."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark bilheteria against a no-op RPyC server on this machine.")
    parser.add_argument("--quick", action="store_true", help="CI smoke test: 0.5 s per level, 8 clients, 100 idle, 2 replicas")
    parser.add_argument("--postgres", action=argparse.BooleanOptionalAction, default=None,
                        help="replicas on a throwaway PostgreSQL too (default: yes when its binaries are here, except with --quick)")
    parser.add_argument("--json", metavar="FILE", help="also write the results, targets, audit and machine info here")
    parser.add_argument("--clients", help="comma-separated terminal counts (default 1,8,64,256)")
    parser.add_argument("--seconds", type=float, help="measured seconds per level (default 5)")
    parser.add_argument("--idle", type=int, help="idle terminals next to 8 active ones (default 1000)")
    parser.add_argument("--replica-clients", type=int, help="terminals in the replica runs (default 64)")
    parser.add_argument("--server-log-level", help="pass --log-level to server.py (default: the server's own)")
    parser.add_argument("--store", action="store_true",
                        help="only the store: threads of this process selling through Store.reserve, no RPyC (levels 1,16,64)")
    parser.add_argument("--serve-noop", type=int, metavar="PORT", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    quick = args.quick
    default_levels = (16,) if args.store and quick else (1, 16, 64) if args.store else (8,) if quick else (1, 8, 64, 256)
    levels = tuple(int(item) for item in args.clients.split(",")) if args.clients else default_levels
    if not levels or min(levels) < 1:
        raise SystemExit("--clients needs positive numbers, e.g. 1,8,64")
    seconds = args.seconds if args.seconds is not None else (0.5 if quick else 5.0)
    return Settings(
        levels=levels,
        window=Window(WARMUP_SECONDS, seconds),
        idle=args.idle if args.idle is not None else (100 if quick else 1000),
        replicas=(2,) if quick else (2, 3),
        replica_clients=args.replica_clients or (8 if quick else REFERENCE_CLIENTS),
        log_level=args.server_log_level,
        postgres=args.postgres if args.postgres is not None else (not quick and find_binaries() is not None),
    )


def run(settings: Settings, console: Console) -> tuple[list[Measurement], list[Audit]]:
    """Every scenario, each server stopped before its database is audited."""
    run_id = secrets.token_hex(4)
    rows: list[Measurement] = []
    audits: list[Audit] = []
    with tempfile.TemporaryDirectory(prefix="bilheteria-bench-") as temp:
        workdir = Path(temp)
        with product("single", 1, workdir, settings.log_level) as system:
            with noop_server(workdir) as noop:
                console.print(f"[dim]levels {settings.levels}: no-op, no-op + record reply, reserve, list_events, get_seat_map ...[/dim]")
                rows += run_levels(settings, system, noop, run_id)
            console.print(f"[dim]8 active terminals without and with {settings.idle} idle ...[/dim]")
            rows += run_idle(settings, system, run_id)
            counts = system.sector_counts()
        audits.append(audit(system, *counts))
        console.print(f"[dim]replicas {settings.replicas} at {settings.replica_clients} clients ...[/dim]")
        with contextlib.ExitStack() as stack:
            postgres = stack.enter_context(PgCluster()) if settings.postgres else None
            replica_rows, replica_audits = run_replicas(settings, workdir, run_id, postgres)
        rows += replica_rows
        audits += replica_audits
    return with_ratios(rows), audits


def interrupt(signum: int, frame: Any) -> None:
    """SIGTERM unwinds like Ctrl-C, so every `finally` stops what it started."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_noop is not None:
        return serve_noop(args.serve_noop)
    signal.signal(signal.SIGTERM, interrupt)
    settings = settings_from(args)
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # CI logs and pipes: the table needs more than 80 columns
    raise_file_limit(max(*settings.levels, settings.replica_clients) + settings.idle + FD_HEADROOM)
    info = machine()
    started = time.monotonic()
    if args.store:
        rows, audits = run_store(settings)
        targets: list[Target] = []
        console.print(results_table(rows, title="the store alone (threads of one process, no RPyC)"))
    else:
        rows, audits = run(settings, console)
        targets = evaluate_targets(rows, settings.levels)
        console.print(results_table(rows))
        console.print(targets_table(targets))
    print_audits(console, audits)
    console.print(f"[dim]{info['nproc']} cores, Python {info['python']}, rpyc {info['rpyc']}, "
                  f"load average at start {info['loadavg_at_start'][0]:.2f}, took {time.monotonic() - started:.0f} s[/dim]")
    if args.json:
        write_json(args.json, info, settings, rows, targets, audits)
    return 0 if all(check.ok for check in audits) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; every process this run started has been stopped", file=sys.stderr)
        sys.exit(130)
