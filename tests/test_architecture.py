"""The house's rules, read off the code: which wing may import which, no cycles, rooms small enough to read.

docs/ARCHITECTURE.md draws the wings; this test keeps the drawing true. Every import statement counts,
at module level or inside a function, because a lazy import is an arrow all the same.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

DOORS = {
    "cli": "terminal",
    "client_core": "client",
    "circuit_breaker": "client",
    "server": "service",
    "database": "storage",
    "name_server": "net",
}
VOCABULARY = {"errors", "records", "seating", "backoff"}
WINGS = {"terminal", "client", "service", "storage", "net", "tools"}

MAY_IMPORT = {
    "terminal": {"terminal", "client", "net", "vocabulary"},
    "client": {"client", "net", "vocabulary"},
    "service": {"service", "storage", "net", "vocabulary"},
    "storage": {"storage", "vocabulary"},
    "net": {"net", "vocabulary"},
    "vocabulary": {"vocabulary"},
    "tools": WINGS | {"vocabulary"},
}
"""terminal -> client -> net; service -> storage (and net, to register); name_server -> net only; the
vocabulary stands below everything; only tools (which run beside the product) may import anything."""

FORBIDDEN_LIBRARIES = {
    "storage": {"rpyc"},
    "client": {"sqlite3", "psycopg"},
    "terminal": {"sqlite3", "psycopg"},
    "service": {"sqlite3", "psycopg"},
    "net": {"sqlite3", "psycopg"},
    "vocabulary": {"rpyc", "sqlite3", "psycopg"},
}
"""The store knows no RPC, and nobody but the store knows SQL."""

MAX_MODULE_LINES = 700
MAX_CLASS_LINES = 400
MAX_TOP_MODULES = 10


def product_modules() -> dict[str, Path]:
    """Every module of the product and the tools by dotted name; tests are not rooms of the house."""
    modules = {path.stem: path for path in ROOT.glob("*.py")}
    for wing in WINGS:
        for path in sorted((ROOT / wing).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def wing_of(module: str) -> str | None:
    top = module.split(".")[0]
    if top in DOORS:
        return DOORS[top]
    if top in VOCABULARY:
        return "vocabulary"
    return top if top in WINGS else None


def imported(path: Path) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of every absolute import in the file, `from a import b` giving a.b when b is a module."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


def arrows() -> dict[str, set[str]]:
    modules = product_modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for _, target in imported(path):
            if target in modules and target != name:
                graph[name].add(target)
    return graph


def test_every_arrow_runs_the_way_the_house_allows() -> None:
    wrong: list[str] = []
    for name, path in product_modules().items():
        source = wing_of(name)
        assert source is not None, f"{name} belongs to no wing"
        for line, target in imported(path):
            destination = wing_of(target)
            library = target.split(".")[0]
            if destination is not None and destination not in MAY_IMPORT[source]:
                found = f"{path.relative_to(ROOT)}:{line} ({source}) imports {destination}/"
            elif library in FORBIDDEN_LIBRARIES.get(source, set()):
                found = f"{path.relative_to(ROOT)}:{line} ({source}) imports {library}"
            else:
                continue
            if found not in wrong:
                wrong.append(found)
    assert not wrong, "arrows that break the house's rules:\n" + "\n".join(wrong)


def test_there_is_no_import_cycle() -> None:
    graph = arrows()
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node):], node]
        if node in done:
            return None
        for target in sorted(graph[node]):
            if cycle := visit(target, [*path, node]):
                return cycle
        done.add(node)
        return None

    for start in sorted(graph):
        cycle = visit(start, [])
        assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_at_most_ten_modules_stand_at_the_top() -> None:
    top = sorted(path.name for path in ROOT.glob("*.py"))
    assert len(top) <= MAX_TOP_MODULES, top
    assert set(DOORS) | VOCABULARY >= {path.stem for path in ROOT.glob("*.py")}, top


@pytest.mark.parametrize("name", sorted(product_modules()))
def test_every_room_is_small_enough_to_read(name: str) -> None:
    path = product_modules()[name]
    text = path.read_text(encoding="utf-8")
    lines = len(text.splitlines())
    too_long = [f"{path.relative_to(ROOT)} has {lines} lines"] if lines > MAX_MODULE_LINES else []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ClassDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > MAX_CLASS_LINES:
                too_long.append(f"{path.relative_to(ROOT)}: class {node.name} has {length} lines")
    assert not too_long, "; ".join(too_long)


def test_the_terminal_takes_records_and_errors_from_their_own_modules() -> None:
    """One way in for the vocabulary: the client's door gives the terminal a client, not a second copy of records."""
    allowed = {"TicketClient", "BreakerListener", "parse_address"}
    stray = []
    for path in [ROOT / "cli.py", *sorted((ROOT / "terminal").rglob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "client_core":
                stray += [f"{path.relative_to(ROOT)}:{node.lineno} {alias.name}" for alias in node.names if alias.name not in allowed]
    assert not stray, "the terminal takes these through client_core instead of records.py or errors.py: " + ", ".join(stray)
