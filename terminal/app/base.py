"""What every screen of the counter shares: its words, the client, the app, the line of keys at the bottom."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, cast

from textual.binding import BindingType
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

from client_core import TicketClient
from terminal.app.i18n import Words

if TYPE_CHECKING:
    from terminal.app.counter import CounterApp


class Note(Static):
    """A line that takes no room while it has nothing to say: a field's slip, a refusal, a hint."""

    def __init__(self, text: str = "", **options: Any) -> None:
        super().__init__(text, **options)
        self.display = bool(text)

    def update(self, content: Any = "", *, layout: bool = True) -> None:
        super().update(content, layout=layout)
        self.display = bool(content)


class Shared:
    """Mixed into screens and dialogs: the app's words and client, named once."""

    @property
    def counter(self) -> CounterApp:
        return cast("CounterApp", cast(Any, self).app)

    @property
    def w(self) -> Words:
        return self.counter.words

    @property
    def client(self) -> TicketClient:
        return self.counter.client


class CounterScreen(Shared, Screen[None]):
    """A screen of the counter; Escape goes back one step (the screen below keeps what was typed in it)."""

    BINDINGS: ClassVar[list[BindingType]] = [("escape", "back")]

    def action_back(self) -> None:
        self.dismiss()

    def keys(self, *pairs: tuple[str, str]) -> Static:
        """The keys this screen answers to, in the clerk's language, as one line at the bottom."""
        return Static(self.key_line(pairs), classes="keys", id="keys")

    def key_line(self, pairs: tuple[tuple[str, str], ...]) -> str:
        return "  ".join(f"[b]{key}[/b] {self.w(label)}" for key, label in pairs)


class CounterDialog(Shared, ModalScreen[Any]):
    """A question over the current screen; Escape answers it with None (no, or nothing typed)."""

    BINDINGS: ClassVar[list[BindingType]] = [("escape", "back")]

    def action_back(self) -> None:
        self.dismiss(None)
