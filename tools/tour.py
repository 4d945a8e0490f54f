"""A guided tour: every distributed-systems idea in the box office, shown live on a small cluster.

`python cli.py tour` starts a name server and three ticket servers on one database in a temporary folder
and walks through chapters. Each chapter explains one idea, makes it happen in front of the reader, and
ends by checking what it claimed (counts, states) in green or red. `--auto` runs straight through, for
recordings and for the test suite, which requires every check to pass.

The tour plays roles no terminal plays: it reads the database directly (to show the tier below the
server), kills servers, and puts a wire tap between a terminal and a server to count bytes and to lose
a reply on purpose. Terminals never do any of that; they only use client_core.
"""

from __future__ import annotations

import socket
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.prompt import Prompt
from rich.table import Table
from rich.text import Text
from rpyc.utils.registry import TCPRegistryClient

import cli
from circuit_breaker import CircuitBreaker
from client_core import (
    AvailabilityUpdate,
    BreakerListener,
    Reservation,
    ReservationError,
    SoldOut,
    TicketClient,
    Unavailable,
    WaitlistEntry,
    is_server_failure,
)
from terminal.console import PromptConsole
from tools.harness import LaunchError, free_port, stop_child, stop_on_signals
from tools.launcher import LocalCluster

ADMIN_TOKEN = "tour-admin-token"
SERVERS = 3


@dataclass
class Check:
    claim: str
    ok: bool


@dataclass
class Chapter:
    number: int
    title: str
    idea: str
    run: Callable[[Tour], list[Check]]
    code: str = ""
    """Where the idea lives in the code (docs/ARCHITECTURE.md has the map)."""


# -- a wire tap: counts bytes and can lose one reply ------------------------------------------------------


class WireTap:
    """A TCP relay between one terminal and one server.

    It forwards bytes both ways and counts them, so the tour can show what one remote call costs on the
    wire; armed with `lose_next_reply`, it swallows the server's next answer and cuts the connection,
    which is exactly what a terminal sees when the network fails after the server committed.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.sent = 0
        self.received = 0
        self.lose_next_reply = threading.Event()
        self.lost_replies = 0
        self._closing = False
        threading.Thread(target=self._accept, name="wire-tap", daemon=True).start()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, upstream: bool) -> None:
        try:
            while chunk := source.recv(65536):
                if upstream:
                    self.sent += len(chunk)
                elif self.lose_next_reply.is_set():
                    self.lose_next_reply.clear()
                    self.lost_replies += 1
                    break
                else:
                    self.received += len(chunk)
                target.sendall(chunk)
        except OSError:
            pass
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def reset_counts(self) -> None:
        self.sent = self.received = 0

    def close(self) -> None:
        self._closing = True
        self.listener.close()


class TransitionLog(BreakerListener):
    """Collects breaker transitions as they happen, for the failover chapter to show and check."""

    def __init__(self) -> None:
        self.transitions: list[tuple[str, str, str]] = []

    def state_change(self, breaker, old: str, new: str) -> None:
        self.transitions.append((breaker.name, old, new))


# -- the tour -------------------------------------------------------------------------------------------


@dataclass
class Tour:
    cluster: LocalCluster
    console: Console
    auto: bool
    results: list[tuple[Chapter, list[Check]]] = field(default_factory=list)

    @property
    def ns(self) -> str:
        return self.cluster.name_server_address

    def client(self, **options: object) -> TicketClient:
        return TicketClient([self.ns], **options)

    def say(self, text: str) -> None:
        self.console.print(text)

    def query(self, sql: str, *params: object) -> list[tuple]:
        """The data tier, read directly and read-only: the tour may look below the servers; terminals never do."""
        with closing(sqlite3.connect(f"file:{self.cluster.db}?mode=ro", uri=True)) as db:
            return db.execute(sql, params).fetchall()

    def live_servers(self) -> list[str]:
        return [server.address for server in self.cluster.servers if server.alive()]

    def small_event(self, name: str, capacity: int) -> int:
        with self.client() as client:
            return client.create_event(ADMIN_TOKEN, name, "Sala da Tour", "2027-06-01T20:00:00-03:00", [("Geral", 5000, capacity)]).id

    def pause(self) -> None:
        if not self.auto:
            Prompt.ask("[dim]Enter for the next chapter[/dim]", default="", show_default=False, console=self.console)


def chapter_rpc(tour: Tour) -> list[Check]:
    tap = WireTap(("127.0.0.1", port_of(tour.live_servers()[0])))
    try:
        with TicketClient(servers=[tap.address]) as client:
            client.ping()
            tour.say("The terminal calls [bold]client.reserve(3, 2, 'Ana', 'ana@example.com')[/bold], as if the box office "
                     "were a local object. RPyC turns it into one request message and one reply.")
            tap.reset_counts()
            started = time.perf_counter()
            reservation = client.reserve(3, 2, "Ana", "ana@example.com")
            elapsed_ms = (time.perf_counter() - started) * 1000
    finally:
        tap.close()
    table = Table(title="One remote call, as the wire saw it")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("request bytes (terminal -> server)", str(tap.sent))
    table.add_row("reply bytes (server -> terminal)", str(tap.received))
    table.add_row("round trip, durable commit included", f"{elapsed_ms:.2f} ms")
    table.add_row("answer", f"{reservation.code}: {reservation.quantity} x {reservation.sector}, {reservation.status}")
    tour.console.print(table)
    return [
        Check("the call answered with a held reservation", reservation.status == "held"),
        Check("one request and one reply crossed the wire (a few hundred bytes each way)", 0 < tap.sent < 2000 and 0 < tap.received < 2000),
    ]


def chapter_tiers(tour: Tour) -> list[Check]:
    server = tour.live_servers()[0]
    with TicketClient(servers=[server]) as client:
        before = client.status()
        reservation = client.reserve(3, 1, "Bia", "bia@example.com", confirm=True)
        after = client.status()
    tour.say(f"[bold]Presentation tier[/bold] (this terminal): a Reservation record, code {reservation.code}, "
             f"total R$ {reservation.total_cents / 100:.2f}, status {reservation.status}.")
    tour.say(f"[bold]Logic tier[/bold] (server {server}): it checked the arguments, took the tickets and answered; "
             f"its call counter went from {before.calls} to {after.calls}.")
    rows = tour.query("SELECT seq, action, code, event_id, sector, quantity FROM ledger WHERE code = ? ORDER BY seq", reservation.code)
    table = Table(title="Data tier: the ledger row the server wrote, in the same transaction as the sale")
    for column in ("seq", "action", "code", "event", "sector", "quantity"):
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(value) for value in row))
    tour.console.print(table)
    return [
        Check("the ledger holds exactly one 'sell' row for this reservation", [row[1] for row in rows] == ["sell"]),
        Check("the database's reservation matches what the terminal got",
              tour.query("SELECT status, quantity FROM reservations WHERE code = ?", reservation.code) == [("confirmed", 1)]),
    ]


def chapter_discovery(tour: Tour) -> list[Check]:
    registry = TCPRegistryClient("127.0.0.1", tour.cluster.ns_port)
    before = sorted(registry.discover("TICKETS"))
    tour.say(f"The name server at {tour.ns} lists {len(before)} ticket servers: "
             + ", ".join(f"{h}:{p}" for h, p in before) + ". Terminals know only the name server.")
    with tour.console.status("Starting a fourth ticket server…"):
        newcomer = tour.cluster.start_server(free_port(0, set(tour.cluster.server_ports)))
        tour.cluster.wait_until_listed([newcomer.port])
    after = sorted(registry.discover("TICKETS"))
    tour.say(f"It registered itself; the table now has {len(after)} servers. Fresh terminals spread over all of them:")
    served: dict[str, int] = {}
    for _ in range(24):
        with tour.client() as client:
            client.list_events()
            served[client.current_server or "?"] = served.get(client.current_server or "?", 0) + 1
    table = Table(title="Which server answered each of 24 new terminals")
    table.add_column("server")
    table.add_column("terminals", justify="right")
    for address, count in sorted(served.items()):
        table.add_row(address + ("  (new)" if address == newcomer.address else ""), str(count))
    tour.console.print(table)
    return [
        Check("the name server lists the newcomer", ("127.0.0.1", newcomer.port) in after),
        Check("terminals found and used the newcomer without being told its address", served.get(newcomer.address, 0) > 0),
    ]


def chapter_failover(tour: Tour) -> list[Check]:
    watcher = TransitionLog()
    sold: list[Reservation] = []
    first, second = tour.live_servers()[:2]
    tour.say(f"A terminal that knows two servers, {first} and {second}. (Its breakers open on the first failure, "
             "so the tour shows them quickly; terminals default to two.)")
    client = TicketClient(
        servers=[first, second], timeout=8.0, attempt_timeout=1.0,
        breaker_factory=lambda name: CircuitBreaker(name, failure_threshold=1, reset_timeout=2.0, is_failure=is_server_failure),
    )
    with client:
        client.add_breaker_listener(watcher)
        event_id = tour.small_event("Failover Night", 100)
        sold.append(client.reserve(event_id, 1, "Caio", "caio@example.com", confirm=True))
        victim = client.current_server
        rescuer = second if victim == first else first
        tour.say(f"It is buying from {victim}. Killing that server now (kill -9); the next sale goes there first…")
        stop_child(tour.cluster.server(port_of(victim)), kill=True)
        sold.append(client.reserve(event_id, 1, "Caio", "caio@example.com", confirm=True))
        tour.say(f"The sale completed on {client.current_server}; breakers now: {client.breaker_states()}")
        with tour.console.status(f"Restarting {victim}…"):
            tour.cluster.start_server(port_of(victim))
        tour.say(f"Now {rescuer} dies too. After its cool-down the breaker of {victim} lets one probe through…")
        stop_child(tour.cluster.server(port_of(rescuer)), kill=True)
        sold.append(client.reserve(event_id, 1, "Caio", "caio@example.com", confirm=True))
        final_states = client.breaker_states()
    tour.cluster.start_server(port_of(rescuer))
    table = Table(title=f"Breaker transitions seen by the terminal ({len(watcher.transitions)})")
    for column in ("server", "from", "to"):
        table.add_column(column)
    for transition in watcher.transitions:
        table.add_row(*transition)
    tour.console.print(table)
    codes = [r.code for r in sold]
    in_db = tour.query(f"SELECT COUNT(*) FROM reservations WHERE code IN ({','.join('?' * len(codes))})", *codes)[0][0]
    return [
        Check("every sale the terminal saw is in the database exactly once", in_db == len(set(codes)) == 3),
        Check(f"the breaker of {victim} opened when it died", (victim, "closed", "open") in watcher.transitions),
        Check(f"after its restart the breaker of {victim} went half-open and closed on the probe",
              (victim, "open", "half-open") in watcher.transitions and final_states.get(victim) == "closed"),
    ]


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def chapter_exactly_once(tour: Tour) -> list[Check]:
    tap = WireTap(("127.0.0.1", port_of(tour.live_servers()[0])))
    event_id = tour.small_event("Exactly Once", 10)
    request_id = uuid.uuid4().hex
    try:
        with TicketClient(servers=[tap.address], timeout=5.0) as client:
            client.ping()
            tap.lose_next_reply.set()
            tour.say(f"Reserve with request id {request_id[:8]}…; the wire tap will swallow the server's reply.")
            reservation = client.reserve(event_id, 2, "Duda", "duda@example.com", confirm=True, request_id=request_id)
    finally:
        tap.close()
    rows = tour.query("SELECT code, quantity FROM reservations WHERE request_id = ?", request_id)
    available = tour.query("SELECT available FROM sectors WHERE event_id = ?", event_id)[0][0]
    tour.say(f"The reply was lost ({tap.lost_replies} lost); the terminal reconnected and sent the same request id. "
             f"The server recognised it and answered with the original reservation {reservation.code}.")
    return [
        Check("a reply was really lost on the way", tap.lost_replies == 1),
        Check("the database holds one reservation for that request id, the one the terminal got",
              rows == [(reservation.code, 2)]),
        Check("the tickets were taken once (10 - 2 = 8 left)", available == 8),
    ]


def chapter_soft_state(tour: Tour) -> list[Check]:
    registry = TCPRegistryClient("127.0.0.1", tour.cluster.ns_port, timeout=1.0)
    tour.say("The name server keeps nothing on disk: each server re-registers every 2 s. Killing the name server…")
    with tour.client() as client:
        client.list_events()
        stop_child(tour.cluster.name_server, kill=True)
        client.discovery.refresh()
        tour.say(f"A terminal asks again: {client.discovery.last_error}; it keeps its last list.")
        try:
            still_selling = bool(client.list_events())
        except Unavailable:
            still_selling = False
    tour.say("…restarting it with an empty table, and watching the table refill:")
    started = time.monotonic()
    tour.cluster.start_name_server()
    first = len(registry.discover("TICKETS"))
    live = [s.port for s in tour.cluster.servers if s.alive()]
    tour.cluster.wait_until_listed(live)
    refilled = time.monotonic() - started
    after = len(registry.discover("TICKETS"))
    tour.say(f"Right after the restart it listed {first}; {refilled:.1f} s later it listed all {after} live servers again.")
    return [
        Check("with the name server dead, a terminal with a cached list kept working", still_selling),
        Check("the table refilled from heartbeats within a few seconds", after == len(live) and refilled < 6.0),
    ]


def chapter_concurrency(tour: Tour) -> list[Check]:
    capacity, terminals = 30, 40
    event_id = tour.small_event("Concurrency Night", capacity)
    tour.say(f"{terminals} terminals, each its own client and connection, buy one ticket at a time from an event of "
             f"{capacity}, all at once, through {len([s for s in tour.cluster.servers if s.alive()])} servers.")
    codes: list[str] = []
    refused = 0
    lock = threading.Lock()
    start = threading.Event()

    def terminal() -> None:
        nonlocal refused
        with tour.client() as client:
            start.wait()
            while True:
                try:
                    code = client.reserve(event_id, 1, "Swarm", "swarm@example.com", confirm=True).code
                except SoldOut:
                    with lock:
                        refused += 1
                    return
                with lock:
                    codes.append(code)

    threads = [threading.Thread(target=terminal) for _ in range(terminals)]
    for thread in threads:
        thread.start()
    start.set()
    for thread in threads:
        thread.join(timeout=60)
    available = tour.query("SELECT available FROM sectors WHERE event_id = ?", event_id)[0][0]
    table = Table(title="Swarm result")
    table.add_column("sold", justify="right")
    table.add_column("refused as sold out", justify="right")
    table.add_column("distinct codes", justify="right")
    table.add_column("left", justify="right")
    table.add_row(str(len(codes)), str(refused), str(len(set(codes))), str(available))
    tour.console.print(table)
    tour.say("Inside each server a lock admits one group commit at a time; across servers the database's "
             "conditional update (available >= quantity) refuses the sale that would go below zero.")
    return [
        Check(f"exactly {capacity} tickets sold", len(codes) == capacity and available == 0),
        Check("no code twice", len(set(codes)) == len(codes)),
        Check(f"every terminal ended with an answer ({terminals} sold-out refusals)", refused == terminals),
    ]


def chapter_live(tour: Tour) -> list[Check]:
    server_a, server_b = tour.live_servers()[:2]
    with tour.client() as admin:
        event_id = admin.create_event(ADMIN_TOKEN, "Sessão ao Vivo", "Sala da Tour", "2027-06-01T20:00:00-03:00",
                                      [("Plateia", 4000, 1, 6)]).id
    seen: list[tuple[float, AvailabilityUpdate]] = []
    changed = threading.Event()
    offers: list[WaitlistEntry] = []
    offered = threading.Event()

    def on_update(update: AvailabilityUpdate) -> None:
        seen.append((time.perf_counter(), update))
        changed.set()

    with TicketClient(servers=[server_a]) as watcher, TicketClient(servers=[server_b]) as seller:
        subscription = watcher.subscribe(event_id, on_update)
        changed.wait(2.0)
        tour.say(f"A watching terminal subscribed on [bold]{subscription.server}[/bold]; the server will call it back. "
                 f"A selling terminal on [bold]{server_b}[/bold] sells seats A3 and A4.")
        changed.clear()
        sale = seller.reserve(event_id, 2, "Eva", "eva@example.com", confirm=True, seats=("A3", "A4"))
        sold_at = time.perf_counter()
        changed.wait(2.0)
        arrival, update = seen[-1]
        tour.say(f"{server_a} follows the ledger that {server_b} wrote, and pushed the change "
                 f"{(arrival - sold_at) * 1000:.0f} ms after the sale answered: row A is now [bold]{update.states}[/bold] "
                 f"(. free, s sold), {update.available} seats left.")
        rest = seller.reserve(event_id, 4, "Fabi", "fabi@example.com", seats=("A1", "A2", "A5", "A6"))
        entry = watcher.join_waitlist(event_id, 2, "Gil", "gil@example.com", on_offer=lambda e: (offers.append(e), offered.set()))
        tour.say(f"The room is full. Gil joins the waitlist through {server_a} (entry {entry.id}, position {entry.position}); "
                 f"then Fabi cancels through {server_b}.")
        seller.cancel(rest.code, "fabi@example.com")
        got_offer = offered.wait(3.0)
        subscription.close()
    if got_offer:
        hold = offers[0]
        tour.say(f"In the cancel's own transaction {server_b} held two seats for Gil (reservation {hold.code}); "
                 f"{server_a} saw the offer in the ledger and called Gil's terminal back.")
    return [
        Check("the sale made on one server reached a subscriber of another within a second",
              update.states[2:4] == "ss" and arrival - sold_at < 1.0 and sale.seats == ("A3", "A4")),
        Check("the waitlist offer, made on the other server, reached its owner through a callback",
              got_offer and offers[0].status == "offered" and offers[0].code is not None),
    ]


CHAPTERS = (
    Chapter(1, "RPC as middleware, and access transparency",
            "A remote procedure call looks like a local one; the middleware marshals the arguments into a "
            "message, sends it, and waits for the reply.", chapter_rpc,
            code="client.connection.invoke, server.TicketService, records.to_wire"),
    Chapter(2, "Tiers", "Presentation (the terminal), logic (the ticket server) and data (SQLite) each do one "
            "job; the same sale is visible in all three.", chapter_tiers,
            code="cli.py and terminal/, server.py and service/, database.py and storage/"),
    Chapter(3, "Concurrency and mutual exclusion", "Many terminals, one inventory: mutual exclusion inside a "
            "process and a conditional update across processes keep every ticket sold at most once.", chapter_concurrency,
            code="storage.sales.take, storage.sqlite.SqliteEngine.submit, database.Store._in_lane"),
    Chapter(4, "Service discovery and location transparency", "Terminals ask a name server where the servers "
            "are; servers come and go without anyone typing an address.", chapter_discovery,
            code="service.registrar.Registrar, name_server.Registry, client.discovery.NameServerClient"),
    Chapter(5, "Failure transparency", "A circuit breaker per server, retries and failover hide a dead server; "
            "the breaker opens, the terminal moves, and a probe closes the breaker once the server is back.", chapter_failover,
            code="client.failover.Failover.run, circuit_breaker.CircuitBreaker"),
    Chapter(6, "Exactly-once over an unreliable network", "A lost reply makes the terminal retry; the request id "
            "makes the retry return the original sale instead of a second one.", chapter_exactly_once,
            code="client.failover.request_id, storage.sales.insert_reservation"),
    Chapter(7, "Soft state", "The name server's table is rebuilt from heartbeats, so losing it loses nothing.",
            chapter_soft_state,
            code="name_server.Registry.prune, service.registrar.Registrar, client.discovery.NameServerClient.refresh"),
    Chapter(8, "Live updates and callbacks", "Servers call terminals back: every server follows the shared ledger "
            "and pushes each change to the terminals subscribed to it, whichever server made the change.", chapter_live,
            code="service.live.LiveFeed, client.callbacks.CallbackLine, storage.sales.offer_freed"),
)


def run_tour(console: Console, auto: bool, data: Path | None = None) -> int:
    """Run every chapter; 0 when every check passed, 1 otherwise."""
    with tempfile.TemporaryDirectory(prefix="bilheteria-tour-") as scratch:
        cluster = LocalCluster(Path(data or scratch), servers=SERVERS, server_args=("--admin-token", ADMIN_TOKEN))
        tour = Tour(cluster, console, auto)
        try:
            with console.status("Starting a name server and three ticket servers…") as spinner:
                cluster.start(progress=spinner.update)
            for chapter in CHAPTERS:
                console.rule(f"[bold]{chapter.number}. {chapter.title}")
                console.print(Panel(chapter.idea, border_style="cyan"), soft_wrap=False)
                console.print(Text(f"In the code: {chapter.code}", style="dim"))
                try:
                    checks = chapter.run(tour)
                except (ReservationError, Unavailable, LaunchError, OSError) as exc:
                    checks = [Check(f"the chapter ran to the end ({exc})", False)]
                for check in checks:
                    mark = Text("  ✓ ", style="bold green") if check.ok else Text("  ✗ ", style="bold red")
                    console.print(mark + Text(check.claim))
                tour.results.append((chapter, checks))
                tour.pause()
        finally:
            with console.status("Stopping the tour's processes…"):
                cluster.stop()
    failed = [(chapter.number, check.claim) for chapter, checks in tour.results for check in checks if not check.ok]
    total = sum(len(checks) for _, checks in tour.results)
    if failed:
        console.print(Text(f"{len(failed)} of {total} checks failed.", style="bold red"))
        return 1
    console.print(Text(f"All {total} checks of {len(tour.results)} chapters passed.", style="bold green"))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`argv` as cli.py was given it (`tour [--auto]`); 130 when interrupted (Ctrl-C or SIGTERM)."""
    _, args, _ = cli.tool_arguments("tour", argv)
    stop_on_signals()
    try:
        return run_tour(PromptConsole(highlight=False, soft_wrap=True), auto=args.auto)
    except KeyboardInterrupt:
        Console(stderr=True, highlight=False, soft_wrap=True).print("\nInterrupted.")
        return cli.EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
