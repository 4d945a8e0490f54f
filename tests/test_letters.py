"""The words of the mail (service/letters.py): composed at send time from the facts the outbox kept, the
same words the store used to write; a row from before the facts were kept is sent as it was stored."""

from __future__ import annotations

import logging
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from database import Store
from service import letters
from service.mailer import Mailer
from storage import schema

NOW = 1_800_000_000.0


def test_a_confirmation_is_worded_from_its_facts(tmp_path: Path) -> None:
    store = Store(tmp_path / "t.db", clock=lambda: NOW)
    try:
        sale = store.reserve(2, 2, "Bia Çé", "bia@example.com", sector="Plateia", category="half", confirm=True)
        [message] = store.outbox()
        assert (message.subject, message.body) == ("", ""), "the store keeps the facts, not the words"
        letter = letters.compose(message)
        assert letter.subject == f"Your tickets for Bachianas Brasileiras - {sale.code}"
        assert letter.body == "\n".join((
            "Hello Bia Çé,",
            "",
            "your purchase is confirmed.",
            "",
            f"Reservation: {sale.code}",
            "Event: Bachianas Brasileiras",
            "Venue: Sala São Paulo, São Paulo",
            "Starts: 2027-04-02T21:00:00-03:00",
            f"Sector: Plateia, seats {' '.join(sale.seats)}",
            "Tickets: 2 x R$ 45,00 (half price)",
            "Total: R$ 90,00",
            "",
            "bilheteria",
        ))
    finally:
        store.close()


def test_the_facts_are_frozen_when_the_change_is_made(tmp_path: Path) -> None:
    store = Store(tmp_path / "t.db", clock=lambda: NOW)
    try:
        store.reserve(3, 1, "Caio", "caio@example.com", confirm=True)
        store.update_event(3, name="Stand-up: Outra Noite")
        [message] = store.outbox()
        assert "Stand-up: Noite de Estreia" in letters.compose(message).subject
    finally:
        store.close()


def test_a_message_written_before_the_facts_were_kept_is_sent_as_stored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "old.db"
    with closing(sqlite3.connect(path)) as old, old:
        for migration in schema.MIGRATIONS[:4]:
            old.executescript(migration)
        old.execute(
            "INSERT INTO outbox (created_at, kind, recipient, subject, body, code, next_attempt_at) "
            "VALUES (?, 'confirmed', 'ana@example.com', 'Your tickets for Old Show - AAA-BBB', 'Hello Ana,\n\nold words', 'AAA-BBB', ?)",
            (NOW, NOW),
        )
        old.execute("PRAGMA user_version = 4")
    store = Store(path, clock=lambda: NOW)
    try:
        [message] = store.outbox()
        assert letters.compose(message) == ("Your tickets for Old Show - AAA-BBB", "Hello Ana,\n\nold words")
        caplog.set_level(logging.DEBUG, logger="bilheteria.service.mailer")
        assert Mailer(store, None, worker="w1").deliver_once() == 1
        lines = [record.getMessage() for record in caplog.records if record.name == "bilheteria.service.mailer"]
        assert f"mail to ana@example.com: Your tickets for Old Show - AAA-BBB [outbox {message.id}]" in lines
        assert f"outbox {message.id} body:\nHello Ana,\n\nold words" in lines
    finally:
        store.close()
