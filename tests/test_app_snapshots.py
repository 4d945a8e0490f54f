"""The counter app's main screens pinned as pictures (pytest-textual-snapshot) at 80x24 and 120x40, in English and
Portuguese, against one real server on a fresh demo catalogue. `pytest --snapshot-update` redraws them after a
change meant to be seen; the report of a failing run shows the old picture beside the new."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest import Cluster
from counter_pilot import until, until_shown
from textual.pilot import Pilot
from textual.widgets import Input

from client_core import TicketClient
from terminal.app.counter import CounterApp
from terminal.app.i18n import LANGUAGES, Words
from terminal.app.seatgrid import SeatGrid

SIZES = ((80, 24), (120, 40))


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TicketClient]:
    """One server for every picture: nothing here sells, so the catalogue stays as the demo seeds it."""
    cluster = Cluster(tmp_path_factory.mktemp("snapshots"))
    cluster.start_name_server()
    cluster.start_server()
    try:
        with TicketClient([cluster.name_server_address], timeout=5) as client:
            yield client
    finally:
        cluster.stop()


async def catalogue(pilot: Pilot[Any]) -> None:
    await until_shown(pilot, "Stand-up")


async def order_form(pilot: Pilot[Any]) -> None:
    await catalogue(pilot)
    await pilot.press("down", "down", "enter")
    await until(pilot, lambda: pilot.app.screen.query(SeatGrid), "the seat map")
    for field, typed in (("quantity", "2"), ("name", "Ana"), ("email", "ana.example")):
        pilot.app.screen.query_one(f"#{field}", Input).value = typed
    pilot.app.screen.query_one("#email", Input).focus()
    await pilot.pause()


async def find(pilot: Pilot[Any]) -> None:
    await catalogue(pilot)
    await pilot.press("f")
    await pilot.pause()


async def quit_question(pilot: Pilot[Any]) -> None:
    await catalogue(pilot)
    await pilot.press("q")
    await pilot.pause()


SCREENS = {"catalogue": catalogue, "order": order_form, "find": find, "quit": quit_question}


@pytest.mark.parametrize("size", SIZES, ids=lambda size: f"{size[0]}x{size[1]}")
@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("screen", sorted(SCREENS))
def test_the_main_screens_look_as_pinned(snap_compare: Any, client: TicketClient, screen: str, language: str,
                                         size: tuple[int, int]) -> None:
    app = CounterApp(client, Words(language), demo_processes=3 if screen == "quit" else 0)
    assert snap_compare(app, terminal_size=size, run_before=SCREENS[screen])
