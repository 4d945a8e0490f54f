"""The terminal's side of the house rules, read from the source: the product imports no tool, and the
terminal takes records and errors straight from records.py and errors.py."""

from __future__ import annotations

import ast
from pathlib import Path

from procs import ROOT

WINGS = ("terminal", "client", "service", "storage", "net")
PRODUCT = [*ROOT.glob("*.py"), *(path for wing in WINGS for path in (ROOT / wing).glob("*.py"))]
TERMINAL = [ROOT / "cli.py", *(ROOT / "terminal").glob("*.py")]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_no_product_module_imports_a_tool() -> None:
    offenders = {str(path.relative_to(ROOT)): sorted(module for module in imported_modules(path) if module.split(".")[0] == "tools")
                 for path in PRODUCT}
    assert {path: modules for path, modules in offenders.items() if modules} == {}


def test_the_terminal_takes_records_and_errors_from_their_own_modules() -> None:
    def names_from_the_client(path: Path) -> set[str]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        return {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module == "client_core"
                for alias in node.names}

    allowed = {"TicketClient", "BreakerListener", "parse_address"}
    stray = {str(path.relative_to(ROOT)): sorted(names_from_the_client(path) - allowed) for path in TERMINAL}
    assert {path: names for path, names in stray.items() if names} == {}
