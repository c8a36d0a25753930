"""Statement fingerprints: one normalised form of a SQL text, shared by the kit's timing hook and the exporter.

A fingerprint names a statement's shape, never its values. Literals, bind parameters in every style the
platform's drivers produce (``?``, ``%(name)s``, ``%s``, ``:name``, PostgreSQL's ``$1`` in
``pg_stat_statements``) and any comma-separated run of them (``IN (?, ?, ?)``, a ``VALUES`` row, a
function's arguments) all become one ``?``. Keywords and names are
lower-cased and whitespace is collapsed, so the same statement gets the same fingerprint in the services'
histogram (SQLAlchemy's text) and in the query exporter (PostgreSQL's normalised text).

The scanner is one left-to-right pass over the characters (no regular expression): statement texts can
carry anything an application put in a literal, and this must stay linear in their length.
"""

from __future__ import annotations

import hashlib

# The statement types every label uses; anything else (DDL, transaction control, WITH …) is "other".
STATEMENT_TYPES = ("select", "insert", "update", "delete", "other")
OTHER = "other"
PLACEHOLDER = "?"  # what every literal and parameter becomes
FINGERPRINT_HEX_DIGITS = 16
_WORD_START = frozenset("abcdefghijklmnopqrstuvwxyz_")
_WORD = _WORD_START | frozenset("0123456789$")
_DIGITS = frozenset("0123456789")
_NUMBER = _DIGITS | frozenset(".eE")


def normalise(sql: str) -> str:
    """The statement with every literal and parameter as ``?``, lists of them as one ``?``, lower case."""
    tokens = _tokens(sql)
    out: list[str] = []
    for token in tokens:
        if token == PLACEHOLDER and out[-2:] == [PLACEHOLDER, ","]:
            out.pop()  # "?, ?" -> "?": lists of any length share one fingerprint
            continue
        out.append(token)
    text = " ".join(out)
    return text.replace("( ", "(").replace(" )", ")").replace(" ,", ",")


def fingerprint(sql: str) -> str:
    """A short stable hash of the normalised statement: the same on every server and every run."""
    digest = hashlib.sha256(normalise(sql).encode("utf-8")).hexdigest()
    return digest[:FINGERPRINT_HEX_DIGITS]


def statement_type(sql: str) -> str:
    """select, insert, update, delete or other, from the first word (a ``WITH`` query is other)."""
    for token in _tokens(sql[:200]):
        return token if token in STATEMENT_TYPES else OTHER
    return OTHER


def identifiers(text: str) -> set[str]:
    """The lower-cased names in a SQL fragment (e.g. a plan's filter), quotes removed, literals skipped."""
    return {token.strip('"') for token in _tokens(text) if token[0] in _WORD_START or token[0] == '"'}


def _tokens(sql: str) -> list[str]:
    """Words, quoted names, ``?`` for literals and parameters, and single punctuation characters."""
    tokens: list[str] = []
    text = sql.lower()
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char.isspace():
            i += 1
        elif char == "-" and text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif char == "/" and text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif char == "'":
            i = _skip_quoted(text, i, "'")
            tokens.append("?")
        elif char == '"':
            end = _skip_quoted(text, i, '"')
            tokens.append(text[i:end])
            i = end
        elif char in _DIGITS:
            while i < n and text[i] in _NUMBER:
                i += 1
            tokens.append("?")
        elif char == "$" and i + 1 < n and text[i + 1] in _DIGITS:  # PostgreSQL's $1
            i += 1
            while i < n and text[i] in _DIGITS:
                i += 1
            tokens.append("?")
        elif char == "%" and text.startswith("%(", i):  # psycopg's %(name)s
            end = text.find(")", i)
            i = n if end < 0 else end + 2
            tokens.append("?")
        elif char == "%" and text.startswith("%s", i):
            i += 2
            tokens.append("?")
        elif char == ":" and i + 1 < n and text[i + 1] in _WORD_START and not text.startswith("::", i - 1):
            i += 1  # SQLAlchemy's :name (a cast's "::type" stays a cast)
            while i < n and text[i] in _WORD:
                i += 1
            tokens.append("?")
        elif char in _WORD_START:
            start = i
            while i < n and text[i] in _WORD:
                i += 1
            tokens.append(text[start:i])
        else:
            tokens.append(char)
            i += 1
    return tokens


def _skip_quoted(text: str, start: int, quote: str) -> int:
    """The index after the closing quote; a doubled quote is an escaped one."""
    i = start + 1
    while True:
        end = text.find(quote, i)
        if end < 0:
            return len(text)
        if text.startswith(quote * 2, end):
            i = end + 2
            continue
        return end + 1
