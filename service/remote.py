"""The `remote` decorator: how an exposed method's failures reach the client, and what the log keeps of them.

A refusal (errors.ReservationError) travels to the client as it is and is logged at DEBUG, since a healthy
server says "no" all day. `Unavailable` travels as it is and is logged as a warning. Anything else is a bug:
it is logged with its traceback under an incident id, and the client gets only `Unavailable` naming that id,
so no traceback, path or internal detail ever leaves the process. A call with the wrong arguments is refused
with the method's real signature, not Python's TypeError.
"""

from __future__ import annotations

import functools
import inspect
import logging
import uuid
from collections.abc import Callable
from typing import Any

from errors import InvalidRequest, ReservationError, Unavailable

log = logging.getLogger("bilheteria.service.remote")


def remote(method: Callable) -> Callable:
    """Count the call, log refusals as refusals, and turn anything unexpected into `Unavailable`.

    The decorated method's instance has `box.counters` (service.counters.Counters) and `peer` (for the log)."""
    name = method.__name__.removeprefix("exposed_")
    parameters = list(inspect.signature(method).parameters.values())[1:]
    expected = f"{name}({', '.join(parameter.name for parameter in parameters)})"

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        counters = self.box.counters
        with counters.lock:
            counters.calls += 1
            counters.in_flight += 1
        try:
            try:
                return method(self, *args, **kwargs)
            except TypeError as exc:
                if exc.__traceback__ is None or exc.__traceback__.tb_next is not None:
                    raise  # raised inside the method: a bug, reported as an incident below
                raise InvalidRequest(f"wrong arguments: the call is {expected}") from None
        except ReservationError as exc:
            with counters.lock:
                counters.refusals += 1
            log.debug("refused %s from %s: %s: %s", name, self.peer, type(exc).__name__, exc)
            raise
        except Unavailable as exc:
            with counters.lock:
                counters.errors += 1
            log.warning("unavailable %s from %s: %s", name, self.peer, exc)
            raise
        except Exception:
            incident = uuid.uuid4().hex[:8]
            with counters.lock:
                counters.errors += 1
            log.exception("incident %s in %s from %s", incident, name, self.peer)
            raise Unavailable(f"the server failed on this request (incident {incident}); try again") from None
        finally:
            with counters.lock:
                counters.in_flight -= 1
                if counters.in_flight == 0:
                    counters.idle.notify_all()

    return wrapper
