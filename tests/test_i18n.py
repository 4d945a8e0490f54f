"""Both catalogues hold every message the counter app shows, and money and dates read as each language writes them."""

from __future__ import annotations

import ast
from pathlib import Path

import polib
import pytest

from terminal.app import calls, words
from terminal.app.i18n import LANGUAGES, LOCALE_DIR, Words, choose_language

APP = Path(__file__).resolve().parent.parent / "terminal" / "app"
TRANSLATORS = {"w", "words"}
"""The names a screen calls its Words by: `self.w(...)`, `words(...)`, `self.counter.words(...)`."""


def messages_in_code() -> set[str]:
    """Every literal the app hands to its Words, the labels of its key lines, and the tables of indirect messages."""
    found: set[str] = set()
    for path in APP.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in TRANSLATORS and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                found.add(node.args[0].value)
            elif name == "keys":
                found |= {pair.elts[1].value for pair in node.args if isinstance(pair, ast.Tuple)}  # type: ignore[attr-defined]
    found |= set(words.STATUS_WORDS.values()) | {text for _, text in calls.HEADINGS}
    return found


@pytest.mark.parametrize("language", LANGUAGES)
def test_each_catalogue_has_every_message_the_app_shows(language: str) -> None:
    catalogue = polib.pofile(str(LOCALE_DIR / f"{language}.po"))
    ids = {entry.msgid for entry in catalogue}
    missing = sorted(messages_in_code() - ids)
    assert not missing, f"{language}.po lacks: {missing}"
    unused = sorted(ids - messages_in_code())
    assert not unused, f"{language}.po has messages no code shows: {unused}"
    if language != "en":
        untranslated = [entry.msgid for entry in catalogue if not entry.msgstr]
        assert not untranslated, f"{language}.po leaves untranslated: {untranslated}"


def test_every_placeholder_survives_translation() -> None:
    for entry in polib.pofile(str(LOCALE_DIR / "pt_BR.po")):
        wanted = {part.split("}")[0] for part in entry.msgid.split("{")[1:]}
        given = {part.split("}")[0] for part in entry.msgstr.split("{")[1:]}
        assert wanted == given, entry.msgid


def test_the_language_comes_from_the_flag_then_the_environment() -> None:
    assert choose_language("pt_BR", {"LANG": "en_US.UTF-8"}) == "pt_BR"
    assert choose_language(None, {"LC_ALL": "pt_BR.UTF-8", "LANG": "en_US.UTF-8"}) == "pt_BR"
    assert choose_language(None, {"LANG": "pt_PT.UTF-8"}) == "pt_BR"
    assert choose_language(None, {"LANG": "C"}) == "en"
    assert choose_language(None, {}) == "en"


def test_money_and_dates_read_as_each_language_writes_them() -> None:
    pt, en = Words("pt_BR"), Words("en")
    assert pt.money(123456) == "R$\u00a01.234,56" and en.money(123456) == "R$\u00a01,234.56"
    assert pt.money(-150) == "-R$\u00a01,50"
    assert pt.when("2027-03-13T20:00:00-03:00", local=False) == "13/03/2027 20:00"
    assert en.when("2027-03-13T20:00:00-03:00", local=False) == "Mar 13, 2027 20:00"
    assert pt("Quit the counter?") == "Sair do balcão?"
    assert pt("Only {left} left in this sector.", left=3) == "Restam só 3 neste setor."
