"""The terminal as its users drive it: a script through subcommands and --json, a clerk through the counter app in
a pseudo-terminal, an operator through `demo`. Real name server and ticket servers; nothing mocked."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pexpect
import pytest
from conftest import ADMIN_TOKEN
from procs import ROOT, PseudoTerminal, free_port, start, wait_until

from cli import main, parse_half_limit, parse_sector, parse_sector_number
from client_core import TicketClient, format_money
from terminal.widgets import bar_cells

CODE = re.compile(r"\b[A-Z0-9]{3}-[A-Z0-9]{3}\b")
CLEAN_ENV = {key: value for key, value in os.environ.items() if not key.startswith("BILHETERIA_")}


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python cli.py ARGS` as a script would run it, without any BILHETERIA_* setting leaking in."""
    result = subprocess.run(
        [sys.executable, "cli.py", *args], check=False, cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**CLEAN_ENV, "COLUMNS": "200", **(env or {})},
    )
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    return result


def run_json(cluster: Any, *args: str, env: dict[str, str] | None = None) -> tuple[int, Any]:
    result = run_cli("--name-server", cluster.name_server_address, "--json", *args, env=env)
    return result.returncode, json.loads(result.stdout)


def create_event(cluster: Any, capacity: int, *extra: str) -> int:
    code, event = run_json(cluster, "create-event", "--token", ADMIN_TOKEN, "--name", f"Sessão de {capacity}", "--venue", "Sala",
                           "--starts-at", "2027-05-01T20:00:00-03:00", "--sector", f"Geral:1500:{capacity}", *extra)
    assert code == 0, event
    return event["id"]


@pytest.mark.parametrize(("cents", "text"), [
    (0, "R$ 0,00"), (5, "R$ 0,05"), (68000, "R$ 680,00"), (123450, "R$ 1.234,50"), (100000000, "R$ 1.000.000,00"),
    (-150, "-R$ 1,50"),
])
def test_money_is_shown_as_brl(cents: int, text: str) -> None:
    assert format_money(cents) == text


def test_sector_text_is_parsed_from_the_right() -> None:
    assert parse_sector(" Pista:25000:300 ") == ("Pista", 25000, 300)
    assert parse_sector("Área 1: Frente:100:2") == ("Área 1: Frente", 100, 2)
    with pytest.raises(ValueError, match="NAME:PRICE_CENTS:CAPACITY"):
        parse_sector("Pista:caro:300")


def test_admin_sector_settings_are_parsed_from_the_right() -> None:
    assert parse_sector_number(" VIP=80 ") == ("VIP", 80)
    assert parse_sector_number("Área A=B=3") == ("Área A=B", 3)
    assert parse_half_limit("VIP=10") == ("VIP", 10)
    assert parse_half_limit("VIP=None") == ("VIP", None)
    for text, complaint in (("VIP", "is not SECTOR=N"), ("VIP=lots", "is not SECTOR=N"), ("=3", "names no sector")):
        with pytest.raises(ValueError, match=complaint):
            parse_sector_number(text)
    with pytest.raises(ValueError, match="SECTOR=N or SECTOR=none"):
        parse_half_limit("VIP=nenhum")


@pytest.mark.parametrize(("counts", "cells"), [
    ((5, 0, 45), [3, 0, 27]), ((0, 4, 296), [0, 1, 29]), ((1, 1, 1), [10, 10, 10]), ((1, 0, 10**6), [1, 0, 29]),
    ((0, 0, 0), [0, 0, 0]), ((2, 1, 0), [20, 10, 0]),
])
def test_the_dashboard_bar_splits_its_width_in_proportion(counts: tuple[int, int, int], cells: list[int]) -> None:
    assert bar_cells(counts, 30) == cells


def test_events_lists_the_demo_catalogue(cluster) -> None:
    code, events = run_json(cluster, "events")
    assert code == 0
    assert [event["id"] for event in events] == [1, 2, 3]
    vip = next(sector for sector in events[0]["sectors"] if sector["name"] == "VIP")
    assert vip == {
        "name": "VIP", "price_cents": 68000, "capacity": 50, "available": 50, "half_limit": None, "rows": 0, "seats_per_row": 0,
    }
    human = run_cli("events", "--name-server", cluster.name_server_address)
    assert human.returncode == 0
    assert "Bachianas Brasileiras" in human.stdout and "R$ 680,00" in human.stdout


def test_reserve_confirm_show_cancel(cluster) -> None:
    who = ("--name", "Ana Souza", "--email", "ana@example.com")
    code, held = run_json(cluster, "reserve", "1", "2", "--sector", "VIP", "--category", "half", *who)
    assert code == 0, held
    assert (held["status"], held["unit_price_cents"], held["total_cents"], held["quantity"]) == ("held", 34000, 68000, 2)
    assert held["expires_at"] and CODE.fullmatch(held["code"])
    email = ("--email", "ana@example.com")

    code, confirmed = run_json(cluster, "confirm", held["code"], *email)
    assert (code, confirmed["status"], confirmed["expires_at"], confirmed["code"]) == (0, "confirmed", None, held["code"])
    code, shown = run_json(cluster, "show", held["code"], *email)
    assert (code, shown["status"], shown["total_cents"]) == (0, "confirmed", 68000)
    human = run_cli("--name-server", cluster.name_server_address, "show", held["code"], *email)
    assert human.returncode == 0 and held["code"] in human.stdout and "R$ 680,00" in human.stdout

    code, cancelled = run_json(cluster, "cancel", held["code"], *email)
    assert (code, cancelled["status"]) == (0, "cancelled")
    code, bought = run_json(cluster, "reserve", "1", "1", "--sector", "VIP", "--confirm", *who)
    assert (code, bought["status"], bought["total_cents"], bought["expires_at"]) == (0, "confirmed", 68000, None)
    _, events = run_json(cluster, "events")
    assert next(s for s in events[0]["sectors"] if s["name"] == "VIP")["available"] == 49


def test_refusals_exit_1_with_the_error_class(cluster) -> None:
    event_id = create_event(cluster, 1)
    who = ("--name", "Bia", "--email", "bia@example.com")
    code, error = run_json(cluster, "reserve", str(event_id), "2", *who)
    assert code == 1 and error["error"] == "SoldOut" and "1" in error["message"]
    code, error = run_json(cluster, "show", "ZZZ-ZZZ", "--email", "bia@example.com")
    assert (code, error["error"]) == (1, "NotFound")
    human = run_cli("--name-server", cluster.name_server_address, "cancel", "ZZZ-ZZZ", "--email", "bia@example.com")
    assert human.returncode == 1
    assert "Refused (NotFound)" in human.stderr and human.stdout == ""


def test_create_event_needs_the_right_token(cluster) -> None:
    code, error = run_json(cluster, "create-event", "--token", "not-the-token", "--name", "X", "--venue", "Y",
                           "--starts-at", "2027-05-01T20:00:00-03:00", "--sector", "Geral:1000:10")
    assert (code, error["error"]) == (1, "Forbidden")
    code, event = run_json(cluster, "create-event", "--name", "Festa", "--venue", "Praça", "--starts-at", "2027-06-01T18:00:00-03:00",
                           "--sector", "Pista:5000:100", "--sector", "Camarote:15000:20", env={"BILHETERIA_ADMIN_TOKEN": ADMIN_TOKEN})
    assert code == 0, event
    assert (event["id"], event["status"]) == (4, "on_sale")
    assert [(s["name"], s["price_cents"], s["capacity"], s["available"]) for s in event["sectors"]] == [
        ("Pista", 5000, 100, 100), ("Camarote", 15000, 20, 20)]
    _, events = run_json(cluster, "events")
    assert [e["name"] for e in events if e["id"] == 4] == ["Festa"]


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Argument parsing, run in this process: the same parser and exits as the program, without an interpreter's
    start-up for each case (the other tests run the real program)."""
    for name in [key for key in os.environ if key.startswith("BILHETERIA_")]:
        monkeypatch.delenv(name)
    for args in (["reserve", "1"], ["reserve", "one", "2", "--name", "A", "--email", "a@b.co"], ["--server", "nonsense", "events"],
                 ["create-event", "--name", "A", "--venue", "B", "--starts-at", "2027-01-01T00:00:00", "--sector", "Geral:1000:10"],
                 ["swarm", "--event", "1", "--clients", "0"], ["events", "--timeout", "soon"], ["admin"],
                 ["admin", "update", "1", "--token", "t", "--capacity", "VIP"], ["admin", "update", "1", "--token", "t"],
                 ["admin", "dashboard", "--once", "--seconds", "3", "--token", "t"],
                 ["admin", "dashboard", "--seconds", "0", "--token", "t"],
                 ["admin", "ledger", "--since", "x", "--token", "t"], ["admin", "pause", "--token", "t"]):
        with pytest.raises(SystemExit) as exit_info:
            main(list(args))
        captured = capsys.readouterr()
        assert exit_info.value.code == 2, (args, captured.out, captured.err)
        assert "usage:" in captured.err


def test_a_timeout_that_is_not_above_zero_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    for timeout in ("0", "-1", "nan"):
        with pytest.raises(SystemExit) as exit_info:
            main(["--timeout", timeout, "events"])
        captured = capsys.readouterr()
        assert exit_info.value.code == 2, (timeout, captured.err)
        assert f"--timeout: expected a number of seconds above 0, got '{timeout}'" in captured.err


def test_no_server_answering_exits_3_without_a_traceback() -> None:
    closed = f"127.0.0.1:{free_port()}"
    result = run_cli("--server", closed, "--timeout", "1", "--json", "events")
    assert result.returncode == 3
    error = json.loads(result.stdout)
    assert error["error"] == "Unavailable" and "No ticket server answered" in error["message"] and closed in error["breakers"]
    human = run_cli("--server", closed, "--timeout", "1", "status")
    assert human.returncode == 3
    assert "No ticket server answered" in human.stderr and f"Breakers: {closed}" in human.stderr


def test_swarm_sells_every_ticket_exactly_once(cluster) -> None:
    event_id = create_event(cluster, 25)
    code, summary = run_json(cluster, "swarm", "--clients", "16", "--event", str(event_id))
    assert code == 0, summary
    assert (summary["sold"], summary["reservations"], summary["consistent"], summary["violations"]) == (25, 25, True, [])
    assert summary["sold_out"] == 16 and summary["verified_confirmed"] == 25 and summary["available_after"] == 0

    event_id = create_event(cluster, 30)
    code, summary = run_json(cluster, "swarm", "--clients", "6", "--processes", "2", "--quantity", "2", "--hold",
                             "--event", str(event_id))
    assert code == 0, summary
    assert (summary["sold"], summary["reservations"], summary["mode"], summary["consistent"]) == (30, 15, "hold", True)
    with TicketClient([cluster.name_server_address]) as client:
        assert [s.available for s in client.get_event(event_id).sectors] == [0]


def test_the_counter_app_starts_and_quits_cleanly_in_a_real_terminal(cluster) -> None:
    """In a pseudo-terminal of 80x24, in Portuguese: Ctrl-C asks before quitting, and s (sim) quits with 0.
    Everything the app does is tests/test_app.py's; this is the one check that it owns a real terminal and gives it back."""
    env = {**CLEAN_ENV, "TERM": "xterm-256color", "LANG": "pt_BR.UTF-8"}
    with PseudoTerminal(["cli.py", "--name-server", cluster.name_server_address], env, dimensions=(24, 80)) as pty:
        app = pty.child
        app.expect("Bachianas Brasileiras")
        app.expect("R\\$.90,00")
        app.sendcontrol("c")
        app.expect("Sair do balcão\\?")
        app.send("s")
        app.expect(pexpect.EOF)
    assert app.exitstatus == 0, pty.screen
    assert "Traceback" not in pty.screen


def test_demo_starts_everything_and_stops_it_on_sigterm(tmp_path: Path) -> None:
    busy = socket.create_server(("127.0.0.1", 0))
    busy_port = busy.getsockname()[1]
    data = tmp_path / "data"
    try:
        demo = start("demo", ["cli.py", "demo", "--no-interactive", "--data", str(data), "--ns-port", str(busy_port),
                              "--port-base", str(free_port()), "--servers", "2"], ready="Demo ready", env={"COLUMNS": "300"}, timeout=40)
    finally:
        busy.close()
    try:
        output = demo.output()
        assert f"Port {busy_port} is busy" in output
        name_server = re.search(r"Demo ready: name server (127\.0\.0\.1:\d+)", output).group(1)
        assert name_server != f"127.0.0.1:{busy_port}"
        pids = [int(pid) for pid in re.findall(r"pid (\d+)", output)]
        assert len(pids) == 3
        with TicketClient([name_server], timeout=5, cafile=str(data / "pki" / "ca.pem")) as client:
            assert [event.id for event in client.list_events()] == [1, 2, 3]
            assert len(client.known_servers()) == 2
        assert "Name server listening on" in (data / "name-server.log").read_text()
        assert (data / "tickets.db.admin-token").exists() and f"{data / 'tickets.db.admin-token'}" in output
        ports = [int(port) for port in re.findall(r"127\.0\.0\.1:(\d+)  pid", output)]
    finally:
        code = demo.stop(timeout=30)
    assert code == 0, demo.output()
    assert "Demo stopped" in demo.output() and "Traceback" not in demo.output()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    for port in ports:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_ctrl_c_in_the_demo_also_stops_the_children(tmp_path: Path) -> None:
    demo = start("demo", ["cli.py", "demo", "--no-interactive", "--data", str(tmp_path), "--ns-port", str(free_port()),
                          "--port-base", str(free_port()), "--servers", "1"], ready="Demo ready", timeout=40)
    pids = [int(pid) for pid in re.findall(r"pid (\d+)", demo.output())]
    demo.signal(signal.SIGINT)
    assert demo.popen.wait(timeout=30) == 0
    wait_until(lambda: "Demo stopped" in demo.output(), timeout=5, what="the goodbye line")
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
