"""Mail from the outbox: what a customer receives after buying or cancelling, through a real SMTP server.

An aiosmtpd server runs in this process on a free port and keeps every envelope it accepts. The unit tests
drive `Mailer.deliver_once` against a real Store on a temporary file; the system tests start real ticket
servers pointed at the SMTP server, buy and cancel through `TicketClient`, and read the audit trail from the
database. Every wait polls a condition (a row's status, a received mail, a log line), never a fixed sleep.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import logging
import random
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from conftest import ADMIN_TOKEN, Cluster
from procs import free_port, wait_until

from client_core import TicketClient
from database import Store
from records import OutboxMessage
from service import letters
from service.mailer import Mailer, SmtpSettings, add_mail_arguments

LOCAL = "127.0.0.1"
VIP = "VIP"  # event 1 of the demo catalogue: VIP costs R$ 680,00, Pista R$ 250,00
SMTP_USER = "bilheteria-smtp"
SMTP_PASSWORD = "pw-never-in-a-log-7f3a9c"


# -- a real SMTP server that remembers what it accepted ------------------------------------------------


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage

    @property
    def outbox_id(self) -> int:
        return int(self.message["X-Bilheteria-Outbox-Id"])

    @property
    def body(self) -> str:
        return self.message.get_content()


class Inbox:
    """aiosmtpd handler: refuses the recipients in `refuse`, keeps every message it accepts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self.refuse: set[str] = set()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        with self._lock:
            self._received.append(Received(envelope.mail_from, tuple(envelope.rcpt_tos), parsed))
        return "250 OK queued"

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def copies(self) -> Counter:
        """How many times each outbox id arrived."""
        return Counter(mail.outbox_id for mail in self.received)

    def of(self, outbox_id: int) -> list[Received]:
        return [mail for mail in self.received if mail.outbox_id == outbox_id]


class SmtpServer:
    """An SMTP server on a port chosen now and started when asked, so a test can point at it before it listens."""

    def __init__(self, **smtp_options: Any) -> None:
        self.port = free_port()
        self.inbox = Inbox()
        self.options = smtp_options
        self.controller: Controller | None = None

    @property
    def args(self) -> tuple[str, ...]:
        return ("--smtp-host", LOCAL, "--smtp-port", str(self.port))

    @property
    def settings(self) -> SmtpSettings:
        return SmtpSettings(LOCAL, self.port, timeout=5.0)

    def start(self) -> SmtpServer:
        self.controller = Controller(self.inbox, hostname=LOCAL, port=self.port, **self.options)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def smtp_servers() -> Iterator:
    made: list[SmtpServer] = []

    def make(**options: Any) -> SmtpServer:
        made.append(SmtpServer(**options))
        return made[-1]

    yield make
    for server in made:
        server.stop()


@pytest.fixture
def smtp(smtp_servers) -> SmtpServer:
    return smtp_servers().start()


# -- helpers -------------------------------------------------------------------------------------------------


class Clock:
    """The store's clock, moved by hand so a backoff is checked without waiting for it."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def audit(cluster: Cluster) -> closing[Store]:
    """The database as an auditor reads it, beside the running servers."""
    return closing(Store(cluster.db, seed_demo=False))


def rows_of(store: Store, code: str) -> list[OutboxMessage]:
    return [message for message in store.outbox() if message.code == code]


def settled(store: Store, codes: list[str], kinds: int = 1) -> list[OutboxMessage]:
    """The outbox rows of `codes` once each code has `kinds` rows and all were sent; empty before."""
    rows = [message for message in store.outbox() if message.code in codes]
    if len(rows) == kinds * len(codes) and all(message.status == "sent" for message in rows):
        return rows
    return []


def client_for(*addresses: str) -> TicketClient:
    return TicketClient(servers=addresses, timeout=10.0)


def sell(store: Store, count: int, sector: str = "Pista") -> list[str]:
    return [store.reserve(1, 1, f"Cliente {n}", f"cliente{n}@example.com", sector=sector, confirm=True).code for n in range(count)]


# -- the worker against a real store and a real SMTP server --------------------------------------------------


def test_a_refused_connection_backs_off_and_the_next_try_waits_longer(tmp_path: Path) -> None:
    clock = Clock()
    store = Store(tmp_path / "t.db", clock=clock)
    try:
        [code] = sell(store, 1)
        nobody = SmtpSettings(LOCAL, free_port(), timeout=2.0)
        mailer = Mailer(store, nobody, worker="w1", rng=random.Random(1))

        assert mailer.deliver_once() == 0
        [row] = store.outbox()
        assert (row.code, row.status, row.attempts) == (code, "pending", 1)
        assert store.claim_messages("w2") == (), "a failed message must not be due again at once"
        clock.now += 0.95
        assert store.claim_messages("w2") == (), "the first retry waits at least 1 s"
        clock.now += 0.35  # 1.3 s: past 1 s plus the largest jitter (a quarter)
        assert mailer.deliver_once() == 0

        [row] = store.outbox()
        assert (row.status, row.attempts) == ("pending", 2)
        clock.now += 1.95
        assert store.claim_messages("w2") == (), "the second retry waits at least 2 s"
        clock.now += 0.6
        assert [message.id for message in store.claim_messages("w2")] == [row.id]
    finally:
        store.close()


def test_backoff_doubles_up_to_five_minutes_with_bounded_jitter() -> None:
    mailer = Mailer(None, None, worker="w", rng=random.Random(3))
    for attempts in range(20):
        base = min(300.0, 2.0**attempts)
        delays = [mailer.backoff(attempts) for _ in range(50)]
        assert all(base <= delay <= base * 1.25 for delay in delays), (attempts, min(delays), max(delays))
        assert len(set(delays)) > 1, "without jitter, replicas that failed together retry together"


def test_one_refused_recipient_does_not_hold_up_the_rest_of_the_batch(tmp_path: Path, smtp: SmtpServer) -> None:
    store = Store(tmp_path / "t.db")
    try:
        codes = sell(store, 3)
        smtp.inbox.refuse.add("cliente1@example.com")
        assert Mailer(store, smtp.settings, worker="w1").deliver_once() == 2

        status = {message.code: (message.status, message.attempts) for message in store.outbox()}
        assert status == {codes[0]: ("sent", 0), codes[1]: ("pending", 1), codes[2]: ("sent", 0)}
        assert sorted(mail.rcpt_tos for mail in smtp.inbox.received) == [("cliente0@example.com",), ("cliente2@example.com",)]
    finally:
        store.close()


def test_two_workers_racing_on_one_database_send_each_message_once(tmp_path: Path, smtp: SmtpServer) -> None:
    stores = [Store(tmp_path / "t.db"), Store(tmp_path / "t.db", seed_demo=False)]
    try:
        sell(stores[0], 30)
        mailers = [Mailer(store, smtp.settings, worker=f"replica-{n}", batch=4) for n, store in enumerate(stores)]
        start = threading.Barrier(len(mailers))
        delivered = [0] * len(mailers)
        errors: list[BaseException] = []

        def drain(n: int) -> None:
            start.wait()
            deadline = time.monotonic() + 20
            try:
                while stores[n].outbox("pending") and time.monotonic() < deadline:
                    delivered[n] += mailers[n].deliver_once()
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below, not lost in a thread
                errors.append(exc)

        threads = [threading.Thread(target=drain, args=(n,)) for n in range(len(mailers))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)

        assert errors == []
        copies = smtp.inbox.copies()
        assert len(copies) == 30 and set(copies.values()) == {1}, f"sent more than once: {[i for i, n in copies.items() if n > 1]}"
        assert sum(delivered) == 30
        assert {message.status for message in stores[0].outbox()} == {"sent"}
    finally:
        for store in stores:
            store.close()


def test_without_smtp_each_message_is_logged_and_marked_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = Store(tmp_path / "t.db")
    try:
        [code] = sell(store, 1, sector=VIP)
        caplog.set_level(logging.DEBUG, logger="bilheteria.service.mailer")
        assert Mailer(store, None, worker="w1").deliver_once() == 1

        [row] = store.outbox()
        assert row.status == "logged"
        info = [r.getMessage() for r in caplog.records if r.name == "bilheteria.service.mailer" and r.levelno == logging.INFO]
        assert info == [f"mail to cliente0@example.com: {letters.compose(row).subject} [outbox {row.id}]"]
        assert code in letters.compose(row).subject
        debug = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
        assert "Total: R$ 680,00" in debug
        assert Mailer(store, None, worker="w1").deliver_once() == 0, "a logged message is done"
    finally:
        store.close()


def test_the_delivery_thread_survives_a_failing_round_and_stops_when_asked(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    class FailsOnce:
        """The real store, except that the first claim meets a database error."""

        def __init__(self, store: Store) -> None:
            self.store = store
            self.failed = False

        def __getattr__(self, name: str) -> Any:
            return getattr(self.store, name)

        def claim_messages(self, *args: Any, **kwargs: Any) -> tuple[OutboxMessage, ...]:
            if not self.failed:
                self.failed = True
                raise sqlite3.OperationalError("disk I/O error")
            return self.store.claim_messages(*args, **kwargs)

    store = Store(tmp_path / "t.db")
    try:
        sell(store, 2)
        mailer = Mailer(FailsOnce(store), None, worker="w1", poll_seconds=0.02)
        mailer.start()
        try:
            wait_until(lambda: {m.status for m in store.outbox()} == {"logged"}, timeout=5, what="both messages logged")
        finally:
            mailer.stop()
        assert mailer._thread is not None and not mailer._thread.is_alive()
        assert any("round failed" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    finally:
        store.close()


def test_mail_options_come_from_flags_then_environment_and_hide_the_password() -> None:
    environment = {
        "BILHETERIA_SMTP_HOST": "mail.example.com", "BILHETERIA_SMTP_PORT": "587", "BILHETERIA_SMTP_USER": "box",
        "BILHETERIA_SMTP_PASSWORD": SMTP_PASSWORD, "BILHETERIA_SMTP_STARTTLS": "1",
    }

    def parse(argv: list[str], env: dict[str, str]) -> argparse.Namespace:
        parser = argparse.ArgumentParser()
        add_mail_arguments(parser, lambda name, default=None: env.get(f"BILHETERIA_{name}", default))
        return parser.parse_args(argv)

    bare = parse([], {})
    assert SmtpSettings.from_args(bare) is None
    assert bare.mail_from == "bilheteria@localhost"

    from_env = SmtpSettings.from_args(parse([], environment))
    assert from_env == SmtpSettings("mail.example.com", 587, "box", SMTP_PASSWORD, True)
    assert SMTP_PASSWORD not in repr(from_env) and SMTP_PASSWORD not in from_env.describe()

    flags = SmtpSettings.from_args(parse(["--smtp-host", "relay", "--smtp-port", "2525", "--mail-from", "x@y.z"], {}))
    assert flags == SmtpSettings("relay", 2525, None, None, False)
    with pytest.raises(SystemExit):
        parse(["--smtp-port", "70000"], {})


# -- the system: real servers, a real SMTP server ----------------------------------------------------------


def test_a_sale_and_a_confirmed_hold_each_mail_the_customer_once(cluster_factory, smtp: SmtpServer) -> None:
    cluster = cluster_factory(servers=1, extra=smtp.args)
    with client_for(*cluster.server_addresses()) as client:
        sale = client.reserve(1, 3, "Ana Souza", "ana@example.com", sector=VIP, confirm=True)
        hold = client.reserve(1, 3, "Bruno Lima", "bruno@example.com", sector=VIP, category="half")
        client.confirm(hold.code, "bruno@example.com")
    assert (sale.total_cents, hold.total_cents) == (204_000, 102_000)

    with audit(cluster) as store:
        rows = wait_until(lambda: settled(store, [sale.code, hold.code]), timeout=10, what="both confirmations sent")
    for reservation, address, total in ((sale, "ana@example.com", "R$ 2.040,00"), (hold, "bruno@example.com", "R$ 1.020,00")):
        [row] = [message for message in rows if message.code == reservation.code]  # the hold itself sends nothing
        assert row.kind == "confirmed"
        [mail] = smtp.inbox.of(row.id)
        assert [m for m in smtp.inbox.received if reservation.code in m.message["Subject"]] == [mail]
        assert (mail.mail_from, mail.rcpt_tos, mail.message["To"]) == ("bilheteria@localhost", (address,), address)
        assert reservation.code in mail.message["Subject"] and reservation.code in mail.body
        assert f"Total: {total}" in mail.body
        assert mail.message["Message-ID"] == f"<outbox-{row.id}@bilheteria>"
        assert mail.message.get_content_type() == "text/plain" and mail.message.get_content_charset() == "utf-8"


def test_a_cancellation_mails_the_customer(cluster_factory, smtp: SmtpServer) -> None:
    cluster = cluster_factory(servers=1, extra=smtp.args)
    with client_for(*cluster.server_addresses()) as client:
        sale = client.reserve(1, 2, "Carla Dias", "carla@example.com", sector=VIP, confirm=True)
        client.cancel(sale.code, "carla@example.com")

    with audit(cluster) as store:
        rows = wait_until(lambda: settled(store, [sale.code], kinds=2), timeout=10, what="confirmation and cancellation sent")
    assert sorted(row.kind for row in rows) == ["cancelled", "confirmed"]
    [cancelled] = [row for row in rows if row.kind == "cancelled"]
    [mail] = smtp.inbox.of(cancelled.id)
    assert mail.rcpt_tos == ("carla@example.com",)
    assert "cancelled" in mail.message["Subject"] and sale.code in mail.message["Subject"] and sale.code in mail.body
    assert len(smtp.inbox.received) == 2


def test_two_replicas_on_one_database_send_twenty_confirmations_once_each(cluster_factory, smtp: SmtpServer) -> None:
    cluster = cluster_factory(servers=2, extra=smtp.args)
    codes: list[str] = []
    for address in cluster.server_addresses():  # half the sales through each replica
        with client_for(address) as client:
            codes += [client.reserve(1, 1, f"Fã {n}", f"fa{n}@example.com", sector="Pista", confirm=True).code for n in range(10)]

    with audit(cluster) as store:
        rows = wait_until(lambda: settled(store, codes), timeout=15, what="20 confirmations sent")
        assert len(store.outbox()) == 20
    wait_until(lambda: len(smtp.inbox.copies()) == 20, timeout=5, what="20 distinct mails")
    copies = smtp.inbox.copies()
    assert copies == Counter({row.id: 1 for row in rows}), f"duplicates: {[i for i, n in copies.items() if n > 1]}"


def test_mail_waits_out_an_smtp_outage_and_a_crash_then_goes_once(cluster_factory, smtp_servers) -> None:
    smtp = smtp_servers()  # its port is chosen, nothing listens there yet
    cluster = cluster_factory(servers=1, extra=smtp.args)
    with client_for(*cluster.server_addresses()) as client:
        codes = [client.reserve(1, 1, f"Dora {n}", f"dora{n}@example.com", sector="Pista", confirm=True).code for n in range(3)]

    with audit(cluster) as store:

        def retried_twice() -> tuple[OutboxMessage, ...] | None:
            rows = store.outbox()
            return rows if len(rows) == 3 and all(r.status == "pending" and r.attempts >= 2 for r in rows) else None

        retried = wait_until(retried_twice, timeout=15, what="three messages retried twice")
        assert sorted(row.code for row in retried) == sorted(codes)
        [server] = cluster.servers.values()
        server.kill()
        assert smtp.inbox.received == []

        smtp.start()
        cluster.start_server(None, *smtp.args)
        rows = wait_until(lambda: settled(store, codes), timeout=20, what="the three messages sent after the restart")
    assert smtp.inbox.copies() == Counter({row.id: 1 for row in rows})


def test_without_smtp_mail_goes_to_the_log_and_no_secret_does(cluster_factory) -> None:
    cluster = cluster_factory(servers=1, extra=("--log-level", "DEBUG", "--smtp-password", SMTP_PASSWORD))
    with client_for(*cluster.server_addresses()) as client:
        sale = client.reserve(1, 1, "Eva Reis", "eva@example.com", sector=VIP, confirm=True)

    with audit(cluster) as store:
        [row] = wait_until(lambda: [r for r in rows_of(store, sale.code) if r.status == "logged"], timeout=10, what="the mail logged")
    [server] = cluster.servers.values()
    line = wait_until(lambda: next((x for x in server.output().splitlines() if f"[outbox {row.id}]" in x), None), what="the log line")
    assert f"mail to eva@example.com: {letters.compose(row).subject} [outbox {row.id}]" in line
    wait_until(lambda: "Total: R$ 680,00" in server.output(), what="the body at DEBUG")
    assert ADMIN_TOKEN not in server.output()
    assert SMTP_PASSWORD not in server.output()


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_smtp_login_with_the_password_from_the_environment_never_logs_it(cluster_factory, smtp_servers, monkeypatch) -> None:
    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        wanted = (SMTP_USER.encode(), SMTP_PASSWORD.encode())
        return AuthResult(success=isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == wanted)

    smtp = smtp_servers(authenticator=authenticator, auth_required=True, auth_require_tls=False).start()
    monkeypatch.setenv("BILHETERIA_SMTP_PASSWORD", SMTP_PASSWORD)
    cluster = cluster_factory(servers=1, extra=(*smtp.args, "--smtp-user", SMTP_USER, "--log-level", "DEBUG"))
    with client_for(*cluster.server_addresses()) as client:
        sale = client.reserve(1, 1, "Fábio Reis", "fabio@example.com", sector=VIP, confirm=True)

    with audit(cluster) as store:
        wait_until(lambda: settled(store, [sale.code]), timeout=10, what="the mail sent after logging in")
    assert [mail.rcpt_tos for mail in smtp.inbox.received] == [("fabio@example.com",)]
    [server] = cluster.servers.values()
    assert SMTP_PASSWORD not in server.output()
