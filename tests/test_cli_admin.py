"""The administrator's terminal as it is used: `cli.py admin ...` from scripts (tables, JSON, CSV) and the live
dashboard in a pseudo-terminal while servers die (the counter app's admin screen is tests/test_app.py's). Real
name server and ticket servers; every state is checked through client_core, never through the CLI's own word."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pexpect
import pytest
from conftest import ADMIN_TOKEN
from procs import ROOT, PseudoTerminal
from rich.console import Console

from cli import main
from client_core import NotFound, TicketClient
from records import Event, Reservation, Sector, SectorReport
from terminal.views import events_table, report_table, reservations_table

CLEAN_ENV = {key: value for key, value in os.environ.items() if not key.startswith("BILHETERIA_")}
READING_FROM = r"Reading from (?:\x1b\[[0-9;]*m)*127\.0\.0\.1:{port}\b"
"""The dashboard's header as a pseudo-terminal shows it, colour codes and all."""


def admin(cluster: Any, *args: str, token: str | None = ADMIN_TOKEN, stdin: str = "", env: dict[str, str] | None = None,
          ) -> subprocess.CompletedProcess:
    """`python cli.py admin ARGS --token T` against the cluster, stdin closed after `stdin`, no BILHETERIA_* leaking in."""
    command = [sys.executable, "cli.py", "--name-server", cluster.name_server_address, "admin", *args]
    if token is not None:
        command += ["--token", token]
    result = subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True, timeout=60, input=stdin,
                            env={**CLEAN_ENV, "COLUMNS": "200", **(env or {})})
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    return result


def admin_json(cluster: Any, *args: str, **options: Any) -> tuple[int, Any]:
    result = admin(cluster, *args, "--json", **options)
    return result.returncode, json.loads(result.stdout)


def sell_known_quantities(cluster: Any) -> None:
    """Event 1 VIP (R$ 680,00): 2 full and 3 half sold; Pista: 4 held, not sold."""
    with TicketClient([cluster.name_server_address]) as client:
        client.reserve(1, 2, "Ana", "ana@example.com", sector="VIP", confirm=True)
        client.reserve(1, 3, "Bia", "bia@example.com", sector="VIP", category="half", confirm=True)
        client.reserve(1, 4, "Caio", "caio@example.com", sector="Pista")


def test_report_gives_exact_sales_as_json_table_and_csv(cluster, tmp_path: Path) -> None:
    sell_known_quantities(cluster)
    code, rows = admin_json(cluster, "report")
    assert code == 0, rows
    by_sector = {(row["event_id"], row["sector"]): row for row in rows}
    assert set(by_sector) == {(1, "Pista"), (1, "VIP"), (2, "Plateia"), (2, "Camarote"), (3, "Geral")}
    vip = by_sector[1, "VIP"]
    assert {key: vip[key] for key in ("capacity", "held", "sold", "available", "sold_full", "sold_half", "revenue_full_cents",
                                      "revenue_half_cents", "revenue_cents", "sold_last_minute")} == {
        "capacity": 50, "held": 0, "sold": 5, "available": 45, "sold_full": 2, "sold_half": 3, "revenue_full_cents": 136000,
        "revenue_half_cents": 102000, "revenue_cents": 238000, "sold_last_minute": 5}
    pista = by_sector[1, "Pista"]
    assert (pista["held"], pista["sold"], pista["available"], pista["revenue_cents"]) == (4, 0, 296, 0)

    spreadsheet = tmp_path / "report.csv"
    human = admin(cluster, "report", "--csv", str(spreadsheet))
    assert human.returncode == 0, human.stderr
    assert f"CSV written to {spreadsheet}" in human.stderr
    vip_line = next(line for line in human.stdout.splitlines() if "│ VIP " in line)
    assert re.search(r"50 │\s+0 │\s+5 │\s+45 │\s+2 │\s+3 │\s+R\$ 1\.360,00 │\s+R\$ 1\.020,00 │\s+R\$ 2\.380,00 │", vip_line), vip_line
    total_line = next(line for line in human.stdout.splitlines() if "Total" in line)
    assert re.search(r"580 │\s+4 │\s+5 │\s+571 │.*R\$ 2\.380,00 │", total_line), total_line
    with spreadsheet.open(newline="", encoding="utf-8") as file:
        table = list(csv.DictReader(file))
    assert [(row["event_id"], row["sector"]) for row in table] == [("1", "Pista"), ("1", "VIP"), ("2", "Plateia"), ("2", "Camarote"),
                                                                 ("3", "Geral")]
    vip_row = table[1]
    assert {key: vip_row[key] for key in ("price", "price_cents", "sold", "sold_full", "sold_half", "revenue_full", "revenue_half",
                                          "revenue_total", "revenue_total_cents", "held", "available")} == {
        "price": "680.00", "price_cents": "68000", "sold": "5", "sold_full": "2", "sold_half": "3", "revenue_full": "1360.00",
        "revenue_half": "1020.00", "revenue_total": "2380.00", "revenue_total_cents": "238000", "held": "0", "available": "45"}
    assert (table[0]["held"], table[0]["revenue_total"]) == ("4", "0.00")


def test_ledger_since_filters_by_sequence_and_csv_parses(cluster, tmp_path: Path) -> None:
    sell_known_quantities(cluster)
    code, everything = admin_json(cluster, "ledger")
    assert code == 0, everything
    seqs = [entry["seq"] for entry in everything]
    assert seqs == sorted(seqs) and len(seqs) >= 8
    assert [entry["action"] for entry in everything[-3:]] == ["sell", "sell", "hold"]
    cut = seqs[-3]
    code, later = admin_json(cluster, "ledger", "--since", str(cut))
    assert code == 0
    assert later == everything[-2:]
    assert set(later[0]) == {"seq", "at", "action", "code", "event_id", "sector", "quantity", "detail"}

    spreadsheet = tmp_path / "ledger.csv"
    human = admin(cluster, "ledger", "--since", str(cut), "--csv", str(spreadsheet))
    assert human.returncode == 0, human.stderr
    assert later[0]["code"] in human.stdout and f"CSV written to {spreadsheet}" in human.stderr
    with spreadsheet.open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert [(int(row["seq"]), row["action"], row["code"], row["sector"], int(row["quantity"])) for row in rows] == [
        (entry["seq"], entry["action"], entry["code"], entry["sector"], entry["quantity"]) for entry in later]

    empty = tmp_path / "empty.csv"
    assert admin(cluster, "ledger", "--since", str(seqs[-1]), "--csv", str(empty)).returncode == 0
    assert empty.read_text(encoding="utf-8").splitlines() == ["seq,at,action,code,event_id,sector,quantity,detail"]
    unwritable = admin(cluster, "report", "--csv", str(tmp_path / "no-such-dir" / "r.csv"))
    assert unwritable.returncode == 2 and "Cannot write" in unwritable.stderr


@pytest.fixture
def admin_here(
    cluster: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., subprocess.CompletedProcess]:
    """`admin` run in this process: the same parser, calls, prompts and exit codes as the program, without an
    interpreter's start-up for each of the dozens of calls below (the other tests run the real program)."""
    for name in [key for key in os.environ if key.startswith("BILHETERIA_")]:
        monkeypatch.delenv(name)

    def run(*args: str, token: str | None = ADMIN_TOKEN, stdin: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        argv = ["--name-server", cluster.name_server_address, "admin", *args, *(("--token", token) if token is not None else ())]
        with monkeypatch.context() as patch:
            for name, value in {"COLUMNS": "200", **(env or {})}.items():
                patch.setenv(name, value)
            patch.setattr(sys, "stdin", io.StringIO(stdin))
            try:
                code = main(argv)
            except SystemExit as exc:
                code = exc.code
        captured = capsys.readouterr()
        assert "Traceback" not in captured.out + captured.err, captured.out + captured.err
        return subprocess.CompletedProcess(argv, code, captured.out, captured.err)

    return run


def test_every_admin_action_needs_the_right_token(cluster, admin_here) -> None:
    def admin(cluster: Any, *args: str, **options: Any) -> subprocess.CompletedProcess:
        return admin_here(*args, **options)

    def admin_json(cluster: Any, *args: str, **options: Any) -> tuple[int, Any]:
        result = admin_here(*args, "--json", **options)
        return result.returncode, json.loads(result.stdout)

    client = TicketClient([cluster.name_server_address])
    event = client.create_event(ADMIN_TOKEN, "Ensaio Aberto", "Teatro", "2027-05-01T20:00:00-03:00", [("Geral", 5000, 100)])
    spare = client.create_event(ADMIN_TOKEN, "Sessão Extra", "Teatro", "2027-05-02T20:00:00-03:00", [("Geral", 5000, 10)])
    held = client.reserve(event.id, 2, "Davi", "davi@example.com")
    e, s = str(event.id), str(spare.id)
    changes = [
        ("update", e, "--name", "Ensaio Geral", "--capacity", "Geral=120", "--half-limit", "Geral=10"),
        ("add-sector", e, "--name", "Camarote", "--price-cents", "9000", "--capacity", "20", "--half-limit", "5"),
        ("pause", e),
        ("resume", e),
        ("cancel", e, "--yes"),
        ("delete", s),
    ]
    readings = [("reservations", "--event", e), ("report",), ("ledger",), ("dashboard", "--once")]
    for args in changes + readings:
        before = (client.get_event(event.id), client.get_event(spare.id))
        code, error = admin_json(cluster, *args, token="not-the-token") if args[0] != "dashboard" else (None, None)
        if args[0] == "dashboard":
            wrong = admin(cluster, *args, token="not-the-token")
            assert wrong.returncode == 1 and "Forbidden" in wrong.stderr, args
        else:
            assert (code, error["error"]) == (1, "Forbidden"), args
        assert (client.get_event(event.id), client.get_event(spare.id)) == before, args
        missing = admin(cluster, *args, token=None)
        assert missing.returncode == 2 and "needs --token" in missing.stderr, args

    code, updated = admin_json(cluster, *changes[0])
    assert code == 0, updated
    geral = client.get_event(event.id).sector("Geral")
    assert (client.get_event(event.id).name, geral.capacity, geral.available, geral.half_limit) == ("Ensaio Geral", 120, 118, 10)
    assert updated["name"] == "Ensaio Geral"
    code, _ = admin_json(cluster, "update", e, "--half-limit", "Geral=none", env={"BILHETERIA_ADMIN_TOKEN": ADMIN_TOKEN}, token=None)
    assert code == 0 and client.get_event(event.id).sector("Geral").half_limit is None
    assert admin(cluster, "update", e).returncode == 2

    assert admin(cluster, *changes[1]).returncode == 0
    camarote = client.get_event(event.id).sector("Camarote")
    assert (camarote.price_cents, camarote.capacity, camarote.half_limit) == (9000, 20, 5)
    code, error = admin_json(cluster, *changes[1])
    assert (code, error["error"]) == (1, "InvalidRequest") and "already has a sector" in error["message"]

    assert admin(cluster, "pause", e).returncode == 0 and client.get_event(event.id).status == "paused"
    code, error = admin_json(cluster, "pause", "999")
    assert (code, error["error"]) == (1, "NotFound")
    assert admin(cluster, "resume", e).returncode == 0 and client.get_event(event.id).status == "on_sale"

    code, found = admin_json(cluster, "reservations", "--event", e, "--email", "DAVI@example.com", "--status", "held")
    assert code == 0 and [(r["code"], r["quantity"], r["status"]) for r in found] == [(held.code, 2, "held")]
    code, error = admin_json(cluster, "reservations", "--status", "lost")
    assert (code, error["error"]) == (1, "InvalidRequest")

    declined = admin(cluster, "cancel", e, stdin="n\n")
    assert declined.returncode == 1 and "not cancelled" in declined.stderr and client.get_event(event.id).status == "on_sale"
    unanswered = admin(cluster, "cancel", e)
    assert unanswered.returncode == 1 and client.get_event(event.id).status == "on_sale"
    cancelled = admin(cluster, "cancel", e, stdin="y\n")
    assert cancelled.returncode == 0, cancelled.stderr
    assert "1 reservation cancelled" in cancelled.stdout and "Ensaio Geral?" in cancelled.stderr
    assert client.get_event(event.id).status == "cancelled"
    assert client.get_reservation(held.code, "davi@example.com").status == "cancelled"
    code, again = admin_json(cluster, *changes[4])
    assert code == 0 and (again["event"]["status"], again["cancelled_reservations"]) == ("cancelled", 0)

    code, error = admin_json(cluster, "delete", e)
    assert (code, error["error"]) == (1, "InvalidRequest")
    code, deleted = admin_json(cluster, *changes[5])
    assert (code, deleted) == (0, {"deleted": spare.id})
    with pytest.raises(NotFound):
        client.get_event(spare.id)
    client.close()


def test_dashboard_once_shows_every_sector_with_its_numbers(cluster) -> None:
    sell_known_quantities(cluster)
    result = admin(cluster, "dashboard", "--once")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert re.match(r"bilheteria dashboard\s+Reading from 127\.0\.0\.1:\d+\s+Breakers: 127\.0\.0\.1:\d+ closed", lines[0]), lines[0]
    expected = {  # sector: (bar, sold, held, free, revenue, sold in the last minute)
        "Pista": ("▒" + "░" * 29, 0, 4, 296, "R$ 0,00", 0),
        "VIP": ("█" * 3 + "░" * 27, 5, 0, 45, "R$ 2.380,00", 5),
        "Plateia": ("░" * 30, 0, 0, 120, "R$ 0,00", 0),
        "Camarote": ("░" * 30, 0, 0, 30, "R$ 0,00", 0),
        "Geral": ("░" * 30, 0, 0, 80, "R$ 0,00", 0),
    }
    for sector, (bar, sold, held, free, revenue, recent) in expected.items():
        row = re.compile(rf"│ {sector}\s+│ {bar} │\s+{sold} │\s+{held} │\s+{free} │\s+{re.escape(revenue)} │\s+{recent}$")
        assert any(row.search(line) for line in lines), (sector, result.stdout)
    assert any(re.search(r"^Total\s.*│\s+5 │\s+4 │\s+571 │ R\$ 2\.380,00 │\s+5$", line) for line in lines), result.stdout
    assert "Noite de Abertura - Rock na Praia" in result.stdout and "Stand-up: Noite de Estreia" in result.stdout
    as_json = admin(cluster, "dashboard", "--once", "--json")
    assert as_json.returncode == 2 and "admin report --json" in as_json.stderr


def test_dashboard_keeps_rendering_while_servers_die_and_return(cluster) -> None:
    dashboard_args = ["cli.py", "--name-server", cluster.name_server_address, "--timeout", "1", "admin", "dashboard", "--seconds", "9",
                      "--token", ADMIN_TOKEN]
    with PseudoTerminal(dashboard_args, {**CLEAN_ENV, "TERM": "xterm"}, timeout=30, dimensions=(40, 200)) as pty:
        dashboard = pty.child
        dashboard.expect(READING_FROM.format(port=r"(\d+)"))
        first = int(dashboard.match.group(1))
        cluster.servers[first].kill()
        (second,) = (port for port in cluster.servers if port != first)
        dashboard.expect(READING_FROM.format(port=second))
        cluster.servers[second].kill()
        dashboard.expect("Unavailable: No ticket server answered")
        third = cluster.start_server()
        third_port = int(third.wait_for_line("listening on").rpartition(":")[2])
        dashboard.expect(READING_FROM.format(port=third_port))
        dashboard.expect(pexpect.EOF)
    screen = pty.screen
    assert dashboard.exitstatus == 0, screen
    assert "Traceback" not in screen
    assert "R$ 0,00" in screen and "Bachianas Brasileiras" in screen


def test_the_report_at_80_columns_stacks_instead_of_losing_columns_or_cutting_money() -> None:
    row = SectorReport(event_id=1, event_name="Noite de Abertura - Rock na Praia", event_status="on_sale", sector="Camarote VIP",
                       price_cents=68000, capacity=50, available=46, held=0, sold=4, sold_full=4, sold_half=0,
                       revenue_full_cents=272000, revenue_half_cents=0, sold_last_minute=0, half_limit=None)
    for width in (80, 200):
        console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
        console.print(report_table([row]))
        shown = console.export_text()
        assert "Noite de Abertura - Rock na Praia" in shown and "Camarote VIP" in shown, shown
        assert "R$ 2.720,00" in shown and "…" not in shown, shown
        assert ("┃" in shown) == (width == 200), "the table is drawn whole only where it fits"


def test_events_and_reservations_at_80_columns_keep_every_field_and_whole_money() -> None:
    event = Event(1, "Noite de Abertura - Rock na Praia", "Arena Copacabana, Rio de Janeiro", "2027-03-13T20:00:00-03:00", "on_sale",
                  (Sector("Pista", 25000, 300, 300), Sector("Camarote VIP", 272000, 50, 46)))
    held = Reservation("K7Q-2M9", 1, "Camarote VIP", 4, "Ana Souza", "ana@example.com", "full", 272000, 1088000, "held",
                       "2027-03-01T10:00:00+00:00", "2027-03-01T10:10:00+00:00")
    for renderable, wanted in ((events_table([event]), ("Arena Copacabana, Rio de Janeiro", "13/03/2027 20:00", "R$ 2.720,00")),
                               (reservations_table([held]), ("K7Q-2M9", "Camarote VIP", "ana@example.com", "R$ 10.880,00"))):
        console = Console(width=80, record=True, file=io.StringIO(), color_system=None)
        console.print(renderable)
        shown = console.export_text()
        assert all(text in shown for text in wanted) and "…" not in shown, shown
