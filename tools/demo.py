"""`python cli.py demo`: a whole box office on this machine, then the clerk's counter app (or a wait for Ctrl-C).

cli.py starts this as `python -m tools.demo` with its own arguments (read by cli.py's parser, so the two never
disagree) and passes on the SIGINT or SIGTERM it gets; whichever way the demo ends, its name servers and ticket
servers are stopped before it exits. The interactive terminal it opens is the product's own counter app, handed
the demo's admin token; quitting it is what stops the demo, and it says so before asking.
Exit codes are cli.py's: 0 stopped cleanly, 3 the demo could not start.

The demo is the secure setup unless told otherwise: a throwaway CA and a certificate it signed (tools/pki.py, in
the data folder's pki/), TLS on every hop, and a fresh registration key, so the name servers list only servers
that hold it and the terminals trust only servers whose certificate the CA signed. `--insecure` is the open
setup (plain text, anyone may register), as stock RPyC runs; the tour stays open too, to keep its chapters short.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.text import Text

import cli
from client_core import TicketClient
from net.tls import TLSFiles
from terminal.app.run import run_counter
from terminal.config import TerminalConfig
from terminal.inputs import TOKEN_ENV
from tools.harness import LaunchError, stop_on_signals
from tools.launcher import LocalCluster
from tools.pgcluster import PgCluster, PostgresUnavailable
from tools.pki import make_local_pki, make_registration_key

POSTGRES_TOKEN_FILE = "postgres.admin-token"
REGISTRATION_KEY_FILE = "registration.key"
PKI_FOLDER = "pki"


def credentials(args: argparse.Namespace, config: TerminalConfig) -> tuple[TLSFiles | None, Path | None]:
    """The TLS files (the operator's, else a throwaway CA's) and a fresh registration key; neither with --insecure."""
    if args.insecure:
        return None, None
    data = Path(args.data)
    files = TLSFiles(args.certfile, args.keyfile, config.cafile) if args.certfile else make_local_pki(data / PKI_FOLDER)
    return files, make_registration_key(data / REGISTRATION_KEY_FILE)


def run_demo(args: argparse.Namespace, config: TerminalConfig, out: Console, err: Console, database: str = "",
             server_args: Sequence[str] = ()) -> int:
    """Start a local cluster, then the counter app or a wait for Ctrl-C/SIGTERM; stop it however we leave."""
    try:
        files, key = credentials(args, config)
    except LaunchError as exc:
        err.print(Text.assemble(("Demo failed: ", "bold red"), str(exc)))
        return cli.EXIT_UNAVAILABLE
    cluster = LocalCluster(Path(args.data), servers=args.server_count, name_servers=args.name_server_count, ns_port=args.ns_port,
                           port_base=args.port_base, tls=files, database=database, server_args=server_args, registration_key=key)
    for sentence in cluster.moved:
        out.print(Text(sentence, style="yellow"))
    try:
        with out.status("Starting…") as spinner:
            cluster.start(progress=spinner.update)
        describe_demo(cluster, config, out)
        if args.no_interactive:
            listing = ", ".join(cluster.name_server_addresses)
            out.print(f"Demo ready: name server{'s' if len(cluster.ns_ports) > 1 else ''} {listing}. Stop with Ctrl-C or SIGTERM.")
            while True:
                signal.pause()
        with TicketClient(cluster.name_server_addresses, timeout=config.timeout, cafile=cluster.cafile) as client:
            run_counter(client, args.lang, admin_token=config.token or demo_token(cluster, args),
                        demo_processes=len(cluster.children()))
            return cli.EXIT_OK
    except LaunchError as exc:
        err.print(Text.assemble(("Demo failed: ", "bold red"), str(exc)))
        return cli.EXIT_UNAVAILABLE
    except (KeyboardInterrupt, EOFError):
        out.print()
        return cli.EXIT_OK
    finally:
        if cluster.children():
            with out.status("Stopping the demo processes…"):
                cluster.stop()
            out.print("Demo stopped.")


def run_demo_on_postgres(args: argparse.Namespace, config: TerminalConfig, out: Console, err: Console) -> int:
    """The demo on a throwaway PostgreSQL (pgcluster.py) instead of data/tickets.db; it is deleted when the demo stops.
    The servers share a token written beside the logs, since a database URL has no file to keep one beside."""
    try:
        with out.status("Starting a throwaway PostgreSQL…"):
            postgres = PgCluster().start()
    except PostgresUnavailable as exc:
        err.print(Text.assemble(("Demo failed: ", "bold red"), str(exc)))
        return cli.EXIT_UNAVAILABLE
    try:
        token_file = Path(args.data) / POSTGRES_TOKEN_FILE
        token_file.parent.mkdir(parents=True, exist_ok=True)
        token_file.write_text(secrets.token_urlsafe(24) + "\n")
        token_file.chmod(0o600)
        database = postgres.create_database("bilheteria")
        out.print(f"PostgreSQL: {database}, in {postgres.directory} until the demo stops")
        return run_demo(args, config, out, err, database, ("--admin-token", token_file.read_text().strip()))
    finally:
        postgres.destroy()


def demo_token(cluster: LocalCluster, args: argparse.Namespace) -> str | None:
    """The token the demo's servers were started with, read from the file they keep it in."""
    postgres = str(cluster.db).startswith("postgresql://")
    path = Path(args.data) / POSTGRES_TOKEN_FILE if postgres else Path(f"{cluster.db}.admin-token")
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def describe_demo(cluster: LocalCluster, config: TerminalConfig, out: Console) -> None:
    for child in cluster.children():
        out.print(Text.assemble((f"{child.name:<20}", "bold"), f"{child.address}  pid {child.popen.pid}  log {child.log}"))
    out.print(f"Logs: {cluster.data}{os.sep}*.log")
    if config.token:
        out.print(f"Admin token: the one in ${TOKEN_ENV}")
    else:
        postgres = str(cluster.db).startswith("postgresql://")
        out.print(f"Admin token: in {cluster.data / POSTGRES_TOKEN_FILE if postgres else f'{cluster.db}.admin-token'}")
    if cluster.registration_key:
        out.print(f"Secure: TLS on every hop, trusting only {cluster.cafile}; registrations signed with the key in "
                  f"{cluster.registration_key}")
    else:
        out.print(Text("Insecure: " + ("TLS, but " if cluster.cafile else "plain text, and ")
                       + "anyone on this machine's network may register a server or unregister these (--insecure)", style="yellow"))
    cafile = f" --cafile {cluster.cafile}" if cluster.cafile else ""
    out.print(f"More terminals: python cli.py --name-server {','.join(cluster.name_server_addresses)}{cafile}")


def main(argv: list[str] | None = None) -> int:
    """`argv` as cli.py was given it (`demo --no-interactive ...`)."""
    _, args, config = cli.tool_arguments("demo", argv)
    stop_on_signals()
    out = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        return run_demo_on_postgres(args, config, out, err) if args.postgres else run_demo(args, config, out, err)
    except KeyboardInterrupt:
        out.print()
        return cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
