"""The box office at the counter: an app for clerks (in a terminal or a browser), subcommands for scripts, a swarm
of terminals that proves nothing is sold twice, and a one-command demo that starts the whole system.

This file is the terminal's door: what the user typed (the parser), the commands for scripts and their exit
codes, and `main`, which dispatches. Its parts are in terminal/: how what is typed is read (inputs.py), the
settings every command reads (config.py), how answers look (views.py and the pieces in widgets.py), the clerk's
counter app (app/, loaded only when it is shown) and the live views (dashboard.py, watch.py). `demo`, `swarm` and
`tour` are tools: they run as programs of their own (`python -m tools.demo`, ...), so the product imports no tool.

The terminal is presentation only. Every rule (prices, limits, what a valid email is, whether a hold can still
be confirmed) lives on the server: the terminal parses what was typed, calls `TicketClient` and shows the
answer, so terminals of different versions can never disagree about a sale. A refusal is shown as what
the box office said; an outage as which servers were tried and how their circuit breakers stand. A user
never sees a traceback.

Exit codes: 0 ok, 1 refused by the box office, 2 usage, 3 no server answered (or the demo could not
start), 4 the swarm found an inconsistency, 130 interrupted.
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, fields
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.prompt import Confirm
from rich.text import Text

from client_core import TicketClient
from errors import ReservationError, Unavailable
from net.tls import TLSConfigError, client_context, server_context
from records import Event, LedgerEntry
from seating import MAX_ROWS, MAX_SEATS_PER_ROW, SeatError, parse_selection
from terminal import views
from terminal.app.i18n import LANGUAGES, choose_language
from terminal.config import CAFILE_ENV, DEFAULT_NAME_SERVER, DEFAULT_TIMEOUT_SECONDS, ConfigError, TerminalConfig, terminal_config
from terminal.dashboard import Dashboard
from terminal.inputs import (
    TOKEN_ENV,
    argument,
    host_port,
    host_ports,
    parse_half_limit,
    parse_sector,
    parse_sector_number,
    positive_int,
    positive_seconds,
)
from terminal.watch import EventWatch
from terminal.widgets import plural

__all__ = ["main", "parse_half_limit", "parse_sector", "parse_sector_number"]

HERE = Path(__file__).resolve().parent
EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_INCONSISTENT = 4
EXIT_INTERRUPTED = 130
TOOLS = {"demo": "tools.demo", "swarm": "tools.swarm", "tour": "tools.tour"}
"""Commands run by a tool as a program of its own: the product imports no tool."""


# -- commands for scripts -----------------------------------------------------------------------------------

Outcome = tuple[Any, RenderableType]
"""What a command answered: the JSON document, and the same answer for a human."""
Command = Callable[[TicketClient, TerminalConfig, argparse.Namespace], Outcome]


def command_events(client: TicketClient, config: TerminalConfig, args: argparse.Namespace) -> Outcome:
    events = client.list_events()
    return [asdict(event) for event in events], views.events_table(events)


def command_reserve(client: TicketClient, config: TerminalConfig, args: argparse.Namespace) -> Outcome:
    seats = chosen_seats(client, args) if args.seats else None
    quantity = args.quantity if args.quantity is not None else len(seats or ())
    reservation = client.reserve(args.event_id, quantity, args.name, args.email, sector=args.sector,
                                 category=args.category, confirm=args.confirm, seats=seats)
    return asdict(reservation), views.reservation_view(reservation)


def chosen_seats(client: TicketClient, args: argparse.Namespace) -> tuple[str, ...]:
    """`--seats "A1 A2"` read against the sector's real size when it is a seated sector this terminal can see, so a
    seat outside the room is caught before anything is reserved; otherwise only the labels' form is checked and
    the server says what is wrong with them. Raises SeatError."""
    event = client.get_event(args.event_id)
    sector = event.sector(args.sector) if args.sector else (event.sectors[0] if len(event.sectors) == 1 else None)
    if sector is not None and sector.seated:
        return parse_selection(args.seats, sector.rows, sector.seats_per_row)
    return parse_selection(args.seats, MAX_ROWS, MAX_SEATS_PER_ROW)


def command_seats(client: TicketClient, config: TerminalConfig, args: argparse.Namespace) -> Outcome:
    seat_map = client.get_seat_map(args.event_id, args.sector)
    return views.seat_map_document(seat_map), views.seat_map_view(seat_map)


def command_status(client: TicketClient, config: TerminalConfig, args: argparse.Namespace) -> Outcome:
    status = client.status()
    document = {"current_server": client.current_server, "breakers": client.breaker_states(), "status": asdict(status)}
    return document, views.status_view(status, client)


def command_admin_cancel(client: TicketClient, config: TerminalConfig, args: argparse.Namespace) -> Outcome:
    event, cancelled = client.cancel_event(config.token, args.event_id)
    view = Group(views.events_table([event], title="Event cancelled"), Text(f"{plural(cancelled, 'reservation')} cancelled."))
    return {"event": asdict(event), "cancelled_reservations": cancelled}, view


def command_admin_delete(client: TicketClient, config: TerminalConfig, args: argparse.Namespace) -> Outcome:
    client.delete_event(config.token, args.event_id)
    return {"deleted": args.event_id}, Text(f"Event {args.event_id} deleted.")


def command_admin_reservations(client: TicketClient, config: TerminalConfig, args: argparse.Namespace) -> Outcome:
    found = client.list_reservations(config.token, event_id=args.event, email=args.email, status=args.status)
    return [asdict(reservation) for reservation in found], views.reservations_table(found)


def command_admin_report(client: TicketClient, config: TerminalConfig, args: argparse.Namespace) -> Outcome:
    reports = client.report(config.token)
    return views.report_document(reports), views.report_table(reports)


def command_admin_ledger(client: TicketClient, config: TerminalConfig, args: argparse.Namespace) -> Outcome:
    entries = client.ledger(config.token, since=args.since, limit=args.limit)
    title = f"Ledger after entry {args.since}" if args.since else "Ledger"
    return [asdict(entry) for entry in entries], views.ledger_table(entries, title=title)


def one_record(view: Callable[[Any], RenderableType], call: Callable[[TicketClient, TerminalConfig, argparse.Namespace], Any]) -> Command:
    """A command whose answer is one record: its fields are the JSON document, `view(record)` the human answer."""

    def command(client: TicketClient, config: TerminalConfig, args: argparse.Namespace) -> Outcome:
        record = call(client, config, args)
        return asdict(record), view(record)

    return command


def event_view(title: str) -> Callable[[Event], RenderableType]:
    """An event as an admin command left it."""
    return lambda event: views.events_table([event], title=title)


COMMANDS: dict[str, Command] = {
    "events": command_events,
    "reserve": command_reserve,
    "confirm": one_record(views.ticket_view, lambda client, _, args: client.confirm(args.code, args.email, payment_ref=args.payment_ref)),
    "cancel": one_record(views.reservation_view, lambda client, _, args: client.cancel(args.code, args.email)),
    "show": one_record(views.reservation_view, lambda client, _, args: client.get_reservation(args.code, args.email)),
    "status": command_status,
    "seats": command_seats,
    "waitlist join": one_record(views.waitlist_entry_view, lambda client, _, args: client.join_waitlist(
        args.event_id, args.quantity, args.name, args.email, sector=args.sector)),
    "waitlist show": one_record(views.waitlist_entry_view, lambda client, _, args: client.get_waitlist_entry(args.entry_id, args.email)),
    "waitlist leave": one_record(views.waitlist_entry_view, lambda client, _, args: client.leave_waitlist(args.entry_id, args.email)),
    "create-event": one_record(event_view("Event created"), lambda client, config, args: client.create_event(
        config.token, args.name, args.venue, args.starts_at, args.sectors)),
    "admin update": one_record(event_view("Event updated"), lambda client, config, args: client.update_event(
        config.token, args.event_id, name=args.name, venue=args.venue, starts_at=args.starts_at, capacities=args.capacities,
        half_limits=args.half_limits)),
    "admin add-sector": one_record(event_view("Sector added"), lambda client, config, args: client.add_sector(
        config.token, args.event_id, args.name, args.price_cents, args.capacity, args.half_limit)),
    "admin pause": one_record(event_view("Sales paused"), lambda client, config, args: client.pause_event(config.token, args.event_id)),
    "admin resume": one_record(event_view("Sales resumed"), lambda client, config, args: client.resume_event(config.token, args.event_id)),
    "admin cancel": command_admin_cancel,
    "admin delete": command_admin_delete,
    "admin reservations": command_admin_reservations,
    "admin report": command_admin_report,
    "admin ledger": command_admin_ledger,
}

CSV_EXPORTS: dict[str, tuple[Sequence[str], Callable[[Any], list[dict[str, Any]]]]] = {
    "admin report": (views.REPORT_CSV_COLUMNS, views.report_csv),
    "admin ledger": (tuple(field.name for field in fields(LedgerEntry)), list),
}
"""Commands that take --csv FILE: their columns, and their JSON document as spreadsheet rows."""


def command_name(args: argparse.Namespace) -> str:
    """`events`, or a command and its action (`admin report`, `waitlist join`)."""
    action = getattr(args, f"{args.command}_command", None)
    return f"{args.command} {action}" if action else args.command


def run_command(client: TicketClient, config: TerminalConfig, args: argparse.Namespace, out: Console, err: Console) -> int:
    name = command_name(args)
    try:
        document, view = COMMANDS[name](client, config, args)
    except (ReservationError, Unavailable) as exc:
        return report_failure(exc, client, config.json, err)
    except SeatError as exc:
        return report_bad_seats(exc, config.json, err)
    if getattr(args, "csv", None):
        try:
            columns, rows = CSV_EXPORTS[name]
            count = write_csv(Path(args.csv), columns, rows(document))
        except OSError as exc:
            err.print(Text.assemble(("Cannot write ", "bold red"), f"{args.csv}: {exc.strerror or exc}"))
            return EXIT_USAGE
        err.print(f"CSV written to {Path(args.csv).resolve()} ({plural(count, 'row')} and a header).")
    if config.json:
        views.print_json(document)
    else:
        out.print(view)
    return EXIT_OK


def write_csv(path: Path, columns: Sequence[str], rows: list[dict[str, Any]]) -> int:
    """UTF-8 without a byte-order mark, comma separated, always a header row (even with no rows under it)."""
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def report_failure(exc: ReservationError | Unavailable, client: TicketClient, as_json: bool, err: Console) -> int:
    """Print a refusal or an outage the way the caller asked, and return its exit code."""
    if as_json:
        views.print_json(views.error_document(exc, client))
    elif isinstance(exc, Unavailable):
        views.show_unavailable(err, exc, client)
    else:
        views.show_refusal(err, exc)
    return EXIT_UNAVAILABLE if isinstance(exc, Unavailable) else EXIT_REFUSED


def report_bad_seats(exc: SeatError, as_json: bool, err: Console) -> int:
    """A seat label that names no seat: the clerk's typing, caught before anything was reserved, so a usage error."""
    if as_json:
        views.print_json({"error": "SeatError", "message": str(exc)})
    else:
        err.print(Text.assemble(("Bad seats: ", "bold red"), str(exc)))
    return EXIT_USAGE


def run_cancel_after_asking(client: TicketClient, config: TerminalConfig, args: argparse.Namespace, out: Console, err: Console) -> int:
    """`admin cancel` without --yes: name the event and ask (on stderr, so --json output stays one document).
    No answer (end of input) is a no; a no exits 1 because the cancellation asked for did not happen."""
    try:
        event = client.get_event(args.event_id)
    except (ReservationError, Unavailable) as exc:
        return report_failure(exc, client, config.json, err)
    question = Text(f"Cancel event {event.id}, {event.name}? Every held or confirmed reservation in it will be cancelled")
    try:
        confirmed = Confirm.ask(question, default=False, console=err)
    except EOFError:
        confirmed = False
    if confirmed:
        return run_command(client, config, args, out, err)
    message = f"Event {event.id} was not cancelled (not confirmed; --yes skips the question)."
    if config.json:
        views.print_json({"error": "NotConfirmed", "message": message})
    else:
        err.print(Text(message, style="yellow"))
    return EXIT_REFUSED


def show_dashboard(client: TicketClient, config: TerminalConfig, args: argparse.Namespace, out: Console, err: Console) -> int:
    """`--once`: one frame, and the usual exit codes. Live: outages are shown in the frame and retried; the exit
    code says whether the last reading worked. A refusal (wrong token) ends it with exit 1."""
    dashboard = Dashboard(client, config.token or "")
    try:
        if args.once:
            dashboard.read()
            out.print(dashboard.frame())
            return EXIT_OK
        dashboard.run(out, seconds=args.seconds)
    except (ReservationError, Unavailable) as exc:
        return report_failure(exc, client, False, err)
    return EXIT_OK if dashboard.healthy else EXIT_UNAVAILABLE


def show_watch(client: TicketClient, args: argparse.Namespace, out: Console, err: Console) -> int:
    """Live until Ctrl-C (or --seconds). A refusal (no such event or seated sector) or no server at the start
    ends it with the usual exit codes; a server dying later is the subscription's business, shown in the frame."""
    try:
        EventWatch(client, args.event_id, args.sector).run(out, seconds=args.seconds)
    except (ReservationError, Unavailable) as exc:
        return report_failure(exc, client, False, err)
    return EXIT_OK


# -- the tools ----------------------------------------------------------------------------------------------


def run_tool(command: str, argv: Sequence[str]) -> int:
    """`demo`, `swarm` and `tour` are tools (tools/), run as programs of their own with the arguments given here, so
    the product never imports them. The tool's exit code is ours; a SIGINT or SIGTERM sent to us is passed on, so
    the tool stops its own children cleanly before we exit."""
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *([path] if path else [])])}
    tool = subprocess.Popen([sys.executable, "-m", TOOLS[command], *argv], env=env)

    def forward(signum: int, frame: FrameType | None) -> None:
        if tool.poll() is None:
            tool.send_signal(signum)

    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = tool.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return code if code >= 0 else 128 - code


def check_demo_tls(parser: argparse.ArgumentParser, args: argparse.Namespace, config: TerminalConfig) -> None:
    """All three PEM files, and usable, before any process starts (a child would only say so in its log)."""
    if not (args.certfile and args.keyfile and config.cafile):
        parser.error("demo with TLS needs all three of --certfile, --keyfile and --cafile")
    try:
        server_context(args.certfile, args.keyfile)
        client_context(config.cafile)
    except TLSConfigError as exc:
        parser.error(str(exc))


# -- arguments and main -------------------------------------------------------------------------------------


def add_connection_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """The options every box-office command shares. Subcommands repeat them with suppressed defaults, so
    `cli.py events --json` works as well as `cli.py --json events` without one erasing the other."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument("--name-server", action="extend", dest="name_servers", type=argument(host_ports), metavar="HOST:PORT",
                        default=default(None),
                        help="a name server; repeat or separate with commas for several, the answers are merged "
                             f"(env BILHETERIA_NAME_SERVERS, comma separated; default {DEFAULT_NAME_SERVER})")
    parser.add_argument("--server", action="append", dest="servers", type=argument(host_port), metavar="HOST:PORT", default=default(None),
                        help="a ticket server to use directly, skipping discovery; repeat for several (env BILHETERIA_SERVERS)")
    parser.add_argument("--cafile", default=default(None), metavar="PEM",
                        help=f"talk TLS to every name server and ticket server, trusting only what this CA signed (env {CAFILE_ENV})")
    parser.add_argument("--timeout", type=argument(positive_seconds), default=default(DEFAULT_TIMEOUT_SECONDS), metavar="SECONDS",
                        help="give up on a call after this long, retries and failover included (default 5)")
    parser.add_argument("--json", action="store_true", default=default(False), help="print one JSON document")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cli.py",
        description="bilheteria terminal: without a command, the interactive counter app.",
        epilog="Exit codes: 0 ok, 1 refused, 2 usage, 3 unavailable, 4 swarm inconsistency, 130 interrupted.",
    )
    add_connection_options(parser, suppress=False)
    parser.add_argument("--lang", choices=LANGUAGES, help="the counter app's language (default: from LC_ALL, LC_MESSAGES or LANG; else en)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        add_connection_options(sub, suppress=True)
        return sub

    command("events", "list the events with availability and prices")
    reserve = command("reserve", "hold tickets (or buy them at once with --confirm)")
    reserve.add_argument("event_id", type=int, metavar="EVENT_ID")
    reserve.add_argument("quantity", type=int, nargs="?", metavar="QUANTITY", help="how many tickets (with --seats: as many as named)")
    reserve.add_argument("--name", required=True, help="the customer's name")
    reserve.add_argument("--email", required=True, help="the customer's email; needed to confirm, cancel or look up")
    reserve.add_argument("--sector", help="needed when the event has several sectors")
    reserve.add_argument("--category", choices=("full", "half"), default="full", help="full or half price (default full)")
    reserve.add_argument("--confirm", action="store_true", help="buy at once instead of holding")
    add_seat_commands(command, reserve)
    for name, help_text in (("cancel", "cancel a reservation"), ("show", "look up a reservation")):
        sub = command(name, help_text)
        sub.add_argument("code", metavar="CODE")
        sub.add_argument("--email", required=True, help="the email the reservation was made with")
    command("status", "the answering server's status and this terminal's circuit breakers")
    create = command("create-event", "admin: put a new event on sale")
    create.add_argument("--token", help=f"the admin token (env {TOKEN_ENV})")
    create.add_argument("--name", required=True)
    create.add_argument("--venue", required=True)
    create.add_argument("--starts-at", required=True, metavar="ISO", help="e.g. 2027-03-13T20:00:00-03:00")
    create.add_argument("--sector", action="append", dest="sectors", type=argument(parse_sector), required=True,
                        metavar="NAME:PRICE_CENTS:CAPACITY", help="repeat for each sector")
    add_admin_commands(command("admin", "administration: dashboard, report, ledger, and changes to events (needs the admin token)"))
    swarm = command("swarm", "many concurrent terminals buying until sold out, then a consistency check")
    swarm.add_argument("--clients", type=argument(positive_int), default=50, help="concurrent terminals (default 50)")
    swarm.add_argument("--event", type=int, required=True, help="the event id")
    swarm.add_argument("--quantity", type=int, default=1, help="tickets per purchase (default 1)")
    swarm.add_argument("--sector", help="needed when the event has several sectors")
    swarm.add_argument("--processes", type=argument(positive_int), default=0,
                       help="spread the terminals over this many worker processes (default: threads in this one)")
    swarm.add_argument("--max-per-client", type=argument(positive_int), default=None,
                       help="stop a terminal after this many purchases (default: until sold out)")
    mode = swarm.add_mutually_exclusive_group()
    mode.add_argument("--confirm", dest="confirm", action="store_true", default=True, help="buy (default)")
    mode.add_argument("--hold", dest="confirm", action="store_false", help="only hold the tickets")
    demo = commands.add_parser("demo", help="start name servers and ticket servers here, then the counter app",
                               description="Start name servers and ticket servers as child processes, then the counter app.")
    demo.add_argument("--data", default="data", help="directory for tickets.db, its admin token and the logs (default ./data)")
    demo.add_argument("--replicas", "--servers", dest="server_count", type=argument(positive_int), default=2, metavar="N",
                      help="ticket servers to start (default 2)")
    demo.add_argument("--name-servers", dest="name_server_count", type=argument(positive_int), default=1, metavar="N",
                      help="name servers to start; every ticket server registers with all of them (default 1)")
    demo.add_argument("--port-base", type=int, default=18861, help="first ticket server port (default 18861)")
    demo.add_argument("--ns-port", type=int, default=18811, help="first name server port (default 18811)")
    demo.add_argument("--certfile", help="PEM certificate for every server: TLS on every hop (with --keyfile and --cafile)")
    demo.add_argument("--keyfile", help="PEM private key of --certfile")
    demo.add_argument("--cafile", default=argparse.SUPPRESS, help="PEM CA that signed --certfile, for the terminals and servers")
    demo.add_argument("--insecure", action="store_true",
                      help="the open setup: plain text, and name servers that accept anyone's registrations "
                           "(default: a throwaway CA, TLS on every hop, and a registration key, in --data)")
    demo.add_argument("--no-interactive", action="store_true", help="no counter app: run until Ctrl-C or SIGTERM")
    demo.add_argument("--postgres", action="store_true",
                      help="share a throwaway PostgreSQL (from this machine's binaries) instead of data/tickets.db")
    web = command("web", "serve the counter app to browsers (textual-serve), one session per tab")
    web.add_argument("--port", type=int, default=8000, help="the port to listen on (default 8000)")
    web.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1; 0.0.0.0 for the network)")
    tour = commands.add_parser("tour", help="a guided tour of the distributed-systems ideas, shown live",
                               description="Start a small cluster of its own and walk through each idea, checking every claim.")
    tour.add_argument("--auto", action="store_true", help="run straight through without pausing (for recordings and tests)")
    return parser


def add_seat_commands(command: Callable[[str, str], argparse.ArgumentParser], reserve: argparse.ArgumentParser) -> None:
    """Seats, the payment step and the waitlist: `reserve --seats`, `confirm`, `seats`, `watch` and `waitlist ACTION`."""
    reserve.add_argument("--seats", metavar="SEATS", help='seats by label in a seated sector, e.g. "A1 A2" or "C5-C8"')
    confirm = command("confirm", "confirm a held reservation: the payment step")
    confirm.add_argument("code", metavar="CODE")
    confirm.add_argument("email_given", nargs="?", metavar="EMAIL", help="the email the reservation was made with (or --email)")
    confirm.add_argument("--email", help=argparse.SUPPRESS)
    confirm.add_argument("--payment-ref", metavar="REF", help="the payment's reference, e.g. a card slip number (fictitious here)")
    seats = command("seats", "the seat map of a seated sector: free, held and sold seats")
    seats.add_argument("event_id", type=int, metavar="EVENT")
    seats.add_argument("sector", metavar="SECTOR")
    watch = command("watch", "a live view of an event's sectors and seat map, updated as other terminals sell")
    watch.add_argument("event_id", type=int, metavar="EVENT")
    watch.add_argument("--sector", help="the seated sector whose map to show (default: the event's first seated sector)")
    watch.add_argument("--seconds", type=argument(positive_seconds), metavar="N", help="stop after N seconds (default: Ctrl-C)")
    waitlist = command("waitlist", "the waitlist of a sold-out sector: join, show or leave")
    actions = waitlist.add_subparsers(dest="waitlist_command", metavar="ACTION", required=True)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=help_text, description=help_text)
        add_connection_options(sub, suppress=True)
        return sub

    join = action("join", "queue for tickets in a sold-out sector; an offer is a hold you confirm with its code")
    join.add_argument("event_id", type=int, metavar="EVENT")
    join.add_argument("quantity", type=int, metavar="QTY")
    join.add_argument("name", metavar="NAME")
    join.add_argument("email", metavar="EMAIL")
    join.add_argument("--sector", help="needed when the event has several sectors")
    for name, help_text in (("show", "where a waitlist entry stands (and its offer, if any)"), ("leave", "take an entry off the waitlist")):
        sub = action(name, help_text)
        sub.add_argument("entry_id", type=int, metavar="ID")
        sub.add_argument("email", metavar="EMAIL")


def check_seat_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """What argparse cannot say alone: reserve needs a quantity or seats, confirm needs the email once, watch is for people."""
    if args.command == "watch" and args.json:
        parser.error("watch is for people; for a document use: seats EVENT SECTOR --json")
    if args.command == "reserve" and args.quantity is None and not args.seats:
        parser.error("reserve needs QUANTITY, or --seats")
    if args.command == "confirm":
        if args.email and args.email_given and args.email != args.email_given:
            parser.error("confirm: two different emails given")
        args.email = args.email or args.email_given
        if not args.email:
            parser.error("confirm needs the email: confirm CODE EMAIL")


def add_admin_commands(admin: argparse.ArgumentParser) -> None:
    """`cli.py admin ACTION`: every action takes --token (or the environment's) and the usual connection options."""
    token_help = f"the admin token (env {TOKEN_ENV})"
    admin.add_argument("--token", default=argparse.SUPPRESS, help=token_help)
    actions = admin.add_subparsers(dest="admin_command", metavar="ACTION", required=True)

    def action(name: str, help_text: str, event: bool = False) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=help_text, description=help_text)
        add_connection_options(sub, suppress=True)
        sub.add_argument("--token", default=argparse.SUPPRESS, help=token_help)
        if event:
            sub.add_argument("event_id", type=int, metavar="EVENT", help="the event id")
        return sub

    dashboard = action("dashboard", "a live view of every sector: capacity bar, revenue, sales in the last minute")
    duration = dashboard.add_mutually_exclusive_group()
    duration.add_argument("--once", action="store_true", help="draw one frame and exit")
    duration.add_argument("--seconds", type=argument(positive_seconds), metavar="N", help="stop after N seconds (default: Ctrl-C)")
    report = action("report", "sales per event and sector, with totals")
    report.add_argument("--csv", metavar="FILE", help="also write the report as CSV (money in reais and in cents)")
    ledger = action("ledger", "the ledger of every change, oldest first")
    ledger.add_argument("--since", type=int, default=0, metavar="SEQ", help="only entries after this sequence number")
    ledger.add_argument("--limit", type=int, default=1000, metavar="N", help="at most this many entries (default 1000)")
    ledger.add_argument("--csv", metavar="FILE", help="also write the entries as CSV")
    action("pause", "stop new reservations for an event (holds can still be confirmed)", event=True)
    action("resume", "put a paused event back on sale", event=True)
    cancel = action("cancel", "cancel an event and every active reservation in it", event=True)
    cancel.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    action("delete", "delete an event that never took a reservation", event=True)
    update = action("update", "rename, move or reschedule an event; change sector capacities and half-price limits", event=True)
    update.add_argument("--name")
    update.add_argument("--venue")
    update.add_argument("--starts-at", metavar="ISO", help="e.g. 2027-03-13T20:00:00-03:00")
    update.add_argument("--capacity", action="append", dest="capacities", type=argument(parse_sector_number), default=[],
                        metavar="SECTOR=N", help="a sector's new capacity; repeat for several")
    update.add_argument("--half-limit", action="append", dest="half_limits", type=argument(parse_half_limit), default=[],
                        metavar="SECTOR=N|none", help="a sector's half-price limit, or none to lift it; repeat for several")
    add_sector = action("add-sector", "add a sector to an event", event=True)
    add_sector.add_argument("--name", required=True)
    add_sector.add_argument("--price-cents", type=int, required=True, metavar="CENTS")
    add_sector.add_argument("--capacity", type=int, required=True)
    add_sector.add_argument("--half-limit", type=int, metavar="N", help="at most N half-price tickets (default: no limit)")
    reservations = action("reservations", "search reservations, newest first")
    reservations.add_argument("--event", type=int, metavar="ID")
    reservations.add_argument("--email", metavar="E")
    reservations.add_argument("--status", metavar="S", help="held, confirmed, cancelled or expired")


def configure(parser: argparse.ArgumentParser, args: argparse.Namespace) -> TerminalConfig:
    """Check what argparse cannot check alone and build the one TerminalConfig every command reads; a bad value
    (a flag or the environment) exits 2 with one line saying which. The tools that cli.py runs call this too."""
    if args.command is None and args.json:
        parser.error("--json needs a command; the counter app is for people")
    if args.command == "web" and args.json:
        parser.error("web serves the counter app to people; --json does not apply")
    if args.command in ("demo", "tour") and (args.json or args.servers or args.name_servers):
        parser.error(f"{args.command} starts its own {'name server' if args.command == 'demo' else 'cluster'}; "
                     f"--name-server, --server and --json do not apply")
    try:
        config = terminal_config(name_servers=args.name_servers, servers=args.servers, cafile=args.cafile, timeout=args.timeout,
                                 json=args.json, token=getattr(args, "token", None))
    except ConfigError as exc:
        parser.error(str(exc))
    if args.command == "demo" and args.insecure and (args.certfile or args.keyfile or args.cafile):
        parser.error("demo --insecure runs in plain text; leave out --certfile, --keyfile and --cafile")
    if args.command == "demo" and (args.certfile or args.keyfile):
        check_demo_tls(parser, args, config)
    if args.command in ("create-event", "admin") and not config.token:
        parser.error(f"{command_name(args)} needs --token (or {TOKEN_ENV})")
    if command_name(args) == "admin update" and not (args.name or args.venue or args.starts_at or args.capacities or args.half_limits):
        parser.error("admin update needs something to change: --name, --venue, --starts-at, --capacity or --half-limit")
    if command_name(args) == "admin dashboard" and args.json:
        parser.error("the dashboard is for people; for a document use: admin report --json")
    check_seat_arguments(parser, args)
    return config


def tool_arguments(command: str, argv: Sequence[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace, TerminalConfig]:
    """For a tool `run_tool` started: `argv` as cli.py was given it, read by cli.py's own parser and checks, so the
    tool and cli.py can never disagree about an argument."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != command:
        parser.error(f"{TOOLS[command]} runs `{command}`: python cli.py {command} ...")
    return parser, args, configure(parser, args)


def open_client(parser: argparse.ArgumentParser, config: TerminalConfig) -> TicketClient:
    """The terminal's client, as the config says; an unusable CA file is a usage error."""
    try:
        return TicketClient(list(config.name_servers), list(config.servers), config.timeout, cafile=config.cafile)
    except TLSConfigError as exc:
        parser.error(str(exc))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    config = configure(parser, args)
    if args.command in TOOLS:
        return run_tool(args.command, argv)
    if args.command == "web":
        from terminal.app.web import serve  # Textual is loaded only by the commands that show the app

        serve(config, choose_language(args.lang), args.host, args.port)
        return EXIT_OK
    out = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    client = open_client(parser, config)
    try:
        with client:
            if args.command is None:
                from terminal.app.run import run_counter  # Textual is loaded only by the commands that show the app

                run_counter(client, args.lang, admin_token=config.token)
                return EXIT_OK
            if command_name(args) == "admin dashboard":
                return show_dashboard(client, config, args, out, err)
            if args.command == "watch":
                return show_watch(client, args, out, err)
            if command_name(args) == "admin cancel" and not args.yes:
                return run_cancel_after_asking(client, config, args, out, err)
            return run_command(client, config, args, out, err)
    except EOFError:
        out.print("\nBye.")
        return EXIT_OK
    except KeyboardInterrupt:
        err.print("\nInterrupted.")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
