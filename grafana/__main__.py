"""`python -m grafana` writes grafana/dashboards/*.json; `python -m grafana --check` fails if they are stale.

`--out DIR --link desk_url=URL ...` writes them elsewhere with the stack's public addresses filled in: the
provisioning step of a deployment (docker-compose.yml runs it), since Grafana does not expand environment
variables inside dashboard files. The committed files carry the addresses `make up` publishes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from grafana.builder import LINK_DEFAULTS, with_links
from grafana.definitions import DASHBOARDS

OUTPUT = Path(__file__).resolve().parent / "dashboards"


def render(dashboard: dict[str, Any]) -> str:
    return json.dumps(dashboard, indent=2, sort_keys=True) + "\n"


def rendered(output: Path = OUTPUT, links: dict[str, str] | None = None) -> dict[Path, str]:
    return {output / f"{name}.json": render(with_links(build(), links or {})) for name, build in DASHBOARDS.items()}


def link_setting(text: str) -> tuple[str, str]:
    name, _, url = text.partition("=")
    if name not in LINK_DEFAULTS or not url:
        raise argparse.ArgumentTypeError(f"expected NAME=URL with NAME one of {sorted(LINK_DEFAULTS)}, got {text!r}")
    return name, url.rstrip("/")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grafana", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only report dashboards that differ")
    parser.add_argument("--out", type=Path, default=OUTPUT, help="where to write (default: the committed files)")
    parser.add_argument(
        "--link",
        type=link_setting,
        action="append",
        default=[],
        metavar="NAME=URL",
        help=f"a public address for the dashboards' links ({', '.join(LINK_DEFAULTS)})",
    )
    args = parser.parse_args(argv)
    files = rendered(args.out, dict(args.link))
    stale = [path for path, text in files.items() if not path.exists() or path.read_text() != text]
    if args.check:
        for path in stale:
            sys.stderr.write(f"stale: {path.name} (run python -m grafana)\n")
        return 1 if stale else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
