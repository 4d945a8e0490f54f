"""The docs point at code that exists: every file, test and dotted name a reader is sent to is really there.

A newcomer follows `storage.sales.take` or `tests/test_seats.py::test_...` from docs/CONCEPTS.md; after a
move, a reference left behind sends them nowhere. This test reads the backticked references of the docs
and the README and resolves each one.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = ("README.md", "docs/ARCHITECTURE.md", "docs/CONCEPTS.md", "docs/RELIABILITY.md", "docs/DEPLOYMENT.md")
PACKAGES = {"client", "service", "storage", "terminal", "net", "tools"}
TOP_MODULES = {path.stem for path in ROOT.glob("*.py")}

SPAN = re.compile(r"`([^`\n]+)`")
FILE = re.compile(r"^(?P<path>[\w./-]+\.py)(?:::(?P<test>\w+))?$")
DOTTED = re.compile(r"^(?P<module>[a-z_]+)(?P<rest>(?:\.[A-Za-z_]\w*)+)$")


def references(document: str) -> list[str]:
    return SPAN.findall((ROOT / document).read_text(encoding="utf-8"))


def product_file(name: str) -> Path | None:
    """A path as written, or a bare file name found in one wing (the README's tables name rooms that way)."""
    if (ROOT / name).exists():
        return ROOT / name
    if "/" not in name:
        found = [path for package in PACKAGES for path in (ROOT / package).rglob(name)]
        return found[0] if found else None
    return None


def resolves(dotted: str) -> bool:
    """`storage.sales.take`, `database.Store.reserve`, `client.failover.Failover.run`: import the longest module
    prefix, then walk the attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            if not hasattr(target, name):
                return False
            target = getattr(target, name)
        return True
    return False


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_file_and_test_a_document_names_exists(document: str) -> None:
    missing = []
    for span in references(document):
        for word in span.replace(",", " ").split():
            match = FILE.match(word)
            if not match or word.startswith(("http", "/")):
                continue
            path = product_file(match["path"])
            if path is None or (match["test"] and not re.search(rf"def {match['test']}\b", path.read_text(encoding="utf-8"))):
                missing.append(word)
    assert not missing, f"{document} names what is not there: {missing}"


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_dotted_name_a_document_names_resolves(document: str) -> None:
    checked, missing = 0, []
    for span in references(document):
        match = DOTTED.match(span.strip())
        if not match or span.strip().endswith(".py") or (match["module"] not in TOP_MODULES and match["module"] not in PACKAGES):
            continue
        checked += 1
        if not resolves(span.strip()):
            missing.append(span)
    assert not missing, f"{document} names code that is not there: {missing}"
    if document in ("docs/ARCHITECTURE.md", "docs/CONCEPTS.md"):
        assert checked >= 5, f"{document}: expected code references to check, found {checked}"


def test_every_chapter_of_the_tour_names_code_that_exists() -> None:
    from tools.tour import CHAPTERS

    missing = []
    for chapter in CHAPTERS:
        assert chapter.code, f"chapter {chapter.number} does not say where its idea lives"
        for word in chapter.code.replace(" and ", ", ").split(", "):
            found = (ROOT / word).exists() if word.endswith(("/", ".py")) else resolves(word)
            if not found:
                missing.append(f"{chapter.number}: {word}")
    assert not missing, f"the tour points at code that is not there: {missing}"
