"""``vibelux-flags``: the kit's commands (serve, check-config, config env, db upgrade, tokens) plus flags.

Flag commands talk to the running service's admin API (``--url``, token from ``VIBELUX_FLAGS_TOKEN``), so
every change is validated, versioned, audited and announced to all replicas exactly like an API call.
``seed-demo`` writes the demo flags straight into the database before the service starts (``make up``).
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime
from typing import Any

import click
import requests

from flags_service.app import MIGRATIONS
from flags_service.settings import FlagsSettings
from flags_service.storage.tables import metadata
from service_kit.cli import readable_time, run, service_cli, settings_loader

load_settings = settings_loader("flags", FlagsSettings, "FLAGS", "config/flags.yml")
cli = service_cli(
    "flags",
    load_settings,
    FlagsSettings,
    "FLAGS",
    "flags_service.wsgi:app",
    database_url=lambda settings: settings.database.url,
    migrations=MIGRATIONS,
    metadata=metadata,
)

_PERCENT = re.compile(r"^(\d{1,3}(?:\.\d{1,2})?)%?$")


class Api:
    """A thin admin API client; errors become one readable line and exit code 1."""

    def __init__(self, url: str, token: str | None) -> None:
        if not token:
            raise click.UsageError("set VIBELUX_FLAGS_TOKEN (an admin token: vibelux-flags tokens create --role admin)")
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            response = self.session.request(method, f"{self.url}/api/v1{path}", json=body, timeout=10)
        except requests.RequestException as exc:
            raise click.ClickException(f"cannot reach {self.url}: {type(exc).__name__}") from None
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                details = "; ".join(f"{field}: {message}" for field, message in error.get("details", {}).items())
                text = f"{response.status_code} {error['message']}" + (f" ({details})" if details else "")
            except (ValueError, KeyError):
                text = f"{response.status_code} {response.text[:200]}"
            raise click.ClickException(text)
        return response.json() if response.content else None


api_options = [
    click.option("--url", envvar="VIBELUX_FLAGS_URL", default="http://127.0.0.1:8082", show_default=True),
    click.option("--token", envvar="VIBELUX_FLAGS_TOKEN", default=None, help="Admin token (env VIBELUX_FLAGS_TOKEN)."),
]


def with_api(function: Any) -> Any:
    for option in reversed(api_options):
        function = option(function)
    return function


def _summary(flag: dict[str, Any]) -> str:
    states = ", ".join(f"{env}={'on' if state['enabled'] else 'off'}" for env, state in flag["environments"].items())
    return f"{flag['key']} v{flag['version']} ({flag['type']}): {states}"


@cli.command(help="Create a flag (boolean on/off unless --variants is given).")
@click.argument("key")
@click.option("--type", "flag_type", default="boolean", type=click.Choice(["boolean", "string", "number", "json"]))
@click.option("--variants", default=None, help='JSON object, e.g. \'{"a": "blue", "b": "green"}\'.')
@click.option("--off-variant", default=None)
@click.option("--description", default="")
@click.option("--owner", default="")
@click.option("--kind", default="release", type=click.Choice(["release", "experiment", "ops", "permission"]))
@click.option("--client-visible", is_flag=True, help="Let browser (client) SDK keys evaluate it.")
@with_api
def create(
    key: str,
    flag_type: str,
    variants: str | None,
    off_variant: str | None,
    description: str,
    owner: str,
    kind: str,
    client_visible: bool,
    url: str,
    token: str | None,
) -> None:
    try:
        parsed = json.loads(variants) if variants else {"on": True, "off": False}
    except ValueError:
        raise click.BadParameter("must be a JSON object", param_hint="--variants") from None
    document = {
        "key": key,
        "type": flag_type,
        "variants": parsed,
        "offVariant": off_variant or ("off" if "off" in parsed else next(iter(parsed), "")),
        "description": description,
        "owner": owner,
        "kind": kind,
        "clientVisible": client_visible,
    }
    click.echo(_summary(Api(url, token).call("POST", "/flags", document)))


@cli.command(help="Turn a flag on or off in one environment (flips it without --on/--off).")
@click.argument("key")
@click.option("--env", "environment", default="production", show_default=True)
@click.option("--on/--off", "enabled", default=None)
@with_api
def toggle(key: str, environment: str, enabled: bool | None, url: str, token: str | None) -> None:
    body = {} if enabled is None else {"enabled": enabled}
    flag = Api(url, token).call("POST", f"/flags/{key}/environments/{environment}/toggle", body)
    click.echo(_summary(flag))


@cli.command(help="Serve PERCENT (e.g. 25%) of users the --variant, the rest the off variant.")
@click.argument("key")
@click.argument("percent")
@click.option("--env", "environment", default="production", show_default=True)
@click.option("--variant", default=None, help="Defaults to the first variant that is not the off variant.")
@with_api
def rollout(key: str, percent: str, environment: str, variant: str | None, url: str, token: str | None) -> None:
    match = _PERCENT.match(percent.strip())
    if not match or float(match.group(1)) > 100:
        raise click.BadParameter("must be a percentage like 25% or 12.5", param_hint="PERCENT")
    body: dict[str, Any] = {"percentage": float(match.group(1))}
    if variant:
        body["variant"] = variant
    flag = Api(url, token).call("PUT", f"/flags/{key}/environments/{environment}/rollout", body)
    weights = flag["environments"][environment]["fallthrough"]["rollout"]
    total = sum(part["weight"] for part in weights)
    shares = ", ".join(f"{part['variant']} {100 * part['weight'] / total:g}%" for part in weights)
    click.echo(f"{_summary(flag)}; {environment} fallthrough: {shares}")


@cli.command(help="Show a flag's versions with what changed.")
@click.argument("key")
@with_api
def history(key: str, url: str, token: str | None) -> None:
    for entry in Api(url, token).call("GET", f"/flags/{key}/history")["data"]:
        when = readable_time(datetime.fromisoformat(entry["createdAt"]))
        click.echo(f"v{entry['version']}  {when}  {entry['action']}  by {entry['actor']}")
        for change in entry["changes"]:
            before, after = json.dumps(change["before"]), json.dumps(change["after"])
            click.echo(f"    {change['path']}: {before} -> {after}")


@cli.command("rollback", help="Restore the flag as it was at VERSION (as a new version).")
@click.argument("key")
@click.argument("version", type=int)
@with_api
def rollback_command(key: str, version: int, url: str, token: str | None) -> None:
    click.echo(_summary(Api(url, token).call("POST", f"/flags/{key}/rollback", {"version": version})))


@cli.command("sdk-key", help="Create an SDK key (server: full snapshots; client: OFREP, client-visible flags).")
@click.option("--env", "environment", required=True)
@click.option("--kind", type=click.Choice(["server", "client"]), required=True)
@click.option("--name", required=True)
@with_api
def sdk_key(environment: str, kind: str, name: str, url: str, token: str | None) -> None:
    created = Api(url, token).call("POST", "/sdk-keys", {"environment": environment, "kind": kind, "name": name})
    click.echo(created["token"])
    click.echo(f"created {kind} key {created['id']} for {environment}", err=True)


@cli.command("seed-demo", help="Create the demo flags and keys if missing (database direct; before serve).")
@click.option("--keys-file", default=None, help="Write the demo SDK keys here (JSON), for local use only.")
def seed_demo(keys_file: str | None) -> None:
    from flags_service.demo import seed

    created, keys = seed(load_settings())
    click.echo(f"demo flags: {', '.join(created) if created else 'already present'}")
    if keys and keys_file:
        with open(keys_file, "w", encoding="utf-8") as handle:
            json.dump(keys, handle, indent=2)
        os.chmod(keys_file, 0o600)
        click.echo(f"demo SDK keys written to {keys_file}")


def main() -> None:
    run(cli)


if __name__ == "__main__":
    main()
