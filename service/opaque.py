"""What a client learns about a server object it holds by reference: its public calls, and nothing internal.

RPyC answers a proxy's repr, str, hash and dir, and the inspection behind every new proxy, with the object's
own: `<server.TicketService object at 0x7f...>`, every private method and its docstring, and its heap address
in the reference itself. That tells an attacker the layout of the process. An `Opaque` object answers with
its public name and its calls; its reference carries a random number instead of its address.
"""

from __future__ import annotations

import secrets
import zlib
from typing import Any, ClassVar

from rpyc.core.protocol import Connection

EXPOSED = "exposed_"


class Opaque:
    """A server object handed to clients by reference. Subclasses name themselves in PUBLIC_NAME."""

    PUBLIC_NAME: ClassVar[str]
    __slots__ = ()

    @property
    def ____id_pack__(self) -> tuple[str, int, int]:
        """What RPyC puts in a reference to this object: the public name, and random numbers in place of the
        class's and the object's heap addresses (stable per object, so one object keeps one reference)."""
        number = getattr(self, "_reference", 0)
        if not number:
            number = secrets.randbits(62) | 1  # never 0: RPyC reads 0 as "a class"
            object.__setattr__(self, "_reference", number)
        return self.PUBLIC_NAME, zlib.crc32(self.PUBLIC_NAME.encode()) | 1, number

    def __repr__(self) -> str:
        return f"<{self.PUBLIC_NAME}>"

    def __str__(self) -> str:
        return repr(self)

    def __hash__(self) -> int:
        return zlib.crc32(self.PUBLIC_NAME.encode())

    def __eq__(self, other: object) -> bool:
        return self is other

    def __dir__(self) -> list[str]:
        return public_calls(self)


def public_calls(obj: object) -> list[str]:
    """The calls a client may make on `obj`, by the names it calls them."""
    return sorted(name.removeprefix(EXPOSED) for name in dir(type(obj)) if name.startswith(EXPOSED))


class OpaqueConnection(Connection):
    """RPyC's connection, answering the inspection of an `Opaque` object with its public calls and the special
    methods RPyC lets a client use (so `status["horario"]` works), without docstrings, which name the server's
    modules. Other objects are inspected as RPyC does."""

    def _handle_inspect(self, id_pack: Any) -> tuple:
        obj = self._local_objects[id_pack]
        if not isinstance(obj, Opaque):
            return super()._handle_inspect(id_pack)
        special = sorted(name for name in self._config["safe_attrs"] if callable(getattr(type(obj), name, None))
                         and getattr(type(obj), name) is not getattr(object, name, None))
        return tuple((name, None) for name in [*special, *(EXPOSED + call for call in public_calls(obj))])
