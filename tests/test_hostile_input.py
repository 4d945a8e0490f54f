"""A ticket server facing hostile or broken clients, through stock `rpyc.connect` and through client_core.

Every exposed method gets wrong types, client-side objects that record any attempt to use them, huge strings,
absurd quantities, unknown ids and codes, and wrong admin tokens. What a user relies on: each bad call comes back
as one of our refusals with a clear message and no traceback or file path; the server never calls back into the
client's objects; the server keeps answering; and nothing changed (catalogue, ledger, reservations).
"""

from __future__ import annotations

import sqlite3
import string
import sys
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import rpyc
from conftest import ADMIN_TOKEN, Cluster
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from procs import ROOT
from rpyc.core import consts
from rpyc.core.vinegar import GenericException

if str(ROOT) not in sys.path:  # plain `pytest tests/` puts only tests/ on the path
    sys.path.insert(0, str(ROOT))

from client_core import Forbidden, InvalidRequest, NotFound, ReservationError, TicketClient
from database import MAX_CAPACITY, MAX_PRICE_CENTS
from errors import REFUSALS

LOCAL = "127.0.0.1"
STARTS_AT = "2027-06-01T20:00:00-03:00"
HUGE = "x" * 100_000
"""A hundred times any text limit, yet a call with it in every argument stays within a request frame (1 MB,
service.transport.REQUEST_LIMITS), so it is refused by name; beyond a frame the connection is cut
(tests/test_hostile_clients.py)."""
OUR_REFUSALS = {f"errors.{name}" for name in REFUSALS}
LEAKS = ("Traceback (most recent call last)", "database.py", "server.py", "records.py", "storage/", "service/", 'File "/')


# -- client-side objects that must never be touched ----------------------------------------------------------


class Touches:
    """Every use of a spy, from any spy; the server must never cause one."""

    seen: ClassVar[list[str]] = []
    RPYC_OWN_PROBES: ClassVar[frozenset[str]] = frozenset({"____id_pack__", "____conn__", "__name__"})
    """What the *client's* RPyC asks of an object while boxing it for the wire; not the server's doing."""


def _spied(name: str, result: Callable[[Any], Any]) -> Callable:
    def method(self: Any, *args: Any) -> Any:
        Touches.seen.append(f"{type(self).__name__}.{name}")
        return result(self)

    method.__name__ = name
    return method


_DUNDERS = {
    "__int__": lambda self: 1,
    "__index__": lambda self: 1,
    "__float__": lambda self: 1.0,
    "__str__": lambda self: "Pista",
    "__repr__": lambda self: "Pista",
    "__format__": lambda self: "Pista",
    "__bytes__": lambda self: b"Pista",
    "__eq__": lambda self: True,
    "__ne__": lambda self: False,
    "__lt__": lambda self: False,
    "__hash__": lambda self: 1,
    "__len__": lambda self: 3,
    "__iter__": lambda self: iter(("Pista", 1, 1)),
    "__getitem__": lambda self: "Pista",
    "__contains__": lambda self: True,
    "__bool__": lambda self: True,
    "__call__": lambda self: "Pista",
}


def _spy_class(name: str, base: type) -> type:
    namespace: dict[str, Any] = {name_: _spied(name_, result) for name_, result in _DUNDERS.items()}

    def __getattr__(self: Any, attribute: str) -> Any:
        if attribute not in Touches.RPYC_OWN_PROBES:
            Touches.seen.append(f"{type(self).__name__}.getattr({attribute})")
        raise AttributeError(attribute)

    namespace["__getattr__"] = __getattr__
    return type(name, (base,), namespace)


Spy = _spy_class("Spy", object)
SpyInt = _spy_class("SpyInt", int)
SpyStr = _spy_class("SpyStr", str)


def spies() -> list[Any]:
    return [Spy(), SpyInt(1), SpyStr("Pista")]


# -- the hostile values, by what the parameter expects --------------------------------------------------------

NOT_INTS = ["1", 1.0, 1.5, float("nan"), float("inf"), True, False, None, [1], {"id": 1}, b"1", (1, (2, (3,))), 1j,
            frozenset({1}), slice(1, 2), HUGE, *spies()]
NOT_STRS = [1, 1.5, True, None, ["Ana"], {"name": "Ana"}, b"Ana", ("Ana", ("nested",)), frozenset({"Ana"}), *spies()]
NOT_BOOLS = [1, 0, "True", None, 1.0, [True], b"\x01", *spies()]

WRONG_TOKENS = [None, "", "x" * 10_000, 123, b"test-admin-token", ADMIN_TOKEN + " ", ADMIN_TOKEN.upper(), ADMIN_TOKEN[:-1],
                (ADMIN_TOKEN,), [ADMIN_TOKEN], HUGE, *spies()]

INVALID, NOT_FOUND, FORBIDDEN = "errors.InvalidRequest", "errors.NotFound", "errors.Forbidden"


def cases(kind: str) -> list[tuple[Any, str]]:
    """(hostile value, refusal expected) for a parameter of this kind."""
    if kind == "event_id":
        out_of_range = (-1, -(2**70), 2**53 + 1, 2**70)
        return [(v, INVALID) for v in (*NOT_INTS, *out_of_range)] + [(v, NOT_FOUND) for v in (0, 4, 10**9, 2**53)]
    if kind == "quantity":
        return [(v, INVALID) for v in (*NOT_INTS, 0, -1, 11, 10**6, 2**70, -(2**70))]
    if kind == "text":
        return [(v, INVALID) for v in (*NOT_STRS, HUGE, "", "   ", "x" * 1001, "x" * 201, "a\x00b", "linha\nquebrada")]
    if kind == "email":
        return [(v, INVALID) for v in (*NOT_STRS, HUGE, "", "ana", "ana@", "a b@c.d", "ana@example", "ana@@example.com")]
    if kind == "owner_email":
        strangers = ("", "intruso@example.com", "dona@example.co", "dona@example.com.br")
        return [(v, INVALID) for v in (*NOT_STRS, HUGE)] + [(v, NOT_FOUND) for v in strangers]
    if kind == "code":
        unknown = ("", "ZZZ-ZZZ", "'; DROP TABLE reservations; --", "%", "*", "x" * 999)
        return [(v, INVALID) for v in (*NOT_STRS, HUGE)] + [(v, NOT_FOUND) for v in unknown]
    if kind == "sector":
        return [(v, INVALID) for v in (*NOT_STRS, HUGE, "", "   ")] + [(v, NOT_FOUND) for v in ("Camarote", "pista", "Nope")]
    if kind == "category":
        return [(v, INVALID) for v in (*NOT_STRS, HUGE, "", "FULL", "meia", "x" * 999)]
    if kind == "request_id":
        return [(v, INVALID) for v in (*NOT_STRS, HUGE, "", "   ", "x" * 101, "a\x00b") if v is not None]
    if kind == "confirm":
        return [(v, INVALID) for v in NOT_BOOLS]
    if kind == "seats":
        bad = ["A1", ["A1"], ("A1", "A2"), (), ("A1",) * 51, (1,), (None,), (HUGE,), ("x" * 11,), ("A0",), ("Z1",), ("A13",),
               (SpyStr("A1"),), (Spy(),), Spy(), ("A1", ("A2",))]
        return [(v, INVALID) for v in bad]
    if kind == "seated_sector":
        return [(v, INVALID) for v in (*NOT_STRS, HUGE, "", "   ", "Camarote")] + [(v, NOT_FOUND) for v in ("plateia", "Nope")]
    if kind == "callback":
        return [(v, INVALID) for v in (5, "f", b"f", (print,), [1], True, *spies())]
    if kind == "waitlist_sector":
        named = [v for v in (*NOT_STRS, HUGE, "", "   ") if v is not None]  # None: the event's only sector
        return [(v, INVALID) for v in named] + [(v, NOT_FOUND) for v in ("Camarote", "geral", "Nope")]
    if kind == "entry_id":
        return [(v, INVALID) for v in (*NOT_INTS, -1, 2**70)] + [(v, NOT_FOUND) for v in (0, 10**9)]
    if kind == "token":
        return [(v, FORBIDDEN) for v in WRONG_TOKENS]
    if kind == "starts_at":
        return [(v, INVALID) for v in (*NOT_STRS, HUGE, "", "amanhã", "2027-13-45T25:00:00", "2027")]
    if kind == "sectors":
        bad = [
            (), None, "A", [("A", 1, 1)], ("A", 1, 1), (("A", 1),), (("A", 1, 1, 1, 1),), (("A", -1, 1),), (("A", 1, 0),),
            (("A", 1, 0, 5),), (("A", 1, 5, 0),), (("A", 1, 27, 5),), (("A", 1, 5, 51),), (("A", 1, 5, SpyInt(2)),), (("A", 1, 5, 2.0),),
            (("A", 1, MAX_CAPACITY + 1),), (("A", 2**70, 1),), (("A", MAX_PRICE_CENTS + 1, 1),), (("A", 1.5, 1),),
            (("A", 1, True),), (("", 1, 1),), ((None, 1, 1),), (("A", 1, 1), (" A", 1, 1)), (("A", 1, 1),) * 51,
            ((HUGE, 1, 1),), (("A", 1, 1), ["B", 1, 1]), *((spy, 1, 1) for spy in spies()), (("A", Spy(), 1),),
            (("A", 1, SpyInt(1)),), (Spy(),), Spy(),
        ]
        return [(v, INVALID) for v in bad]
    raise AssertionError(kind)


@dataclass(frozen=True)
class Method:
    name: str
    valid: tuple
    """Arguments that would succeed; each case spoils exactly one of them."""
    params: tuple[str, ...]
    kinds: tuple[str, ...]


OWNER = "dona@example.com"
PLACEHOLDER_CODE = "<owned>"  # replaced by the real code of the module's one reservation

METHODS = (
    Method("get_event", (1,), ("event_id",), ("event_id",)),
    Method("reserve", (1, 1, "Ana", "ana@example.com", "Pista", "full", None, False),
           ("event_id", "quantity", "customer", "email", "sector", "category", "request_id", "confirm"),
           ("event_id", "quantity", "text", "email", "sector", "category", "request_id", "confirm")),
    Method("reserve", (2, 1, "Ana", "ana@example.com", "Plateia", "full", None, False, ("A1",)),
           ("event_id", "quantity", "customer", "email", "sector", "category", "request_id", "confirm", "seats"),
           ("event_id", "quantity", "text", "email", "seated_sector", "category", "request_id", "confirm", "seats")),
    Method("get_seat_map", (2, "Plateia"), ("event_id", "sector"), ("event_id", "seated_sector")),
    Method("get_waitlist_entry", (1, OWNER), ("entry_id", "email"), ("entry_id", "owner_email")),
    Method("join_waitlist", (3, 1, "Dona", OWNER, "Geral", None),
           ("event_id", "quantity", "customer", "email", "sector", "callback"),
           ("event_id", "quantity", "text", "email", "waitlist_sector", "callback")),
    Method("watch_waitlist", (1, OWNER, print), ("entry_id", "email", "callback"), ("entry_id", "owner_email", "callback")),
    Method("subscribe", (1, print), ("event_id", "callback"), ("event_id", "callback")),
    Method("leave_waitlist", (1, OWNER), ("entry_id", "email"), ("entry_id", "owner_email")),
    Method("confirm", (PLACEHOLDER_CODE, OWNER), ("code", "email"), ("code", "owner_email")),
    Method("cancel", (PLACEHOLDER_CODE, OWNER), ("code", "email"), ("code", "owner_email")),
    Method("get_reservation", (PLACEHOLDER_CODE, OWNER), ("code", "email"), ("code", "owner_email")),
    Method("admin_create_event", (ADMIN_TOKEN, "Evento Novo", "Lugar Novo", STARTS_AT, (("A", 100, 10),)),
           ("token", "name", "venue", "starts_at", "sectors"), ("token", "text", "text", "starts_at", "sectors")),
)


# -- the one server and the auditor -----------------------------------------------------------------------------


@dataclass
class Office:
    cluster: Cluster
    port: int
    conn: rpyc.Connection
    owned_code: str
    auditor: sqlite3.Connection

    @property
    def root(self) -> Any:
        return self.conn.root

    def snapshot(self) -> tuple:
        """Everything a hostile call must not change: the catalogue, the ledger, the reservations, the error count."""
        ledger = self.auditor.execute("SELECT COUNT(*), MAX(seq) FROM ledger").fetchone()
        reservations = tuple(self.auditor.execute("SELECT code, status, quantity FROM reservations ORDER BY code"))
        return self.root.list_events(), ledger, reservations, dict(self.root.status())["errors"]

    def refused(self, call: Callable[[], Any], expected: str | set[str] | None = None) -> GenericException:
        """Run a call that must be refused; check the refusal, the server's health and that nothing changed."""
        before = self.snapshot()
        del Touches.seen[:]
        with pytest.raises(GenericException) as info:
            call()
        exc = info.value
        allowed = OUR_REFUSALS if expected is None else {expected} if isinstance(expected, str) else expected
        assert type(exc).__name__ in allowed, f"{type(exc).__name__}: {exc.args}"
        message = exc.args[0] if exc.args else ""
        assert type(message) is str and message.strip(), "a refusal must say what was wrong"
        assert len(message) < 2000
        text = str(exc)
        assert not [leak for leak in LEAKS if leak in text], text[:500]
        assert Touches.seen == [], f"the server called back into a client object: {Touches.seen}"
        assert self.root.ping() == "pong"
        assert self.snapshot() == before
        return exc


@pytest.fixture(scope="module")
def office(tmp_path_factory) -> Iterator[Office]:
    """One name server and one ticket server (what `cluster_factory(servers=1)` starts), shared by this module
    so hypothesis can run against it; every test leaves it unchanged, which `Office.refused` checks."""
    cluster = Cluster(tmp_path_factory.mktemp("hostile"))
    try:
        cluster.start_name_server()
        cluster.start_server(None, "--throttle-scale", "1000")  # these tests are about arguments; tests/test_abuse.py throttles
        (port,) = cluster.servers
        with TicketClient(name_servers=[], servers=[f"{LOCAL}:{port}"]) as client:
            owned = client.reserve(2, 2, "Dona", OWNER, sector="Camarote")
            for _ in range(8):
                client.reserve(3, 10, "Lotação", "lotacao@example.com", confirm=True)
            client.join_waitlist(3, 1, "Dona", OWNER)
        conn = rpyc.connect(LOCAL, port)
        auditor = sqlite3.connect(f"file:{cluster.db}?mode=ro", uri=True)
        try:
            yield Office(cluster, port, conn, owned.code, auditor)
        finally:
            auditor.close()
            conn.close()
        assert cluster.servers[port].alive(), "the server died during the hostile tests"
    finally:
        cluster.stop()


NAMED_IN_MESSAGE = {"sectors": ("sector", "price_cents", "capacity"), "token": ("token",)}


def spoiled_calls(office: Office, method: Method) -> Iterator[tuple[str, tuple, str]]:
    valid = tuple(office.owned_code if arg == PLACEHOLDER_CODE else arg for arg in method.valid)
    for position, kind in enumerate(method.kinds):
        for value, expected in cases(kind):
            args = (*valid[:position], value, *valid[position + 1:])
            yield method.params[position], args, expected


def short(args: tuple) -> str:
    return repr(tuple(a[:30] + "..." if isinstance(a, str) and len(a) > 30 else a for a in args))[:300]


# -- every method, every kind of bad argument -------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_every_bad_argument_is_refused_without_harm(office, method):
    count = 0
    for param, args, expected in spoiled_calls(office, method):
        function = getattr(office.root, method.name)
        exc = office.refused(lambda f=function, a=args: f(*a), expected)
        if expected != NOT_FOUND:  # the message names what was wrong
            words = NAMED_IN_MESSAGE.get(param, (param,))
            assert any(word in exc.args[0] for word in words), (short(args), exc.args[0])
        count += 1
    assert count >= 20


@pytest.mark.parametrize(("nome", "quantidade"), [
    *((value, 1) for value in (*NOT_STRS, HUGE, "", "   ", "x" * 201, "a\x00b")),
    *(("Maria", value) for value in (*NOT_INTS, 0, -1, 11, 10**6, 2**70, -(2**70))),
], ids=lambda value: type(value).__name__)
def test_the_seed_reservar_ingresso_answers_a_refusal_text_and_sells_nothing(office, nome, quantidade):
    before = office.snapshot()
    del Touches.seen[:]
    answer = office.root.reservar_ingresso(nome, quantidade)
    assert type(answer) is str and answer.startswith("Reserva recusada: ")
    assert not [leak for leak in LEAKS if leak in answer]
    assert Touches.seen == []
    assert office.root.consultar_ingressos() == 300
    assert office.snapshot() == before


def test_wrong_admin_tokens_are_forbidden_before_anything_else(office):
    for token in WRONG_TOKENS:
        exc = office.refused(lambda t=token: office.root.admin_create_event(t, None, None, None, None), FORBIDDEN)
        assert exc.args[0] == "admin token missing or wrong"


# -- the same through client_core: refusals arrive as our exceptions, breakers stay closed ------------------------


def test_client_core_turns_hostile_calls_into_clear_refusals(office):
    before = office.snapshot()
    del Touches.seen[:]
    with TicketClient(name_servers=[], servers=[f"{LOCAL}:{office.port}"]) as client:
        refusals: list[tuple[type[ReservationError], str, Callable[[], Any]]] = [
            (InvalidRequest, "event_id must be an integer", lambda: client.get_event("1")),
            (InvalidRequest, "event_id must be an integer", lambda: client.get_event(Spy())),
            (InvalidRequest, "event_id must be between", lambda: client.get_event(-1)),
            (NotFound, "No event with id 999", lambda: client.get_event(999)),
            (InvalidRequest, "quantity must be between", lambda: client.reserve(1, 2**70, "Ana", "ana@example.com", "Pista")),
            (InvalidRequest, "quantity must be between 1 and 10, not 0", lambda: client.reserve(1, 0, "Ana", "ana@example.com", "Pista")),
            (InvalidRequest, "quantity must be an integer", lambda: client.reserve(1, True, "Ana", "ana@example.com", "Pista")),
            (InvalidRequest, "customer must be a string", lambda: client.reserve(1, 1, SpyStr("Ana"), "ana@example.com", "Pista")),
            (InvalidRequest, "customer is too long", lambda: client.reserve(1, 1, HUGE, "ana@example.com", "Pista")),
            (InvalidRequest, "does not look like an email", lambda: client.reserve(1, 1, "Ana", "ana", "Pista")),
            (InvalidRequest, "several sectors", lambda: client.reserve(1, 1, "Ana", "ana@example.com")),
            (NotFound, "has no sector 'Nope'", lambda: client.reserve(1, 1, "Ana", "ana@example.com", "Nope")),
            (InvalidRequest, "confirm must be True or False", lambda: client.reserve(1, 1, "Ana", "ana@example.com", "Pista", confirm=1)),
            (NotFound, "for that email", lambda: client.get_reservation("ZZZ-ZZZ", OWNER)),
            (NotFound, "for that email", lambda: client.cancel(office.owned_code, "intruso@example.com")),
            (NotFound, "for that email", lambda: client.confirm(office.owned_code, "intruso@example.com")),
            (InvalidRequest, "code is too long", lambda: client.get_reservation(HUGE, OWNER)),
            (Forbidden, "admin token missing or wrong", lambda: client.create_event("x" * 10_000, "E", "V", STARTS_AT, [("A", 1, 1)])),
            (Forbidden, "admin token missing or wrong", lambda: client.create_event(None, "E", "V", STARTS_AT, [("A", 1, 1)])),
            (InvalidRequest, "capacity of A must be between", lambda: client.create_event(ADMIN_TOKEN, "E", "V", STARTS_AT, [("A", 1, 0)])),
        ]
        for refusal, text, call in refusals:
            with pytest.raises(refusal) as info:
                call()
            assert text in str(info.value)
            assert not [leak for leak in LEAKS if leak in str(info.value)]
        assert set(client.breaker_states().values()) == {"closed"}, "a refusal is a healthy answer, not a failure"
        assert client.ping() == "pong"
    assert Touches.seen == []
    assert office.snapshot() == before


# -- generated arguments -------------------------------------------------------------------------------------------

_none, _bools, _ints, _floats = st.none(), st.booleans(), st.integers(), st.floats()
_texts, _huge, _bytes = st.text(max_size=40), st.just(HUGE), st.binary(max_size=40)
_containers = st.one_of(
    st.lists(st.integers(), max_size=4),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.frozensets(st.integers(), max_size=3),
    st.complex_numbers(),
    st.sampled_from(spies()),
    st.tuples(st.integers() | st.text(max_size=5),
              st.recursive(st.integers() | st.text(max_size=5), lambda inner: st.tuples(inner, inner), max_leaves=6)),
)
not_int = st.one_of(_none, _bools, _floats, _texts, _huge, _bytes, _containers)
not_str_nor_none = st.one_of(_bools, _ints, st.integers(min_value=2**53), _floats, _bytes, _containers)
not_str = _none | not_str_nor_none
not_bool = st.one_of(_none, _ints, _floats, _texts, _bytes, _containers)
anything = st.one_of(_none, _bools, _ints, _floats, _texts, _huge, _bytes, _containers)
_CONTROL = st.sampled_from(["\x00", "\x07", "\x1b", "\x7f", "\n"])


@st.composite
def hostile_reserve_args(draw) -> tuple:
    """Arguments for reserve of which at least one is certainly wrong (so nothing may be sold)."""
    bad = {
        0: st.one_of(not_int, st.integers(max_value=0), st.integers(min_value=4)),
        1: st.one_of(not_int, st.integers(max_value=0), st.integers(min_value=11)),
        2: st.one_of(not_str, st.text(alphabet=" \t", max_size=5), st.builds(lambda c, s: f"a{c}{s}", _CONTROL, st.text(max_size=5))),
        3: st.one_of(not_str, st.text(alphabet=string.ascii_letters + string.digits + ".", max_size=30)),
        4: st.one_of(not_str, st.text(max_size=20).filter(lambda s: s.strip() not in ("Pista", "VIP"))),
        5: st.one_of(not_str, st.text(max_size=20).filter(lambda s: s not in ("full", "half"))),
        6: st.one_of(not_str_nor_none, st.text(alphabet=" ", max_size=3), st.just("r" * 101)),
        7: not_bool,
    }
    good = (1, 1, "Ana", "ana@example.com", "Pista", "full", None, False)
    args = [draw(st.one_of(st.just(value), bad[i])) for i, value in enumerate(good)]
    spoiled = draw(st.integers(0, 7))
    args[spoiled] = draw(bad[spoiled])
    return tuple(args)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(args=hostile_reserve_args())
def test_generated_reserve_arguments_are_always_refused_without_harm(office, args):
    office.refused(lambda: office.root.reserve(*args), {INVALID, NOT_FOUND})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(code=st.one_of(anything, st.just("<owned>")), email=anything)
def test_generated_get_reservation_arguments_never_reveal_or_break_anything(office, code, email):
    if type(code) is str and code == "<owned>":
        code = office.owned_code
    if type(email) is str and email.strip().casefold() == OWNER:
        email = "intruso@example.com"
    office.refused(lambda: office.root.get_reservation(code, email), {INVALID, NOT_FOUND})


# -- walking the object graph --------------------------------------------------------------------------------------


def test_attribute_walking_is_refused_and_the_server_keeps_serving(office):
    conn, root = office.conn, office.root
    walks: list[Callable[[], Any]] = [
        lambda: root._store,
        lambda: root.box,
        lambda: root.__dict__,
        lambda: root.exposed_reserve.__globals__,
        lambda: root.reserve.__func__,
        lambda: root.reserve.__self__,
        lambda: root.reserve.__wrapped__,
        lambda: root.reserve.__code__,
        lambda: root.on_connect,
        lambda: root._first_sector,
        # `root.__class__` is answered by the local proxy; ask the server for it explicitly.
        lambda: conn.sync_request(consts.HANDLE_GETATTR, root, "__class__"),
        lambda: conn.sync_request(consts.HANDLE_GETATTR, root, "__init__"),
        lambda: conn.sync_request(consts.HANDLE_GETATTR, root, "__module__"),
        lambda: conn.sync_request(consts.HANDLE_GETATTR, root.reserve, "__class__"),
        lambda: setattr(root, "box", None),
        lambda: delattr(root, "exposed_reserve"),
    ]
    before = office.snapshot()
    for walk in walks:
        with pytest.raises(AttributeError) as info:
            walk()
        assert "cannot access" in str(info.value) or "access denied" in str(info.value)
        assert not [leak for leak in LEAKS if leak in str(info.value)]
        assert root.ping() == "pong"
    with pytest.raises(AttributeError, match="cannot access '__class__'"):
        root.__class__  # noqa: B018 - the root's reference names no class the proxy could stand in for, and the server refuses
    assert office.snapshot() == before
    assert dict(root.get_event(3))["name"] == "Stand-up: Noite de Estreia"


# -- the server counts what it refused ------------------------------------------------------------------------------


def test_status_counts_each_refusal_and_no_errors(office):
    root = office.root
    first = dict(root.status())
    refused_calls: list[Callable[[], Any]] = [
        lambda: root.get_event("1"),
        lambda: root.get_event(10**9),
        lambda: root.reserve(1, 0, "Ana", "ana@example.com", "Pista"),
        lambda: root.get_reservation("ZZZ-ZZZ", OWNER),
        lambda: root.admin_create_event("wrong", "E", "V", STARTS_AT, (("A", 1, 1),)),
    ]
    for call in refused_calls:
        with pytest.raises(GenericException):
            call()
    second = dict(root.status())
    assert second["refusals"] - first["refusals"] == len(refused_calls)
    assert second["errors"] == first["errors"]
    assert second["calls"] - first["calls"] == len(refused_calls) + 1  # and the second status call itself


# -- calls of the wrong shape ----------------------------------------------------------------------------------------


def test_a_wrong_number_of_arguments_is_a_refusal(office):
    """A refusal, not an incident: no "try again" Unavailable (client_core would retry it on every server and
    trip the breakers) and no error counted (`refused` compares the server's error count)."""
    root = office.root
    for call in (
        lambda: root.ping(1),
        lambda: root.list_events(Spy()),
        lambda: root.status("x"),
        lambda: root.consultar_ingressos(1),
        lambda: root.status_servidor(None),
        lambda: root.get_event(),
        lambda: root.get_event(1, 2),
        lambda: root.reserve(1),
        lambda: root.reserve(1, 1, "Ana", "ana@example.com", "Pista", "full", None, False, None, "extra"),
        lambda: root.reserve(1, 1, "Ana", "ana@example.com", sector="Pista", seat=7),
        lambda: root.cancel(office.owned_code),
        lambda: root.reservar_ingresso("Maria"),
        lambda: root.admin_create_event(ADMIN_TOKEN),
    ):
        exc = office.refused(call, INVALID)
        assert "argument" in exc.args[0]


def test_the_server_is_alive_and_clean_after_all_of_it(office):
    process = office.cluster.servers[office.port]
    assert process.alive()
    assert office.root.ping() == "pong"
    assert "Traceback" not in process.output(), "a hostile call was logged as an incident"
    with closing(sqlite3.connect(f"file:{office.cluster.db}?mode=ro", uri=True)) as connection:
        assert connection.execute("SELECT COUNT(*) FROM events").fetchone() == (3,)
        reservations = connection.execute("SELECT code, status, event_id FROM reservations").fetchall()
        assert (office.owned_code, "held", 2) in reservations
        assert all((status, event_id) == ("confirmed", 3) for code, status, event_id in reservations if code != office.owned_code)
        assert len(reservations) == 9, "only the module's own reservations: one hold and the eight that sold event 3 out"
    owned = dict(office.root.get_reservation(office.owned_code, OWNER.upper()))
    assert (owned["status"], owned["quantity"], owned["sector"]) == ("held", 2, "Camarote")
