"""The README's command examples run as written: every `vibelux-*` command it calls is a console script of
pyproject.toml, and before the first one called by bare name the README has said how to put them on PATH
(they live in .venv/bin)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
ACTIVATE = ". .venv/bin/activate"
# A command at the start of a shell command: after VAR=value words, `$(`, `&&` or `;`; with arguments after
# it (a one-word span such as `vibelux-overview` names a dashboard or a datasource, not a command).
COMMAND = re.compile(
    r"(?:^|\$\(|&&\s*|;\s*)(?:[A-Z_]+=\S*\s+)*(?P<path>\.venv/bin/)?(?P<name>vibelux-[a-z][a-z-]*)(?=\s)"
)


def command_uses(text: str) -> list[tuple[int, str, bool]]:
    """(offset, command, called by bare name) of each command the text calls, in code blocks and code spans."""
    uses = []
    for block in re.finditer(r"```[^\n]*\n(.*?)```", text, re.DOTALL):
        for line in block.group(1).splitlines():
            uses += [(block.start(), m["name"], not m["path"]) for m in COMMAND.finditer(line.strip() + " ")]
    prose = re.sub(r"```.*?```", lambda block: " " * len(block.group(0)), text, flags=re.DOTALL)
    for span in re.finditer(r"`([^`\n]+)`", prose):
        uses += [(span.start(), m["name"], not m["path"]) for m in COMMAND.finditer(span.group(1))]
    return sorted(uses)


def test_every_command_the_readme_calls_is_a_console_script() -> None:
    scripts = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"])
    called = {name for _, name, _ in command_uses(README)}
    assert len(called) >= 8  # the parser finds them: proxy, tickets, flags, reports, backup, ack, …
    assert called <= scripts, called - scripts


def test_readme_says_how_to_put_the_commands_on_path_before_calling_one_by_bare_name() -> None:
    first_bare = next(offset for offset, _, bare in command_uses(README) if bare)
    assert 0 <= README.find(ACTIVATE) < first_bare


def test_command_parser_tells_commands_from_names() -> None:
    text = "uid `vibelux-overview`; run `vibelux-proxy keys list`\n```sh\nX=1 .venv/bin/vibelux-flags toggle a\n```\n"
    assert [(name, bare) for _, name, bare in command_uses(text)] == [("vibelux-proxy", True), ("vibelux-flags", False)]
