"""``vibelux-release``: start, watch and steer a release of the platform API through the proxy's colours.

Reads the proxy's config (``VIBELUX_RATELIMIT_PROXY_CONFIG``, default config/ratelimit_proxy.yml): its
``upstream.pools``, ``redis`` and ``release`` sections, and its database for the audit log. Staging is the
same command with the staging config (README, "Releasing the API").

\b
    vibelux-release status
    vibelux-release start green [--from blue] [--wait]   # --wait: run the controller here until it ends
    vibelux-release pause | resume | abort | promote
    vibelux-release run                                   # the controller as a long-running process
    vibelux-release weights [blue=95 green=5]             # show or set the weights by hand
"""

from __future__ import annotations

import getpass
import json
import os
import signal
import socket
import sys
import threading
import time
from types import FrameType
from typing import Any

import click
import pydantic
import requests
import sqlalchemy.exc
from prometheus_client import CollectorRegistry
from sqlalchemy.orm import Session

from ratelimit_proxy.config import load
from ratelimit_proxy.release_admin import PoolWeights
from ratelimit_proxy.settings import ProxySettings
from ratelimit_proxy.upstreams import Pools
from releases.controller import Controller, ReleaseRefused, queue_command, start_release
from releases.store import ACTIVE, ReleaseStore
from service_kit.auth import AuditRecord
from service_kit.cli import run
from service_kit.db import make_engine, upgrade
from service_kit.openapi import validation_details
from service_kit.redis_connect import connect


def prometheus_query(url: str, timeout: float) -> Any:
    """A PromQL instant query: the one value of the answer, None for an empty result or NaN."""
    session = requests.Session()

    def query(expr: str) -> float | None:
        answer = session.get(f"{url.rstrip('/')}/api/v1/query", params={"query": expr}, timeout=timeout)
        answer.raise_for_status()
        result = answer.json()["data"]["result"]
        if not result:
            return None
        value = float(result[0]["value"][1])
        return None if value != value else value  # NaN

    return query


def http_probe(timeout: float) -> Any:
    def probe(method: str, url: str) -> int:
        return requests.request(method, url, timeout=timeout).status_code

    return probe


def migrate(engine: Any, attempts: int = 5) -> None:
    """The audit table, created by whichever process comes first: the proxy's ``serve`` may be migrating
    the same SQLite file right now (seen under `make staging`: "table api_tokens already exists")."""
    for attempt in range(attempts):
        try:
            upgrade(engine)
            return
        except sqlalchemy.exc.OperationalError:
            if attempt == attempts - 1:
                raise
            time.sleep(1.0)


def audit_writer(database_url: str, actor: str) -> Any:
    """Release steps go to the proxy's audit log (``GET /api/v1/audit``), like admin API changes."""
    engine = make_engine(database_url)
    migrated: list[bool] = []

    def write(action: str, target: str, before: Any, after: Any) -> None:
        if not migrated:
            migrate(engine)
            migrated.append(True)
        with Session(engine) as db:
            db.add(
                AuditRecord(
                    actor=actor,
                    actor_role="admin",
                    action=action,
                    target_type="release",
                    target_id=target,
                    before=before,
                    after=after,
                )
            )
            db.commit()

    return write


class Context:
    def __init__(self) -> None:
        self.settings: ProxySettings = load()
        if not self.settings.redis.url:
            raise click.UsageError("releases need redis.url: the weights and the release state are shared there")
        if len(self.settings.upstream.pools) < 2:
            raise click.UsageError("releases need at least two upstream.pools (e.g. blue and green)")
        self.redis = connect(self.settings.redis, timeout_seconds=2.0, decode_responses=True)
        self.pools = Pools(self.settings.upstream, self.redis, CollectorRegistry())
        self.store = ReleaseStore(self.redis)

    def controller(self, actor: str) -> Controller:
        analysis = self.settings.release.analysis
        return Controller(
            self.settings.release,
            self.pools,
            self.store,
            prometheus_query(analysis.prometheus_url, analysis.query_timeout_seconds),
            http_probe(5.0),
            audit_writer(self.settings.database.url, actor),
        )


def cli_actor() -> str:
    return f"cli:{getpass.getuser()}"


def show(state: dict[str, Any] | None) -> None:
    if state is None:
        click.echo("no release")
        return
    click.echo(f"release {state['id']}: {state['from']} -> {state['to']}, {state['status']} at {state['weight']}%")
    click.echo(f"  {state['message']}")


@click.group(help=__doc__)
def cli() -> None:
    pass


@cli.command(help="The current (or last) release.")
@click.option("--json", "as_json", is_flag=True)
def status(as_json: bool) -> None:
    state = Context().store.state()
    if as_json:
        click.echo(json.dumps(state, indent=2))
    else:
        show(state)


@cli.command(help="Start a release to colour TO (from the colour with the most weight, or --from).")
@click.argument("to")
@click.option("--from", "source", default=None)
@click.option("--wait", is_flag=True, help="Run the controller in this process until the release ends.")
def start(to: str, source: str | None, wait: bool) -> None:
    ctx = Context()
    try:
        state = start_release(ctx.store, ctx.pools, to, source)
    except ReleaseRefused as exc:
        raise click.UsageError(f"{exc.field}: {exc}") from None
    audit_writer(ctx.settings.database.url, cli_actor())(
        "release.start", state["id"], None, {"from": state["from"], "to": to}
    )
    show(state)
    if wait:
        _run(ctx, until_done=True)


def _command(name: str) -> None:
    ctx = Context()
    try:
        state = queue_command(ctx.store, name)
    except ReleaseRefused as exc:
        raise click.UsageError(str(exc)) from None
    audit_writer(ctx.settings.database.url, cli_actor())(f"release.{name}", state["id"], None, None)
    click.echo(f"{name} queued for release {state['id']}")


@cli.command(help="Hold the release at its step (analysis stops).")
def pause() -> None:
    _command("pause")


@cli.command(help="Go on from where the release was paused.")
def resume() -> None:
    _command("resume")


@cli.command(help="Stop the release: the old colour back to 100%.")
def abort() -> None:
    _command("abort")


@cli.command(help="Skip the remaining steps: the new colour to 100% now.")
def promote() -> None:
    _command("promote")


@cli.command("run", help="Run the controller (one at a time: a Redis lease) until stopped.")
def run_controller() -> None:
    _run(Context(), until_done=False)


def _run(ctx: Context, until_done: bool) -> None:
    stopping = threading.Event()

    def stop(_signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    owner = f"{socket.gethostname()}:{os.getpid()}"
    last: list[str] = [""]

    def on_state(state: dict[str, Any] | None) -> None:
        if state is not None and state["message"] != last[0]:
            last[0] = state["message"]
            click.echo(f"{state['status']:<12} {state['weight']:>3}%  {state['message']}", err=True)
        if until_done and (state is None or state["status"] not in ACTIVE):
            stopping.set()

    ctx.controller(f"release-controller:{owner}").run(owner, stopping.is_set, on_state)
    state = ctx.store.state()
    if until_done and state is not None:
        show(state)
        sys.exit(0 if state["status"] == "succeeded" else 1)


@cli.command(help="Show the weights, or set them (NAME=WEIGHT ...), audited.")
@click.argument("assignments", nargs=-1)
def weights(assignments: tuple[str, ...]) -> None:
    ctx = Context()
    if assignments:
        wanted: dict[str, int] = {}
        for item in assignments:
            name, _, value = item.partition("=")
            if not value.isdigit():
                raise click.UsageError(f"{item}: expected NAME=WEIGHT with a whole number")
            wanted[name] = int(value)
        try:  # the admin API's model: the CLI refuses what the API refuses, naming the field
            PoolWeights.model_validate({"weights": wanted})
        except pydantic.ValidationError as exc:
            problems = "; ".join(f"{field}: {message}" for field, message in validation_details(exc).items())
            raise click.UsageError(problems) from None
        before = ctx.pools.read().weights
        try:
            table = ctx.pools.write(wanted)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        audit_writer(ctx.settings.database.url, cli_actor())("pools.weights", "upstream", before, table.weights)
    table = ctx.pools.read()
    for name in ctx.pools.names:
        click.echo(f"{name}\t{table.weights.get(name, 0)}\t{ctx.pools.pools[name].url}")


def main() -> None:
    run(cli)  # a bad config: one line naming the key and the file, exit code 2


if __name__ == "__main__":
    main()
