"""The seed project's calls, in Portuguese, so the original single-counter clients keep working.

The seed sold one counter of tickets; here that counter is the first sector of the first event on sale, and
a sale through these calls is confirmed at once under the counter's own email. Answers are the seed's: a
count, a sentence, a dict of the time and the count.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from errors import NotFound, ReservationError, SoldOut
from service import wire
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
    def exposed_status_servidor(self) -> dict:
        return {"horario": time.strftime("%Y-%m-%d %H:%M:%S"), "ingressos_restantes": self._first_sector()[2]}
