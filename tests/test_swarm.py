"""The swarm without the terminal around it: its report adds up, and its audit notices a sale it did not make.
Real name server and ticket servers; nothing mocked."""

from __future__ import annotations

import threading

from conftest import ADMIN_TOKEN

from client_core import Event, TicketClient
from tools.swarm import SwarmPlan, run_swarm


def plan_for(cluster, event_id: int, **changes: object) -> SwarmPlan:
    settings: dict = {"name_servers": (cluster.name_server_address,), "servers": (), "timeout": 5.0, "event_id": event_id,
                      "quantity": 1, "sector": None, "confirm": True, "max_per_client": None, "clients": 4, "processes": 0}
    return SwarmPlan(**{**settings, **changes})


def new_event(client: TicketClient, sectors: list[tuple[str, int, int]]) -> int:
    return client.create_event(ADMIN_TOKEN, "Ensaio aberto", "Sala", "2027-05-01T20:00:00-03:00", sectors).id


def test_the_report_adds_up_and_the_callbacks_see_the_run(cluster) -> None:
    with TicketClient([cluster.name_server_address]) as client:
        event_id = new_event(client, [("Pista", 1000, 9), ("Camarote", 3000, 5)])
        starts: list[tuple[str, int]] = []
        sales: list[int] = []
        lock = threading.Lock()

        def on_start(event: Event, goal: int) -> None:
            starts.append((event.name, goal))

        def on_sale(quantity: int) -> None:
            with lock:
                sales.append(quantity)

        report = run_swarm(client, plan_for(cluster, event_id, sector="Pista", quantity=2, confirm=False), on_start, on_sale)
        after = client.get_event(event_id)
    assert starts == [("Ensaio aberto", 9)], "the goal is the chosen sector's tickets, not the whole event's"
    assert (report.consistent, report.violations, report.mode) == (True, (), "hold")
    assert (report.sold, report.reservations, sum(sales), len(sales)) == (8, 4, 8, 4)
    assert (report.verified_confirmed, report.available_after, report.taken_before) == (0, 6, 0)
    assert report.sold_out == 4 and report.calls == 8 and report.elapsed_s > 0
    assert [(sector.name, sector.available) for sector in after.sectors] == [("Pista", 1), ("Camarote", 5)]


def test_the_audit_catches_a_ticket_sold_behind_the_swarms_back(cluster) -> None:
    with TicketClient([cluster.name_server_address]) as client, TicketClient([cluster.name_server_address]) as outsider:
        event_id = new_event(client, [("Geral", 1500, 10)])
        lock = threading.Lock()
        sneaked: list[str] = []

        def on_sale(quantity: int) -> None:
            with lock:
                if not sneaked:
                    sneaked.append(outsider.reserve(event_id, 1, "Penetra", "penetra@example.com", confirm=True).code)

        report = run_swarm(client, plan_for(cluster, event_id, clients=2, max_per_client=3), lambda event, goal: None, on_sale)
    assert report.sold == 6 and report.verified_confirmed == 6 and report.available_after == 3
    assert not report.consistent
    assert report.violations == ("the event has 7 fewer tickets available than before the run, but the swarm was given 6",)
