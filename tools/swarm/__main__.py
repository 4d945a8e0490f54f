"""`python cli.py swarm`: the swarm behind a progress bar, then its report, as a program of its own.

cli.py starts this as `python -m tools.swarm` with its own arguments, so the product never imports a tool;
the arguments are read by cli.py's parser (`cli.configure`), so the two can never disagree about them, and
the answer is shown with the terminal's own views. Exit codes are cli.py's: 0 consistent, 1 refused, 3 no
server answered, 4 the audit found an inconsistency, 130 interrupted (Ctrl-C, or SIGTERM passed on by cli.py).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict

from rich.console import Console, Group, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

import cli
from client_core import TicketClient
from errors import ReservationError, Unavailable
from records import Event
from terminal.config import TerminalConfig
from terminal.views import print_json
from tools.harness import stop_on_signals
from tools.swarm import SwarmPlan, SwarmReport, run_swarm


def swarm_view(report: SwarmReport) -> Group:
    table = Table(title=f"Swarm on event {report.event}", header_style="bold")
    table.add_column("Measure")
    table.add_column("Value", justify="right")
    for label, value in (
        ("reservations made", report.reservations),
        ("tickets sold" if report.mode == "confirm" else "tickets held", report.sold),
        ("refused as sold out", report.sold_out),
        ("other refusals", report.other_refusals),
        ("Unavailable errors", report.unavailable),
        ("unanswered purchases settled", report.settled),
        ("calls/s", report.calls_per_s),
        ("elapsed (s)", report.elapsed_s),
    ):
        table.add_row(label, str(value))
    parts: list[RenderableType] = [table]
    if report.last_refusal:
        parts.append(Text(f"Last other refusal: {report.last_refusal}", style="yellow"))
    if report.consistent:
        parts.append(Text(
            f"Consistent: {report.sold} tickets sold = tickets gone from the event; every code unique; "
            f"{report.verified_confirmed} confirmations verified.", style="bold green"))
    else:
        parts.append(Text("INCONSISTENT:", style="bold red"))
        parts.extend(Text(f"  - {violation}", style="red") for violation in report.violations)
    return Group(*parts)


def show_swarm(client: TicketClient, config: TerminalConfig, args: argparse.Namespace, out: Console, err: Console) -> int:
    """Run the swarm behind a progress bar, then show its report; exit 4 when the audit failed."""
    plan = SwarmPlan(name_servers=config.name_servers, servers=config.servers, timeout=config.timeout, event_id=args.event,
                     quantity=args.quantity, sector=args.sector, confirm=args.confirm, max_per_client=args.max_per_client,
                     clients=args.clients, processes=args.processes, cafile=config.cafile)
    bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=err, disable=not err.is_terminal, transient=True)
    with bar:
        task = bar.add_task(f"{args.clients} terminals", total=None)

        def started(event: Event, goal: int) -> None:
            bar.update(task, description=f"{args.clients} terminals buying from {event.name}", total=goal)

        def sold(quantity: int) -> None:
            bar.advance(task, quantity)

        report = run_swarm(client, plan, started, sold)
    if config.json:
        print_json(asdict(report))
    else:
        out.print(swarm_view(report))
    return cli.EXIT_OK if report.consistent else cli.EXIT_INCONSISTENT


def main(argv: list[str] | None = None) -> int:
    """`argv` as cli.py was given it (`swarm --event 1 ...`, global options included)."""
    parser, args, config = cli.tool_arguments("swarm", argv)
    stop_on_signals()
    out = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    client = cli.open_client(parser, config)
    try:
        with client:
            try:
                return show_swarm(client, config, args, out, err)
            except (ReservationError, Unavailable) as exc:
                return cli.report_failure(exc, client, config.json, err)
    except KeyboardInterrupt:
        err.print("\nInterrupted.")
        return cli.EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
