"""`python -m grafana` writes grafana/dashboards/*.json; `python -m grafana --check` fails if they are stale."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from grafana.definitions import DASHBOARDS

OUTPUT = Path(__file__).resolve().parent / "dashboards"


def render(dashboard: dict[str, Any]) -> str:
    return json.dumps(dashboard, indent=2, sort_keys=True) + "\n"


def rendered() -> dict[Path, str]:
    return {OUTPUT / f"{name}.json": render(build()) for name, build in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grafana", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only report dashboards that differ")
    args = parser.parse_args(argv)
    stale = [path for path, text in rendered().items() if not path.exists() or path.read_text() != text]
    if args.check:
        for path in stale:
            sys.stderr.write(f"stale: {path.name} (run python -m grafana)\n")
        return 1 if stale else 0
    OUTPUT.mkdir(exist_ok=True)
    for path, text in rendered().items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
