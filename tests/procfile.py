"""The Procfile as `make up` runs it: each process's command, and the environment its command sets.

Tests that check what `make up` does read its settings from here, so they follow the file instead of a copy.
"""

from __future__ import annotations

import itertools
import re
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROCFILE = REPO / "Procfile"


def commands(path: Path = PROCFILE) -> dict[str, str]:
    """Process name -> its command line (honcho runs it with /bin/sh -c)."""
    lines = path.read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if re.match(r"^[\w-]+:", line))


def environment(command: str) -> dict[str, str]:
    """The VAR=value words that open a command, unquoted as the shell does."""
    words = itertools.takewhile(lambda word: re.match(r"^[A-Z_]+=", word), shlex.split(command, comments=True))
    return dict(word.split("=", 1) for word in words)
