"""The ticket server's configuration: one path from the command line to a frozen `ServerConfig`.

Each setting is read once, in one order: the flag, else the environment (`BILHETERIA_<NAME>`), else a default
that works on one laptop. Every value is checked here, before anything starts, so a bad one stops the server
with one line that names the flag, its variable and what is wrong (`ConfigError`), never with a traceback
halfway through starting or with a server that starts and then refuses every sale. Nothing below `main`
sees argparse: `serve` and everything it starts take the config or its fields.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import NoReturn, TypeVar

from database import DEFAULT_HOLD_SECONDS, DEFAULT_MAX_PER_ORDER, DEFAULT_OFFER_SECONDS
from net.registry_protocol import Address, RegistrationKey, RegistrationKeyError, listenable, parse_address
from service.mailer import DEFAULT_MAIL_FROM, SmtpSettings, add_mail_arguments
from service.transport import DEFAULT_IDLE_SECONDS

ENV_PREFIX = "BILHETERIA_"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 18861
DEFAULT_DB = "tickets.db"
DEFAULT_NAME_SERVERS = "127.0.0.1:18811"
DEFAULT_LOG_LEVEL = "INFO"

T = TypeVar("T")


class ConfigError(ValueError):
    """A flag or environment value the server cannot start with; the message is the one line the operator sees."""


@dataclass(frozen=True)
class ServerConfig:
    """Everything one ticket server is started with. The secrets stay out of the repr."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    """0 picks a free port (the readiness line says which)."""
    db: str = field(default=DEFAULT_DB, repr=False)
    """A SQLite file, or a postgresql:// URL (which may carry a password, hence not in the repr)."""
    name_servers: tuple[Address, ...] = (parse_address(DEFAULT_NAME_SERVERS),)
    hold_seconds: float = DEFAULT_HOLD_SECONDS
    max_per_order: int = DEFAULT_MAX_PER_ORDER
    offer_seconds: float = DEFAULT_OFFER_SECONDS
    admin_token: str | None = field(default=None, repr=False)
    seed_demo: bool = True
    log_level: str = DEFAULT_LOG_LEVEL
    certfile: str | None = None
    keyfile: str | None = None
    cafile: str | None = None
    smtp: SmtpSettings | None = None
    mail_from: str = DEFAULT_MAIL_FROM
    max_connections: int | None = None
    """None: derived from the descriptor limit (service.admission.default_max_connections)."""
    idle_seconds: float = DEFAULT_IDLE_SECONDS
    throttle_scale: float = 1.0
    """Multiplies every throttle of service/throttle.py: more where many honest clients share one address."""
    registration_key: RegistrationKey | None = None
    """Signs this server's registrations; None sends them unsigned, which only an open name server accepts."""


class _Parser(argparse.ArgumentParser):
    """argparse whose mistakes are a `ConfigError`: one line, not the usage text and a second line."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


_VALUES: tuple[tuple[str, str], ...] = (
    ("--host", f"address to listen on (default {DEFAULT_HOST})"),
    ("--port", f"TCP port, 0 for a free one (default {DEFAULT_PORT})"),
    ("--db", f"SQLite file (created on first start) or postgresql://user:pass@host:5432/dbname (default {DEFAULT_DB})"),
    ("--hold-seconds", f"how long a hold lasts (default {DEFAULT_HOLD_SECONDS:.0f})"),
    ("--max-per-order", f"most tickets in one order (default {DEFAULT_MAX_PER_ORDER})"),
    ("--offer-seconds", f"how long a waitlist offer holds its tickets (default {DEFAULT_OFFER_SECONDS:.0f})"),
    ("--admin-token", "the token of the admin operations (default: generated once beside a SQLite database)"),
    ("--log-level", f"DEBUG, INFO, WARNING, ERROR or CRITICAL (default {DEFAULT_LOG_LEVEL})"),
    ("--certfile", "PEM certificate: accept only TLS connections (with --keyfile)"),
    ("--keyfile", "PEM private key of --certfile"),
    ("--cafile", "PEM CA: talk TLS to the name servers, trusting only certificates it signed"),
    ("--max-connections", ("most client connections open at once; beyond it a newcomer is refused at once "
                          "(default: half the descriptor limit, at most 4096)")),
    ("--idle-seconds", f"close a connection that sends nothing for this long (default {DEFAULT_IDLE_SECONDS:.0f})"),
    ("--throttle-scale", ("allow this many times the failed lookups, wrong admin tokens and waitlist joins per connection "
                          "and per address (default 1; raise it where many terminals share one address)")),
)
"""The flags that take one value, each with its variable BILHETERIA_<FLAG> (see `_variable`)."""


def _variable(flag: str) -> str:
    return ENV_PREFIX + flag.removeprefix("--").replace("-", "_").upper()


def _parser(env: Callable[[str, str | None], str | None]) -> argparse.ArgumentParser:
    """The flags; each defaults to None, so an absent flag falls through to the environment, then the default."""
    parser = _Parser(description="bilheteria ticket server (RPyC service TICKETS)")
    for flag, what in _VALUES:
        parser.add_argument(flag, help=f"{what}; env {_variable(flag)}")
    parser.add_argument("--name-server", action="append", dest="name_servers",
                        help="HOST:PORT of a name server; repeat or separate with commas for several "
                             f"(default {DEFAULT_NAME_SERVERS}); env BILHETERIA_NAME_SERVERS, comma-separated")
    parser.add_argument("--no-demo", action="store_true", default=None,
                        help="start a new database empty instead of with the demo catalogue; env BILHETERIA_NO_DEMO=1")
    parser.add_argument("--registration-key-file", metavar="FILE",
                        help="the key that signs this server's registrations with the name servers (the same file "
                             "they read); env BILHETERIA_REGISTRATION_KEY_FILE, or the key itself in BILHETERIA_REGISTRATION_KEY")
    add_mail_arguments(parser, env)
    return parser


def parse_config(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> ServerConfig:
    """The configuration of a command line and an environment; a `ConfigError` naming the first bad value."""
    environ = os.environ if environ is None else environ

    def env(name: str, default: str | None = None) -> str | None:
        return environ.get(f"{ENV_PREFIX}{name}", default)

    args = _parser(env).parse_args(argv)

    def setting(flag: str, convert: Callable[[str], T], default: T) -> T:
        """The flag's value, else its variable's, else `default`; converted, or a ConfigError naming both."""
        variable = _variable(flag)
        given = getattr(args, flag.removeprefix("--").replace("-", "_"))
        raw = given if given is not None else environ.get(variable)
        if raw is None:
            return default
        try:
            return convert(raw)
        except ValueError as exc:
            raise ConfigError(f"{flag} (or {variable}): {exc}") from None

    listed = args.name_servers if args.name_servers is not None else [env("NAME_SERVERS", DEFAULT_NAME_SERVERS) or ""]
    try:
        name_servers = tuple(address for text in listed for address in _addresses(text))
    except ValueError as exc:
        raise ConfigError(f"--name-server (or {ENV_PREFIX}NAME_SERVERS): {exc}") from None
    certfile = setting("--certfile", str, None) or None
    keyfile = setting("--keyfile", str, None) or None
    if bool(certfile) != bool(keyfile):
        raise ConfigError("--certfile and --keyfile go together (or BILHETERIA_CERTFILE and BILHETERIA_KEYFILE)")
    try:
        registration_key = RegistrationKey.load(args.registration_key_file, environ)
    except RegistrationKeyError as exc:
        raise ConfigError(f"--registration-key-file (or BILHETERIA_REGISTRATION_KEY_FILE): {exc}") from None
    return ServerConfig(
        host=setting("--host", listenable, DEFAULT_HOST),
        port=setting("--port", _port, DEFAULT_PORT),
        db=setting("--db", _given("name a SQLite file or a postgresql:// URL"), DEFAULT_DB),
        name_servers=name_servers,
        hold_seconds=setting("--hold-seconds", _seconds, DEFAULT_HOLD_SECONDS),
        max_per_order=setting("--max-per-order", _max_per_order, DEFAULT_MAX_PER_ORDER),
        offer_seconds=setting("--offer-seconds", _seconds, DEFAULT_OFFER_SECONDS),
        admin_token=setting("--admin-token", _given("leave it out to generate one beside a SQLite database"), None),
        seed_demo=not (args.no_demo or env("NO_DEMO", "") not in ("", "0")),
        log_level=setting("--log-level", _log_level, DEFAULT_LOG_LEVEL),
        certfile=certfile,
        keyfile=keyfile,
        cafile=setting("--cafile", str, None) or None,
        smtp=SmtpSettings.from_args(args),
        mail_from=_mail_from(args.mail_from),
        max_connections=setting("--max-connections", _max_connections, None),
        idle_seconds=setting("--idle-seconds", _seconds, DEFAULT_IDLE_SECONDS),
        throttle_scale=setting("--throttle-scale", _scale, 1.0),
        registration_key=registration_key,
    )


def _given(otherwise: str) -> Callable[[str], str]:
    """A text that must not be empty: an empty value given on purpose would otherwise start on something else."""

    def given(text: str) -> str:
        if not text.strip():
            raise ValueError(f"empty; {otherwise}")
        return text

    return given


def _mail_from(text: str) -> str:
    if "@" not in parseaddr(text)[1]:
        raise ConfigError(f"--mail-from (or {ENV_PREFIX}MAIL_FROM): {text!r} is not an email address")
    return text


def _addresses(text: str) -> list[Address]:
    """One HOST:PORT, or several separated by commas (as in BILHETERIA_NAME_SERVERS)."""
    return [parse_address(item.strip()) for item in text.split(",") if item.strip()]


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None


def _port(text: str) -> int:
    port = _integer(text)
    if not 0 <= port <= 65535:
        raise ValueError(f"{port} is not a port (0 to 65535, 0 for a free one)")
    return port


def _max_per_order(text: str) -> int:
    most = _integer(text)
    if most < 1:
        raise ValueError(f"{most} would refuse every sale; allow at least 1 ticket per order")
    return most


def _max_connections(text: str) -> int:
    most = _integer(text)
    if most < 1:
        raise ValueError(f"{most} would refuse every client; allow at least 1 connection")
    return most


def _positive(number: str, positive: str) -> Callable[[str], float]:
    """A converter to a finite number above 0, whose refusals name what was expected ("a number of seconds")."""

    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not {number}") from None
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"{text} is not {positive}")
        return value

    return convert


_scale = _positive("a number", "a positive factor")
_seconds = _positive("a number of seconds", "a positive number of seconds")


def _log_level(text: str) -> str:
    level = text.strip().upper()
    if level not in logging.getLevelNamesMapping():
        raise ValueError(f"{text!r} is not a log level (DEBUG, INFO, WARNING, ERROR or CRITICAL)")
    return level
