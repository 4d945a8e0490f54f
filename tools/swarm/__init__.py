"""Many terminals at once, and the audit that proves nothing was sold twice.

The box office promises that a ticket is sold once, however many terminals buy at the same moment and
however often a server dies under them. A promise like that is only worth what checks it, so this module
runs the check: terminals (threads, optionally spread over worker processes) buy from one event until the
box office says no, and then the event itself is compared with what the terminals were told. It goes
through the public client API alone, as any other terminal would, so the audit trusts nothing that a
real customer could not see.

It is kept apart from its screen (`python cli.py swarm`, which runs tools/swarm/__main__.py as a program of its
own) so that scripts and tests can run the same swarm, and so that worker processes import this and
client_core, not a user interface: nothing here prints.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from client_core import TicketClient
from errors import ReservationError, SoldOut, Unavailable
from records import Event

__all__ = ["SwarmPlan", "SwarmReport", "run_swarm"]

MAX_OUTAGES = 3
"""Consecutive `Unavailable` answers (each already a whole timeout of retries) before a terminal gives up."""

_Granted = tuple[str, str, str, int]
"""(code, email, status, quantity) of a reservation the box office granted."""


@dataclass(frozen=True)
class SwarmPlan:
    """A whole swarm in plain values, so it crosses into worker processes as it is."""

    name_servers: tuple[str, ...]
    servers: tuple[str, ...]
    timeout: float
    event_id: int
    quantity: int
    sector: str | None
    confirm: bool
    max_per_client: int | None
    clients: int
    processes: int
    """0 runs every terminal as a thread of this process."""
    cafile: str | None = None
    """TLS: the CA the servers' certificates are signed by (None: plain text)."""


@dataclass(frozen=True)
class SwarmReport:
    """What the run did and what the audit found; field names are those of `cli.py swarm --json`."""

    event: int
    clients: int
    processes: int
    mode: str
    """Either "confirm" (bought) or "hold"."""
    reservations: int
    sold: int
    settled: int
    """Purchases left without an answer, then asked about once more so that `sold` is exact."""
    verified_confirmed: int
    taken_before: int
    available_after: int
    sold_out: int
    other_refusals: int
    last_refusal: str
    unavailable: int
    calls: int
    calls_per_s: float
    elapsed_s: float
    """The buying only; the audit after it is not timed."""
    consistent: bool
    violations: tuple[str, ...]


@dataclass
class _Tally:
    """What one terminal saw; travels back from a worker process as a plain dict."""

    reservations: list[_Granted] = field(default_factory=list)
    pending: list[tuple[str, int]] = field(default_factory=list)
    """(request id, terminal number) of a purchase left without an answer: it may or may not have happened."""
    sold_out: int = 0
    other_refusals: int = 0
    unavailable: int = 0
    calls: int = 0
    last_refusal: str = ""
    crashed: str = ""
    """Set when the terminal died of something unexpected: its purchases are then unaccounted for."""


@dataclass
class _Audit:
    """The event after the run held against what the terminals were told."""

    reservations: int
    sold: int
    settled: int
    verified_confirmed: int
    available_after: int
    violations: list[str]


def run_swarm(client: TicketClient, plan: SwarmPlan, on_start: Callable[[Event, int], None],
              on_sale: Callable[[int], None]) -> SwarmReport:
    """Run the swarm, then audit it with `client`.

    `on_start` gets the event as it stood before the run and how many tickets were within the swarm's
    reach, so a progress display can size itself; `on_sale` gets each granted quantity as it happens,
    possibly from many threads at once. Assumes nobody else sells this event during the run: whoever
    does shows up as a violation. Raises `ReservationError` or `Unavailable` when the event cannot be read.
    """
    before = client.get_event(plan.event_id)
    scope = before.sector(plan.sector) if plan.sector else None
    on_start(before, scope.available if scope else sum(sector.available for sector in before.sectors))
    started = time.monotonic()
    if plan.processes:
        tallies, violations = _run_in_processes(plan, on_sale)
    else:
        tallies, violations = _run_terminals(plan, 0, plan.clients, on_sale), []
    elapsed = time.monotonic() - started
    audit = _audit(client, plan, before, tallies)
    violations += audit.violations
    calls = sum(tally.calls for tally in tallies)
    return SwarmReport(
        event=plan.event_id,
        clients=plan.clients,
        processes=plan.processes,
        mode="confirm" if plan.confirm else "hold",
        reservations=audit.reservations,
        sold=audit.sold,
        settled=audit.settled,
        verified_confirmed=audit.verified_confirmed,
        taken_before=_tickets_taken(before),
        available_after=audit.available_after,
        sold_out=sum(tally.sold_out for tally in tallies),
        other_refusals=sum(tally.other_refusals for tally in tallies),
        last_refusal=next((tally.last_refusal for tally in tallies if tally.last_refusal), ""),
        unavailable=sum(tally.unavailable for tally in tallies),
        calls=calls,
        calls_per_s=round(calls / elapsed, 1) if elapsed > 0 else 0.0,
        elapsed_s=round(elapsed, 3),
        consistent=not violations,
        violations=tuple(violations),
    )


def _identity(number: int) -> tuple[str, str]:
    """The customer a terminal buys as, derived from its number so a later retry can buy as the same one."""
    return f"Swarm terminal {number}", f"swarm-{number}@example.com"


def _run_terminal(plan: SwarmPlan, number: int, sold: Callable[[int], None]) -> _Tally:
    """Buy until the box office says no. After an outage the same request id is sent again, so a purchase
    the server made but could not report is found again instead of being made twice."""
    tally = _Tally()
    customer, email = _identity(number)
    request_id = uuid.uuid4().hex
    outages = 0
    with TicketClient(plan.name_servers, plan.servers, plan.timeout, cafile=plan.cafile) as client:
        while plan.max_per_client is None or len(tally.reservations) < plan.max_per_client:
            tally.calls += 1
            try:
                reservation = client.reserve(plan.event_id, plan.quantity, customer, email, sector=plan.sector,
                                             confirm=plan.confirm, request_id=request_id)
            except SoldOut:
                tally.sold_out += 1
                break
            except ReservationError as exc:
                tally.other_refusals += 1
                tally.last_refusal = f"{type(exc).__name__}: {exc}"
                break
            except Unavailable:
                tally.unavailable += 1
                outages += 1
                if outages >= MAX_OUTAGES:
                    tally.pending.append((request_id, number))
                    break
                continue
            outages = 0
            request_id = uuid.uuid4().hex
            tally.reservations.append((reservation.code, email, reservation.status, reservation.quantity))
            sold(reservation.quantity)
    return tally


def _run_terminals(plan: SwarmPlan, first: int, count: int, sold: Callable[[int], None]) -> list[_Tally]:
    """Terminals as threads; daemon threads, so Ctrl-C ends the run without waiting for them."""
    tallies: list[_Tally] = [_Tally() for _ in range(count)]

    def work(index: int) -> None:
        try:
            tallies[index] = _run_terminal(plan, first + index, sold)
        except Exception as exc:  # noqa: BLE001 - reported as a swarm violation instead of a traceback on the screen
            tallies[index] = _Tally(crashed=f"terminal {first + index} crashed: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=work, args=(i,), name=f"terminal-{first + i}", daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tallies


def _worker(plan: SwarmPlan, first: int, count: int, pipe: multiprocessing.connection.Connection) -> None:
    """A worker process: its terminals report each sale through the pipe, then the tallies, as plain data.

    It ignores Ctrl-C, which the terminal sends to the whole process group: the parent decides when to stop.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    lock = threading.Lock()

    def sold(quantity: int) -> None:
        with lock:
            pipe.send(("sold", quantity))

    tallies = _run_terminals(plan, first, count, sold)
    pipe.send(("done", [asdict(tally) for tally in tallies]))
    pipe.close()


def _run_in_processes(plan: SwarmPlan, sold: Callable[[int], None]) -> tuple[list[_Tally], list[str]]:
    """Spread the terminals over worker processes; returns their tallies and any worker that died silently."""
    context = multiprocessing.get_context("spawn")
    readers: dict[multiprocessing.connection.Connection, multiprocessing.process.BaseProcess] = {}
    first = 0
    for index in range(plan.processes):
        count = plan.clients // plan.processes + (1 if index < plan.clients % plan.processes else 0)
        if not count:
            continue
        reader, writer = context.Pipe(duplex=False)
        worker = context.Process(target=_worker, args=(plan, first, count, writer), name=f"swarm-{index}", daemon=True)
        worker.start()
        writer.close()
        readers[reader] = worker
        first += count
    workers = list(readers.values())
    tallies: list[_Tally] = []
    lost: list[str] = []
    try:
        while readers:
            for reader in multiprocessing.connection.wait(list(readers)):
                try:
                    kind, payload = reader.recv()
                except EOFError:
                    worker = readers.pop(reader)
                    worker.join()
                    lost.append(f"worker process {worker.pid} exited (code {worker.exitcode}) before reporting its terminals")
                    continue
                if kind == "sold":
                    sold(payload)
                else:
                    tallies.extend(_Tally(**tally) for tally in payload)
                    readers.pop(reader).join()
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
                worker.join()
    return tallies, lost


def _tickets_taken(event: Event) -> int:
    """Held and sold alike: both are tickets no one else can buy."""
    return sum(sector.capacity - sector.available for sector in event.sectors)


def _audit(client: TicketClient, plan: SwarmPlan, before: Event, tallies: list[_Tally]) -> _Audit:
    """Compare what the terminals were told with what the box office now says, through the public API only."""
    pending = [item for tally in tallies for item in tally.pending]
    reservations = [item for tally in tallies for item in tally.reservations] + _settle(client, plan, pending)
    sold = sum(quantity for *_, quantity in reservations)
    after = client.get_event(plan.event_id)
    taken = _tickets_taken(after) - _tickets_taken(before)
    violations = [tally.crashed for tally in tallies if tally.crashed]
    if taken != sold:
        violations.append(f"the event has {taken} fewer tickets available than before the run, but the swarm was given {sold}")
    for code, times in Counter(code for code, *_ in reservations).items():
        if times > 1:
            violations.append(f"reservation code {code} was handed out {times} times")
    verified, denied = _verify_confirmed(client, reservations)
    return _Audit(len(reservations), sold, len(pending), verified, sum(sector.available for sector in after.sectors),
                  violations + denied)


def _settle(client: TicketClient, plan: SwarmPlan, pending: list[tuple[str, int]]) -> list[_Granted]:
    """Send each unanswered purchase once more with its own request id: the box office answers with the
    reservation it made then, or makes it now, or refuses; either way the count becomes exact."""
    settled = []
    for request_id, number in pending:
        customer, email = _identity(number)
        try:
            reservation = client.reserve(plan.event_id, plan.quantity, customer, email, sector=plan.sector,
                                         confirm=plan.confirm, request_id=request_id)
        except ReservationError:
            continue
        settled.append((reservation.code, email, reservation.status, reservation.quantity))
    return settled


def _verify_confirmed(client: TicketClient, reservations: list[_Granted]) -> tuple[int, list[str]]:
    """Ask the box office about every purchase it confirmed: a sale it no longer stands by was not a sale.

    Returns how many it answered for, and what it denied.
    """
    verified = 0
    violations = []
    for code, email, status, _ in reservations:
        if status != "confirmed":
            continue
        try:
            found = client.get_reservation(code, email)
        except ReservationError as exc:
            violations.append(f"{code} was confirmed, but the box office now answers {type(exc).__name__}: {exc}")
            continue
        if found.status != "confirmed":
            violations.append(f"{code} was confirmed, but the box office now says {found.status}")
        verified += 1
    return verified, violations
