"""``vibelux-ack``: acknowledge a firing alert (an Alertmanager silence with who, why, until) and undo it.

vibelux-ack ack ServiceDown service=redis --comment "restarting redis" --for 30m
vibelux-ack list
vibelux-ack unack ServiceDown service=redis        (or: vibelux-ack unack --id SILENCE_ID)
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Sequence
from datetime import datetime

from service_kit.alerting.silences import (
    AlertmanagerClient,
    AlertmanagerError,
    parse_duration,
    parse_matchers,
)
from service_kit.cli import readable_time

DEFAULT_URL = "http://127.0.0.1:9093"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vibelux-ack", description="Acknowledge Alertmanager alerts.")
    parser.add_argument(
        "--alertmanager",
        default=os.environ.get("ALERTMANAGER_URL", DEFAULT_URL),
        help="Alertmanager base URL (env ALERTMANAGER_URL, default %(default)s)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    ack = commands.add_parser("ack", help="acknowledge alerts: silence them with who, why and until when")
    ack.add_argument("alertname")
    ack.add_argument("labels", nargs="*", metavar="label=value", help="narrow the ack, e.g. service=redis")
    ack.add_argument("--comment", "-c", required=True, help="why (what you are doing about it)")
    ack.add_argument("--by", default=getpass.getuser(), help="who acknowledges (default: %(default)s)")
    until = ack.add_mutually_exclusive_group()
    until.add_argument("--for", dest="duration", default="1h", help="how long, e.g. 30m, 2h (default 1h)")
    until.add_argument("--until", type=datetime.fromisoformat, help="end time, ISO 8601 with time zone")

    unack = commands.add_parser("unack", help="remove acknowledgements")
    unack.add_argument("alertname", nargs="?")
    unack.add_argument("labels", nargs="*", metavar="label=value")
    unack.add_argument("--id", dest="silence_id", help="the silence id printed by ack")

    commands.add_parser("list", help="list active acknowledgements")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    client = AlertmanagerClient(args.alertmanager)
    try:
        if args.command == "ack":
            matchers = parse_matchers(args.alertname, args.labels)
            if args.until is not None:
                silence_id = client.ack(matchers, by=args.by, comment=args.comment, until=args.until)
            else:
                duration = parse_duration(args.duration)
                silence_id = client.ack(matchers, by=args.by, comment=args.comment, duration=duration)
            print(silence_id)
        elif args.command == "unack":
            if args.silence_id:
                client.unack(args.silence_id)
                print(args.silence_id)
            elif args.alertname:
                expired = client.unack_matching(parse_matchers(args.alertname, args.labels))
                if not expired:
                    raise AlertmanagerError("no active ack matches exactly those labels")
                print("\n".join(expired))
            else:
                raise AlertmanagerError("give an alert name (and labels) or --id")
        else:
            for ack in client.acks():
                labels = " ".join(f"{name}={value}" for name, value in sorted(ack.matchers.items()))
                until = readable_time(ack.ends_at)
                print(f"{ack.silence_id}  until {until}  {ack.created_by}: {ack.comment}  [{labels}]")
    except AlertmanagerError as exc:
        print(f"vibelux-ack: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
