"""Starting the counter app from cli.py or the demo: the language chosen, the app run, its logs kept off the screen.

Textual owns the terminal while the app runs, so nothing may print to it: the product's loggers are sent to a
file beside the other logs (BILHETERIA_TERMINAL_LOG, or none) instead of the screen the clerk works on.
"""

from __future__ import annotations

import logging
import os

from client_core import TicketClient
from terminal.app.counter import CounterApp
from terminal.app.i18n import Words, choose_language

LOG_ENV = "BILHETERIA_TERMINAL_LOG"


def run_counter(client: TicketClient, language: str | None, *, admin_token: str | None = None, demo_processes: int = 0) -> None:
    """Until the clerk quits (and said yes); in the demo (`demo_processes` > 0) quitting says first that it stops them."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if os.environ.get(LOG_ENV):
        logging.basicConfig(filename=os.environ[LOG_ENV], level=logging.INFO)
    else:
        root.addHandler(logging.NullHandler())
    CounterApp(client, Words(choose_language(language)), admin_token=admin_token, demo_processes=demo_processes).run()
