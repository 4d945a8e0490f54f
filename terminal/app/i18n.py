"""Every word the clerk reads, in the clerk's language: English or Brazilian Portuguese, from .po catalogues.

The catalogues follow gettext's conventions (msgid is the English text, msgstr its translation) but are read
at run time with polib, so no compiled .mo file is kept in the repository. The language is chosen once, at
start-up: `--lang` first, then LC_ALL, LC_MESSAGES and LANG as gettext reads them, then English. Money and
dates are written the way that language writes them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path

import polib

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
LANGUAGES = ("en", "pt_BR")
DEFAULT_LANGUAGE = "en"
_MONTHS_EN = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def choose_language(given: str | None = None, environ: Mapping[str, str] = os.environ) -> str:
    """`--lang` first, then the environment in gettext's order; anything Portuguese is pt_BR, anything else English."""
    for value in (given, environ.get("LC_ALL"), environ.get("LC_MESSAGES"), environ.get("LANG")):
        if value and value not in ("C", "POSIX"):
            return "pt_BR" if value.lower().replace("-", "_").startswith("pt") else DEFAULT_LANGUAGE
    return DEFAULT_LANGUAGE


@cache
def catalogue(language: str) -> dict[str, str]:
    """msgid -> msgstr of one language; an untranslated entry (empty msgstr) falls back to the English msgid."""
    entries = polib.pofile(str(LOCALE_DIR / f"{language}.po"))
    return {entry.msgid: entry.msgstr for entry in entries if entry.msgstr and not entry.obsolete}


@dataclass(frozen=True)
class Words:
    """One language's words, money and dates; screens hold one and never look at the language again."""

    language: str = DEFAULT_LANGUAGE

    def __call__(self, message: str, **values: object) -> str:
        """The translation of `message`, with `{name}` placeholders filled in from `values`."""
        text = catalogue(self.language).get(message, message)
        return text.format(**values) if values else text

    def money(self, cents: int) -> str:
        """R$ 1.234,56 in Portuguese, R$ 1,234.56 in English; never cut, so a table wraps around it."""
        sign = "-" if cents < 0 else ""
        whole, fraction = divmod(abs(cents), 100)
        if self.language == "pt_BR":
            return f"{sign}R$\u00a0{whole:,}".replace(",", ".") + f",{fraction:02d}"
        return f"{sign}R$\u00a0{whole:,}.{fraction:02d}"

    def when(self, text: str | None, local: bool = True) -> str:
        """A server timestamp: holds in the clerk's local time, event starts in the venue's own."""
        if not text:
            return "-"
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return text
        if local:
            moment = moment.astimezone()
        if self.language == "pt_BR":
            return moment.strftime("%d/%m/%Y %H:%M")
        return f"{_MONTHS_EN[moment.month - 1]} {moment.day}, {moment.year} {moment:%H:%M}"
