"""`cli.py web` serves the counter app to a real headless Chromium (Debian's package); a clerk sells through the
page, and the screenshot of the ticket is kept beside the test's files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from browser import Browser, chromium
from conftest import ADMIN_TOKEN
from procs import free_port, start, wait_until

from client_core import TicketClient

pytestmark = pytest.mark.skipif(chromium() is None and not os.environ.get("CI"),
                                reason="no chromium here (apt-get install -y chromium); in CI .ci/run installs it, and it must run")


def test_a_sale_made_through_the_page_in_a_real_browser(cluster, tmp_path: Path) -> None:
    port = free_port()
    web = start("web", ["cli.py", "--name-server", cluster.name_server_address, "web", "--port", str(port)], ready="Serving the counter")
    try:
        with Browser(tmp_path / "profile") as browser:

            def until_shown(text: str, timeout: float = 20) -> None:
                """Until the page has been sent `text`; if never, the test fails with a screenshot of what the page shows."""
                try:
                    wait_until(lambda: browser.shown(text), timeout=timeout, what=repr(text))
                except TimeoutError:
                    browser.screenshot(tmp_path / "stuck.png")
                    raise

            browser.open(f"http://127.0.0.1:{port}/")
            until_shown("Stand-up: Noite de Estreia", timeout=40)
            browser.click(400, 300)
            browser.press("down", "enter")
            until_shown("50 left")  # drawn once the form has put the cursor in its first field
            browser.press("enter")
            browser.type("Wanda Web")
            until_shown("Wanda Web")
            browser.press("enter")
            browser.type("wanda@example.com")
            until_shown("wanda@example.com")
            browser.press("ctrl+s")
            until_shown("left to pay")
            browser.press("enter")
            until_shown("Paid. Code")
            browser.screenshot(tmp_path / "ticket.png")
    finally:
        web.stop()
    assert (tmp_path / "ticket.png").stat().st_size > 10_000
    with TicketClient([cluster.name_server_address]) as client:
        [sold] = client.list_reservations(ADMIN_TOKEN, email="wanda@example.com")
    assert (sold.status, sold.customer, sold.sector, sold.total_cents) == ("confirmed", "Wanda Web", "VIP", 68000)
