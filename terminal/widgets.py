"""The small pieces every screen of the terminal is built from: a status in its colour, a time for a human,
a count with its noun, the breakers line, the cells of a bar, money as a spreadsheet reads it.

They live apart from the screens (views, dashboard, watch) so that each screen imports its pieces from
here instead of from another screen: the dashboard and the status view show the breakers the same way
because they draw them with the same function, and no screen depends on another to get it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from rich.console import Console, ConsoleOptions, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

STATUS_STYLES = {
    "on_sale": "green",
    "paused": "yellow",
    "cancelled": "red",
    "held": "yellow",
    "confirmed": "bold green",
    "expired": "red",
    "waiting": "yellow",
    "offered": "bold green",
    "accepted": "green",
    "lapsed": "red",
    "left": "dim",
}
BREAKER_STYLES = {"closed": "green", "half-open": "yellow", "open": "bold red"}


def styled(value: str) -> Text:
    """An event, reservation or waitlist status in its colour."""
    return Text(value, style=STATUS_STYLES.get(value, ""))


def format_time(text: str | None, local: bool = True) -> str:
    """A server timestamp for a human: holds in the clerk's local time, event starts in the venue's own."""
    if not text:
        return "-"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text
    return (moment.astimezone() if local else moment).strftime("%d/%m/%Y %H:%M:%S" if local else "%d/%m/%Y %H:%M")


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def breakers_text(states: Mapping[str, str]) -> Text:
    """This terminal's circuit breakers, one per server it has tried, coloured by state."""
    if not states:
        return Text("no server contacted yet", style="dim")
    return Text(", ").join(Text(f"{server} {state}", style=BREAKER_STYLES.get(state, "")) for server, state in sorted(states.items()))


def bar_cells(counts: Sequence[int], width: int) -> list[int]:
    """Split `width` cells between `counts` in proportion (largest remainder, so they always add up to `width`);
    a count that is not zero keeps at least one cell when the bar has room, so two tickets held out of 300 show."""
    total = sum(counts)
    if total <= 0:
        return [0] * len(counts)
    exact = [count * width / total for count in counts]
    cells = [int(share) for share in exact]
    by_remainder = sorted(range(len(counts)), key=lambda i: exact[i] - cells[i], reverse=True)
    for i in by_remainder[: width - sum(cells)]:
        cells[i] += 1
    for i, count in enumerate(counts):
        if count and not cells[i]:
            widest = max(range(len(cells)), key=cells.__getitem__)
            if cells[widest] > 1:
                cells[widest] -= 1
                cells[i] = 1
    return cells


def reais(cents: int) -> str:
    """Cents as decimal reais with a dot (`680.00`): what a spreadsheet reads as a number in any locale's import."""
    sign = "-" if cents < 0 else ""
    whole, fraction = divmod(abs(cents), 100)
    return f"{sign}{whole}.{fraction:02d}"


@dataclass(frozen=True)
class WideOrStacked:
    """A table drawn whole when every cell fits on one line, else the same facts stacked a record to a few lines: a
    narrow terminal (or a pipe at 80 columns) loses no column and cuts no money."""

    wide: Table
    stacked: Callable[[], RenderableType]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[RenderableType]:
        yield self.wide if self.unwrapped_width(console, options) <= options.max_width else self.stacked()

    def unwrapped_width(self, console: Console, options: ConsoleOptions) -> int:
        """Columns the table needs with no cell wrapped or cut: its widest cells, their padding and the rules between."""
        columns = self.wide.columns
        widest = [max((Measurement.get(console, options, cell).maximum for cell in (column.header, *column.cells)), default=0)
                  for column in columns]
        return sum(widest) + 2 * len(columns) + len(columns) + 1
