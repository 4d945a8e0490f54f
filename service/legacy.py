"""The seed project's calls, in Portuguese, so the original single-counter clients keep working.

The seed sold one counter of tickets; here that counter is the first sector of the first event on sale, and
a sale through these calls is confirmed at once under the counter's own email. Answers are the seed's: a
count, a sentence, a dict of the time and the count.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from errors import NotFound, ReservationError, SoldOut
from service import wire
from service.opaque import Opaque
from service.remote import remote

if TYPE_CHECKING:
    from service.box_office import BoxOffice

COUNTER_EMAIL = "balcao@bilheteria.local"


class LegacyCalls:
    """Mixed into the ticket service: `consultar_ingressos`, `reservar_ingresso`, `status_servidor`."""

    box: BoxOffice

    def _first_sector(self) -> tuple[int, str, int]:
        for event in self.box.store.list_events():
            if event.status == "on_sale" and event.sectors:
                return event.id, event.sectors[0].name, event.sectors[0].available
        raise NotFound("No event is on sale")

    @remote
    def exposed_consultar_ingressos(self) -> int:
        return self._first_sector()[2]

    @remote
    def exposed_reservar_ingresso(self, nome: Any, quantidade: Any) -> str:
        event_id, sector, _ = self._first_sector()
        try:
            reservation = self.box.store.reserve(
                event_id, wire.integer(quantidade, "quantidade", -wire.MAX_INT), wire.text(nome, "nome"),
                COUNTER_EMAIL, sector=sector, confirm=True,
            )
        except SoldOut as exc:
            return f"Reserva recusada: ingressos insuficientes. {exc}"
        except ReservationError as exc:
            return f"Reserva recusada: {exc}"
        return f"Reserva confirmada para {reservation.customer}: {reservation.quantity} ingresso(s), código {reservation.code}"

    @remote
    def exposed_status_servidor(self) -> SeedStatus:
        return SeedStatus(time.strftime("%Y-%m-%d %H:%M:%S"), self._first_sector()[2])


class SeedStatus(Opaque):
    """The seed's status answer: read like the seed's dict (`status["horario"]`), but not a dict.

    RPyC sends a dict by reference, so a client holding the seed's answer could write into it, and through it
    into the server's memory. This object is a fresh copy of two values per call that can be read by key and
    nothing else: no `__setitem__`, no attributes a client may set (rpyc refuses setattr), nothing shared."""

    PUBLIC_NAME = "status_servidor"
    __slots__ = ("_reference", "_values")

    def __init__(self, horario: str, ingressos_restantes: int) -> None:
        self._values = (("horario", horario), ("ingressos_restantes", ingressos_restantes))

    def __getitem__(self, key: object) -> str | int:
        for name, value in self._values:
            if type(key) is str and key == name:
                return value
        raise KeyError(key if type(key) is str else "a status key is a string")

    def __contains__(self, key: object) -> bool:
        return type(key) is str and any(key == name for name, _ in self._values)

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(name for name, _ in self._values))

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return repr(dict(self._values))

    __str__ = __repr__
