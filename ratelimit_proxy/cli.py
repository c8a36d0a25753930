"""``vibelux-proxy``: serve, keys, bans, demo keys, cache purges, plus the kit's config and token commands.

Key, ban and purge commands act on the shared store directly (Redis) and are audited like admin API calls.
"""

from __future__ import annotations

import getpass
import os
import signal
import subprocess
import sys
import time
from types import FrameType
from typing import Any, TypeVar

import click
import pydantic
import redis
from prometheus_client import CollectorRegistry

from ratelimit_proxy.admin import KeyChange, NewBan, NewKey
from ratelimit_proxy.admin_cache import TagPurge, UrlPurge
from ratelimit_proxy.api_keys import UnknownKey
from ratelimit_proxy.config import ENV_PREFIX, SERVICE, load
from ratelimit_proxy.runtime import Runtime
from ratelimit_proxy.settings import ProxySettings
from ratelimit_proxy.wsgi_names import ADMIN_TARGET, EMBEDDED_ADMIN, PROXY_TARGET
from service_kit.auth import AuditRecord
from service_kit.cli import readable_time, run, service_cli
from service_kit.db import make_engine, upgrade
from service_kit.openapi import validation_details
from service_kit.server import granian_command, prepare_multiprocess_dir

cli = service_cli(SERVICE, load, ProxySettings, ENV_PREFIX, PROXY_TARGET, database_url=lambda s: s.database.url)
cli.commands.pop("serve")  # replaced: the proxy runs with its admin server beside it


@cli.command("serve", help="Run the proxy (server.*) and its admin API (admin.server.*) under granian.")
@click.option("--demo-keys", is_flag=True, help="Create and print one key per tier once Redis answers.")
def serve(demo_keys: bool) -> None:
    settings = load()
    upgrade(make_engine(settings.database.url))
    env = dict(os.environ)
    # Always multiprocess metrics: the admin process reports the proxy workers' counters.
    env["PROMETHEUS_MULTIPROC_DIR"] = str(prepare_multiprocess_dir(SERVICE))
    commands = []
    proxy_server = settings.server
    if settings.redis.url:
        commands.append(granian_command(ADMIN_TARGET, settings.admin.server))
    else:
        from dataclasses import replace

        proxy_server = replace(settings.server, workers=1)  # memory backend: one process holds the state
        env[EMBEDDED_ADMIN] = "1"
        click.echo("no redis.url: in-memory limiter, one worker, admin API in the same process", err=True)
    commands.append(granian_command(PROXY_TARGET, proxy_server))
    procs = [subprocess.Popen(c, env=env) for c in commands]
    if demo_keys and settings.redis.url:
        print_demo_keys(Runtime(settings, CollectorRegistry()))

    def stop(_signum: int, _frame: FrameType | None) -> None:
        for proc in procs:
            proc.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    codes = [proc.wait() for proc in procs]
    sys.exit(max(codes))


Model = TypeVar("Model", bound=pydantic.BaseModel)


def checked(model: type[Model], **values: Any) -> Model:
    """The admin API's model of these arguments: the CLI refuses what the API refuses, naming the field."""
    try:
        return model.model_validate(values)
    except pydantic.ValidationError as exc:
        problems = "; ".join(f"{field}: {message}" for field, message in validation_details(exc).items())
        raise click.UsageError(problems) from None


def runtime() -> Runtime:
    settings = load()
    if not settings.redis.url:
        raise click.UsageError("keys and bans live in the proxy's memory without redis.url; use the admin API")
    return Runtime(settings, CollectorRegistry())


def audit(action: str, target_type: str, target: str, before: Any = None, after: Any = None) -> None:
    """The CLI's changes go to the same audit log as the admin API's."""
    from sqlalchemy.orm import Session

    engine = make_engine(load().database.url)
    upgrade(engine)
    with Session(engine) as db:
        db.add(
            AuditRecord(
                actor=f"cli:{getpass.getuser()}",
                actor_role="admin",
                action=action,
                target_type=target_type,
                target_id=target,
                before=before,
                after=after,
            )
        )
        db.commit()


@cli.group(help="API keys of proxied clients (stored as SHA-256; the key is shown once).")
def keys() -> None:
    pass


@keys.command("create")
@click.option("--tier", required=True)
@click.option("--owner", required=True)
def keys_create(tier: str, owner: str) -> None:
    key = checked(NewKey, tier=tier, owner=owner)
    api_key, record = runtime().keys.create(key.tier, key.owner)
    audit("key.create", "api_key", record.key_id, after=record.__dict__)
    click.echo(api_key)
    click.echo(f"created key {record.key_id} tier={tier} owner={owner}", err=True)


@keys.command("list")
def keys_list() -> None:
    for record in runtime().keys.all():
        created = readable_time(record.created_at) if record.created_at else "-"
        click.echo(f"{record.key_id}\t{record.tier}\t{record.status}\t{record.source}\t{record.owner}\t{created}")


def _update(key_id: str, **changes: str) -> None:
    change = checked(KeyChange, **changes)
    try:
        before, after = runtime().keys.update(key_id, tier=change.tier, status=change.status)
    except UnknownKey:
        raise click.UsageError(f"no stored key {key_id}") from None
    audit("key.update", "api_key", key_id, before.__dict__, after.__dict__)
    click.echo(f"{key_id}\t{after.tier}\t{after.status}")


@keys.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    _update(key_id, status="revoked")


@keys.command("tier")
@click.argument("key_id")
@click.argument("tier")
def keys_tier(key_id: str, tier: str) -> None:
    _update(key_id, tier=tier)


def print_demo_keys(rt: Runtime, wait_seconds: float = 15.0) -> None:
    """One new key per tier, printed for trying the proxy out (``make up``)."""
    assert rt.redis is not None
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            rt.redis.ping()
            break
        except redis.RedisError:
            if time.monotonic() > deadline:
                click.echo("demo keys: Redis did not answer", err=True)
                return
            time.sleep(0.2)
    lines = []
    for tier in rt.policy.tiers:
        api_key, record = rt.keys.create(tier, f"demo-{tier}")
        audit("key.create", "api_key", record.key_id, after=record.__dict__)
        lines.append(f"  {tier:<14} {api_key}")
    click.echo(f"demo API keys (send as 'Authorization: Bearer <key>' to http://127.0.0.1:{rt.settings.server.port}):")
    click.echo("\n".join(lines))


@keys.command("demo", help="Create one key per tier and print them.")
def keys_demo() -> None:
    print_demo_keys(runtime())


@cli.group(help="IP and CIDR bans shared by every proxy replica.")
def bans() -> None:
    pass


@bans.command("list")
def bans_list() -> None:
    for ban in runtime().bans.active():
        click.echo(f"{ban.network}\t{ban.source}\t{ban.reason}\tuntil {readable_time(ban.expires_at)}")


@bans.command("add")
@click.argument("network")
@click.option("--seconds", type=int, default=3600)
@click.option("--reason", default="manual")
def bans_add(network: str, seconds: int, reason: str) -> None:
    wanted = checked(NewBan, network=network, seconds=seconds, reason=reason)
    ban = runtime().bans.ban(wanted.network, wanted.reason, "manual", wanted.seconds)
    assert ban is not None
    audit("ban.create", "ban", ban.network, after=ban.as_dict())
    click.echo(f"banned {ban.network} for {seconds}s")


@bans.command("remove")
@click.argument("network")
def bans_remove(network: str) -> None:
    if not runtime().bans.unban(network):
        raise click.UsageError(f"no ban on {network}")
    audit("ban.delete", "ban", network)
    click.echo(f"removed ban on {network}")


@cli.group(help="The shared response cache (cache.*).")
def cache() -> None:
    pass


@cache.command("purge")
@click.option("--url", "urls", multiple=True, help="A path with its query, or an absolute URL (repeatable).")
@click.option("--tag", "tags", multiple=True, help="A Surrogate-Key tag (repeatable).")
def cache_purge(urls: tuple[str, ...], tags: tuple[str, ...]) -> None:
    """As the admin API's purges: deleted in Redis (standalone, Sentinel or Cluster, as redis.url says),
    announced to every worker of every replica on rl:changes, forwarded to the CDN, audited."""
    if not (urls or tags):
        raise click.UsageError("give --url, --tag or both")
    url_purge = checked(UrlPurge, urls=list(urls)) if urls else None
    tag_purge = checked(TagPurge, tags=list(tags)) if tags else None
    response_cache = runtime().cache
    if response_cache is None:
        raise click.UsageError("the response cache is off (cache.enabled is false)")
    if url_purge is not None:
        result = response_cache.purge(url_purge.urls, [])
        audit("cache.purge_urls", "cache", "urls", after=result)
        for target in result["urls"]:
            click.echo(f"purged url {target}")
        _echo_cdn(result)
    if tag_purge is not None:
        result = response_cache.purge([], tag_purge.tags)
        audit("cache.purge_tags", "cache", "tags", after=result)
        for tag, count in result["tags"].items():
            click.echo(f"purged tag {tag}\t{count} URLs")
        _echo_cdn(result)


def _echo_cdn(result: dict[str, Any]) -> None:
    for call in result["cdn"]["calls"]:
        outcome = call["status"] if call.get("status") is not None else call.get("error")
        click.echo(f"cdn {result['cdn']['provider']} {call['kind']}: {outcome}", err=True)


def main() -> None:
    run(cli)


if __name__ == "__main__":
    main()
