"""`cli.py web`: the same counter app for a counter PC that has only a browser, served by textual-serve.

textual-serve starts one app process per browser tab (`python cli.py` with this terminal's settings), so each
tab is a clerk's session of its own with its own client, breakers and admin token. The token this terminal was
started with is not handed on: whoever opens the page types it in Admin, as at any counter.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from textual_serve.server import Server

from terminal.config import TerminalConfig
from terminal.inputs import TOKEN_ENV

CLI = Path(__file__).resolve().parents[2] / "cli.py"


def app_command(config: TerminalConfig, language: str) -> str:
    """The command line of one tab's app: cli.py with no subcommand and the same connection settings."""
    words = [sys.executable, str(CLI), "--lang", language, "--timeout", str(config.timeout)]
    for address in config.name_servers:
        words += ["--name-server", address]
    for address in config.servers:
        words += ["--server", address]
    if config.cafile:
        words += ["--cafile", config.cafile]
    return shlex.join(words)


def serve(config: TerminalConfig, language: str, host: str, port: int) -> None:
    """Until Ctrl-C or SIGTERM."""
    os.environ.pop(TOKEN_ENV, None)
    print(f"Serving the counter on http://{host}:{port}", flush=True)
    Server(app_command(config, language), host=host, port=port, title="bilheteria").serve()
