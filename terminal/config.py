"""The terminal's settings, read once: flags first, then the environment (`BILHETERIA_*`), then defaults
that work on one laptop.

cli.py's global options (where to find the box office, how long to wait, TLS, JSON, the admin token) are
resolved here into one frozen `TerminalConfig` before anything runs, so a command, the counter app or a tool that
cli.py starts reads settings from it and never from argparse's Namespace or the environment again. A bad
value in the environment is refused the way a bad flag is: one line naming it, and exit 2.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from terminal.inputs import admin_token, host_ports

DEFAULT_NAME_SERVER = "127.0.0.1:18811"
DEFAULT_TIMEOUT_SECONDS = 5.0
NAME_SERVERS_ENV = "BILHETERIA_NAME_SERVERS"
SERVERS_ENV = "BILHETERIA_SERVERS"
CAFILE_ENV = "BILHETERIA_CAFILE"


class ConfigError(ValueError):
    """A setting that cannot be used; the message names it and what was wrong, in one line."""


@dataclass(frozen=True)
class TerminalConfig:
    """Everything the terminal's global options decide."""

    name_servers: tuple[str, ...] = (DEFAULT_NAME_SERVER,)
    servers: tuple[str, ...] = ()
    """Ticket servers to use directly, skipping discovery."""
    cafile: str | None = None
    """TLS on every hop, trusting only what this CA signed; None for plain text."""
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    json: bool = False
    token: str | None = None
    """The admin token (--token, else BILHETERIA_ADMIN_TOKEN)."""


def addresses(given: Sequence[str] | None, env: str, default: Sequence[str], environ: Mapping[str, str]) -> tuple[str, ...]:
    """Flags first, then the environment (comma separated), then the default."""
    if given:
        return tuple(given)
    try:
        listed = host_ports(environ.get(env, ""))
    except ValueError as exc:
        raise ConfigError(f"{env}: {exc}") from None
    return tuple(listed or default)


def terminal_config(*, name_servers: Sequence[str] | None, servers: Sequence[str] | None, cafile: str | None, timeout: float,
                    json: bool, token: str | None, environ: Mapping[str, str] = os.environ) -> TerminalConfig:
    """The flags as argparse read them (None where not given), completed from `environ`; raises ConfigError."""
    return TerminalConfig(
        name_servers=addresses(name_servers, NAME_SERVERS_ENV, [DEFAULT_NAME_SERVER], environ),
        servers=addresses(servers, SERVERS_ENV, [], environ),
        cafile=cafile or environ.get(CAFILE_ENV) or None,
        timeout=timeout,
        json=json,
        token=admin_token(token, environ),
    )
