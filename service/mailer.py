"""Delivery of the outbox: the confirmations the store wrote beside each sale, cancellation and event cancellation.

The store writes a message row in the same transaction as the state change, so a sale is never without its
mail and a mail never describes a sale that did not happen. This module only delivers those rows. Every
server runs one `Mailer`: a thread that claims a batch of due messages (the claim is a lease in the
database, so replicas do not send the same message), sends them over one SMTP connection, and marks each
one sent the moment the SMTP server accepted it. A failure puts the message back with exponential backoff.

What is and is not guaranteed: in the normal path every message is sent exactly once. A crash after the SMTP
server accepted a message and before it was marked sent makes it go out again once the lease lapses; every
mail carries `Message-ID: <outbox-<id>@bilheteria>` and `X-Bilheteria-Outbox-Id`, so a reader (or a mail
server that deduplicates by Message-ID) can recognise the second copy.

With no SMTP server configured the messages are written to the log instead and marked "logged", which is
what a laptop demo wants. The SMTP password is never logged, never printed, and not in any repr.
"""

from __future__ import annotations

import argparse
import logging
import random
import smtplib
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from typing import TYPE_CHECKING, Any

from backoff import Backoff
from errors import Unavailable
from service import letters

if TYPE_CHECKING:
    from records import OutboxMessage

log = logging.getLogger("bilheteria.service.mailer")

DEFAULT_MAIL_FROM = "bilheteria@localhost"
DEFAULT_POLL_SECONDS = 1.0
DEFAULT_BATCH = 100
DEFAULT_LEASE_SECONDS = 60.0
MAX_BACKOFF_SECONDS = 300.0
MAX_LOOP_BACKOFF_SECONDS = 60.0
MAX_ERROR_TEXT = 500
MAX_LOOP_BACKOFF_DOUBLINGS = 10
MESSAGE_BACKOFF = Backoff(base=1.0, ceiling=MAX_BACKOFF_SECONDS, low=1.0, high=1.25)
"""1, 2, 4 ... 300 s between tries of one message, plus up to a quarter more so replicas do not retry in step."""

Env = Callable[[str, str | None], str | None]

_KEEPS_CONNECTION = (
    smtplib.SMTPRecipientsRefused,
    smtplib.SMTPSenderRefused,
    smtplib.SMTPDataError,
    smtplib.SMTPNotSupportedError,
    ValueError,
)
"""Failures of one message after which smtplib has reset the session, so the next message can use the same
connection. Anything else (a timeout, a dropped connection) closes it."""


# -- configuration -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """Where and how to send. The password is left out of the repr, so logging the settings cannot leak it."""

    host: str
    port: int = 25
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    starttls: bool = False
    timeout: float = 10.0

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> SmtpSettings | None:
        """The settings of parsed arguments (see `add_mail_arguments`), or None when no SMTP host is given."""
        host = getattr(args, "smtp_host", None)
        if not host:
            return None
        return cls(
            host=host,
            port=getattr(args, "smtp_port", 25),
            user=getattr(args, "smtp_user", None) or None,
            password=getattr(args, "smtp_password", None) or None,
            starttls=bool(getattr(args, "smtp_starttls", False)),
        )

    def describe(self) -> str:
        """Where mail goes, for the log: host, port, user and TLS, never the password."""
        who = f" as {self.user}" if self.user else ""
        tls = " with STARTTLS" if self.starttls else ""
        return f"{self.host}:{self.port}{who}{tls}"


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (1 to 65535)")
    return port


def _flag(text: str | None) -> bool:
    return (text or "").strip().lower() not in ("", "0", "false", "no", "off")


def add_mail_arguments(parser: argparse.ArgumentParser, env: Env) -> None:
    """The mail options, each also read from BILHETERIA_<NAME> through `env(name, default)`."""
    group = parser.add_argument_group("mail", "confirmations are sent by SMTP; without --smtp-host they are written to the log")
    group.add_argument("--smtp-host", default=env("SMTP_HOST", None), help="SMTP server (env BILHETERIA_SMTP_HOST)")
    group.add_argument("--smtp-port", type=_port, default=env("SMTP_PORT", "25"), help="default 25 (env BILHETERIA_SMTP_PORT)")
    group.add_argument("--smtp-user", default=env("SMTP_USER", None), help="log in as this user (env BILHETERIA_SMTP_USER)")
    group.add_argument("--smtp-password", default=env("SMTP_PASSWORD", None),
                       help="prefer the environment variable BILHETERIA_SMTP_PASSWORD: a command line is visible to every local user")
    group.add_argument("--smtp-starttls", action="store_true", default=_flag(env("SMTP_STARTTLS", "0")),
                       help="upgrade the connection with STARTTLS before logging in (env BILHETERIA_SMTP_STARTTLS=1)")
    group.add_argument("--mail-from", default=env("MAIL_FROM", DEFAULT_MAIL_FROM),
                       help=f"sender of the confirmations, default {DEFAULT_MAIL_FROM} (env BILHETERIA_MAIL_FROM)")


# -- the email ------------------------------------------------------------------------------------------


def compose(message: OutboxMessage, mail_from: str) -> EmailMessage:
    """The email for one outbox row, worded by service/letters.py. Its ids let a reader spot the one duplicate a
    crash can cause.

    Raises ValueError for a header that would break the message (a line break in the subject, say).
    """
    letter = letters.compose(message)
    email = EmailMessage()
    email["From"] = mail_from
    email["To"] = message.recipient
    email["Subject"] = letter.subject
    email["Date"] = formatdate(localtime=True)
    email["Message-ID"] = f"<outbox-{message.id}@bilheteria>"
    email["X-Bilheteria-Outbox-Id"] = str(message.id)
    # Quoted-printable keeps the body 7-bit, so any SMTP server carries accents and "R$" unchanged.
    email.set_content(letter.body, subtype="plain", charset="utf-8", cte="quoted-printable")
    return email


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text[:MAX_ERROR_TEXT]


# -- the worker -----------------------------------------------------------------------------------------


class Mailer:
    """Delivers the outbox of one store; one per server process, named by `worker` in the leases it takes.

    `deliver_once` does one round (claim, send, mark) and is what the tests drive; `start` runs rounds on a
    daemon thread every `poll_seconds` until `stop`.
    """

    def __init__(
        self,
        store: Any,
        settings: SmtpSettings | None,
        worker: str,
        mail_from: str = DEFAULT_MAIL_FROM,
        *,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        batch: int = DEFAULT_BATCH,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        rng: random.Random | None = None,
    ) -> None:
        if poll_seconds <= 0 or batch < 1 or lease_seconds <= 0:
            raise ValueError("poll_seconds and lease_seconds must be positive and batch at least 1")
        self.store = store
        self.settings = settings
        self.worker = worker
        self.mail_from = mail_from
        self.envelope_from = parseaddr(mail_from)[1] or mail_from
        self.poll_seconds = poll_seconds
        self.batch = batch
        self.lease_seconds = lease_seconds
        self._rng = rng or random.Random()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._more = False
        """Set by a round that filled its batch and delivered: the next round starts without waiting."""

    @property
    def _send_budget(self) -> float:
        """How long into its lease a round may still start sending: the last send must end before the lease
        does, or another replica could claim the message while it is still on the wire."""
        timeout = self.settings.timeout if self.settings else 0.0
        return max(self.lease_seconds / 2, self.lease_seconds - 2 * timeout)

    def backoff(self, attempts: int) -> float:
        """Seconds before the next try of a message that has failed `attempts` times before this failure:
        1, 2, 4 ... up to 300, plus up to a quarter more at random so replicas do not retry in step."""
        return MESSAGE_BACKOFF.delay(attempts, self._rng)

    # -- one round ------------------------------------------------------------------------------------

    def deliver_once(self) -> int:
        """Claim due messages, deliver them, mark each; returns how many were delivered (sent or logged).

        A failed message is put back for later (`mark_failed`); a store error propagates.
        """
        started = time.monotonic()
        self._more = False
        messages = self.store.claim_messages(self.worker, limit=self.batch, lease_seconds=self.lease_seconds)
        if not messages:
            return 0
        if self.settings is None:
            delivered = self._log_all(messages)
        else:
            delivered = self._send_all(messages, self.settings, started)
        self._more = len(messages) == self.batch and delivered == len(messages)
        return delivered

    def _log_all(self, messages: Sequence[OutboxMessage]) -> int:
        for message in messages:
            letter = letters.compose(message)
            log.info("mail to %s: %s [outbox %d]", message.recipient, letter.subject, message.id)
            log.debug("outbox %d body:\n%s", message.id, letter.body)
        self.store.mark_logged([message.id for message in messages], self.worker)
        return len(messages)

    def _send_all(self, messages: Sequence[OutboxMessage], settings: SmtpSettings, started: float) -> int:
        delivered = 0
        connection: smtplib.SMTP | None = None
        try:
            for position, message in enumerate(messages):
                if self._stopping.is_set():
                    self._leave(messages[position:], "the mailer is stopping")
                    break
                if time.monotonic() - started > self._send_budget:
                    self._leave(messages[position:], f"less than {2 * settings.timeout:.0f} s of their lease is left")
                    break
                if connection is None:
                    try:
                        connection = self._connect(settings)
                    except OSError as exc:  # SMTPException is an OSError too
                        log.warning("cannot reach SMTP server %s: %s", settings.describe(), _error_text(exc))
                        for unsent in messages[position:]:
                            self._failed(unsent, exc)
                        break
                try:
                    connection.send_message(compose(message, self.mail_from), from_addr=self.envelope_from, to_addrs=[message.recipient])
                except (OSError, ValueError) as exc:
                    self._failed(message, exc)
                    if not isinstance(exc, _KEEPS_CONNECTION):
                        _close(connection)
                        connection = None
                    continue
                self._mark(self.store.mark_sent, message, "sent")
                delivered += 1
                log.info("sent outbox %d (%s %s) to %s", message.id, message.kind, message.code or "-", message.recipient)
        finally:
            if connection is not None:
                _quit(connection)
        return delivered

    def _connect(self, settings: SmtpSettings) -> smtplib.SMTP:
        connection = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
        try:
            if settings.starttls:
                connection.starttls(context=ssl.create_default_context())
            if settings.user:
                connection.login(settings.user, settings.password or "")
        except BaseException:
            _close(connection)
            raise
        return connection

    def _mark(self, mark: Callable[[int, str], None], message: OutboxMessage, what: str) -> None:
        """Record the delivery; if the store refuses, say plainly that this message may go out twice."""
        try:
            mark(message.id, self.worker)
        except Exception:
            log.error("outbox %d was %s but could not be marked so; it will be sent again when its lease lapses", message.id, what)
            raise

    def _failed(self, message: OutboxMessage, exc: BaseException) -> None:
        retry_in = self.backoff(message.attempts)
        error = _error_text(exc)
        self.store.mark_failed(message.id, self.worker, error, retry_in)
        log.warning("outbox %d to %s not sent (attempt %d): %s; next try in %.1f s",
                    message.id, message.recipient, message.attempts + 1, error, retry_in)

    def _leave(self, messages: Sequence[OutboxMessage], reason: str) -> None:
        ids = ", ".join(str(message.id) for message in messages)
        log.info("left outbox %s for a later claim (%s); they wait for their lease to lapse", ids, reason)

    # -- the thread -----------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("this mailer was already started")
        if self.settings is None:
            log.info("mail: no SMTP server configured; confirmations are written to this log (--smtp-host to send them)")
        else:
            log.info("mail: sending from %s through %s", self.mail_from, self.settings.describe())
        self._thread = threading.Thread(target=self._run, name="mailer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pauses = Backoff(base=min(self.poll_seconds, MAX_LOOP_BACKOFF_SECONDS), ceiling=MAX_LOOP_BACKOFF_SECONDS)
        failures = 0
        while not self._stopping.is_set():
            try:
                self.deliver_once()
            except Exception as exc:  # the thread outlives any round; the next one starts after a pause
                failures += 1
                pause = pauses.step(min(failures, MAX_LOOP_BACKOFF_DOUBLINGS))
                if isinstance(exc, Unavailable):  # the database is away: expected, and worth one line, not a traceback
                    log.warning("outbox delivery round failed (%d in a row): %s; next round in %.1f s", failures, exc, pause)
                else:
                    log.exception("outbox delivery round failed (%d in a row); next round in %.1f s", failures, pause)
                self._stopping.wait(pause)
                continue
            failures = 0
            if not self._more:
                self._stopping.wait(self.poll_seconds)

    def stop(self, timeout: float | None = None) -> None:
        """Finish the message in flight and stop; waits at most `timeout` (by default what one send may take)."""
        self._stopping.set()
        thread = self._thread
        if thread is None:
            return
        if timeout is None:
            timeout = 3 * self.settings.timeout + 1 if self.settings else 5.0
        thread.join(timeout)
        if thread.is_alive():
            log.warning("mail: the delivery thread did not stop within %.0f s; leaving it (a daemon) behind", timeout)


def _quit(connection: smtplib.SMTP) -> None:
    try:
        connection.quit()
    except OSError:
        _close(connection)


def _close(connection: smtplib.SMTP) -> None:
    try:
        connection.close()
    except OSError:
        return
