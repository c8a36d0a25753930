"""``vibelux-alerting``: what Prometheus and Alertmanager run, rendered at start-up from the repository's files.

vibelux-alerting url alertmanager                  one public base URL (config/urls.yml + VIBELUX_URLS_*)
vibelux-alerting rules --out .run/alert_rules      alert_rules/*.yml with their links on those URLs
vibelux-alerting alertmanager config/alertmanager.yml --files-base DIR --out DIR/alertmanager.yml

Rules. alert_rules/*.yml are the one source and carry `make up`'s links in full (config/urls.yml's values), so
promtool's unit tests check exactly the annotations Prometheus loads, and a rule file read without rendering
still links somewhere real. Rendering rebuilds each `runbook_url` from its page and anchor and each
`dashboard_url` from its dashboard uid on the configured bases, line by line, so comments and layout stay.
Prometheus's own template variables could not do it: `$externalURL` is Prometheus's address only, and putting
the other addresses in external labels would add them to every alert and stored series.

Alertmanager. Its `*_file` credentials are read at each notification (relative ones against the process's
working directory, not the config's), so a missing file fails every notification of that integration, and
says so only then. Rendering makes every `*_file` path absolute under `--files-base` and leaves out each
integration whose credential file is missing or empty, naming them once; its `templates:` are copied beside
the rendered file, which is then self-contained.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import shutil
from pathlib import Path
from typing import Any

import click
import yaml

from service_kit.config import ConfigError
from service_kit.urls import PublicUrls, load_urls

RULE_LINK = re.compile(r"^(?P<indent>\s*)(?P<key>runbook_url|dashboard_url): (?P<url>\S+)\s*$")
RUNBOOK = re.compile(r"/(?P<page>[\w-]+\.md)#(?P<anchor>[\w-]+)$")
DASHBOARD = re.compile(r"/d/(?P<uid>[\w-]+)$")
# Settings an integration inherits from `global:` when it has none of its own: credential files it reads.
INHERITED_FILES = {
    "slack_configs": ("api_url", "slack_api_url_file"),
    "email_configs": ("auth_password", "smtp_auth_password_file"),
}


class RenderError(ValueError):
    """A source file the renderer cannot read as promised; the message names the file and line."""


def render_rules(text: str, urls: PublicUrls, source: str) -> str:
    """One rule file's text with every runbook_url and dashboard_url rebuilt on `urls`."""
    lines = []
    for number, line in enumerate(text.splitlines(), start=1):
        link = RULE_LINK.match(line)
        if link:
            pattern = RUNBOOK if link["key"] == "runbook_url" else DASHBOARD
            found = pattern.search(link["url"])
            if found is None:
                shape = "<base>/<page>.md#<anchor>" if link["key"] == "runbook_url" else "<base>/d/<uid>"
                raise RenderError(f"{source}:{number}: {link['key']} must look like {shape}, got {link['url']}")
            url = urls.runbook(found["page"], found["anchor"]) if pattern is RUNBOOK else urls.dashboard(found["uid"])
            line = f"{link['indent']}{link['key']}: {url}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def write_rules(source: Path, out: Path, urls: PublicUrls) -> list[Path]:
    """Render every `source/*.yml` into `out` (emptied of earlier renderings first)."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.yml"):
        stale.unlink()
    written = []
    for path in sorted(source.glob("*.yml")):
        target = out / path.name
        target.write_text(render_rules(path.read_text(), urls, str(path)))
        written.append(target)
    return written


def render_alertmanager(config: dict[str, Any], files_base: Path) -> tuple[dict[str, Any], list[str]]:
    """`config` with credential paths absolute under `files_base` and the integrations whose credential file
    is missing or empty left out; also what was left out, as "receiver/integration (file)"."""
    rendered = copy.deepcopy(config)
    global_section = rendered.get("global", {})
    for key, value in global_section.items():
        if key.endswith("_file"):
            global_section[key] = str(files_base / value)
    disabled = []
    for receiver in rendered.get("receivers", []):
        for kind in [key for key in receiver if key.endswith("_configs")]:
            kept = []
            for integration in receiver[kind]:
                files = _credential_files(integration, files_base)
                own, inherited = INHERITED_FILES.get(kind, ("", ""))
                if inherited in global_section and not any(key.startswith(own) for key in integration):
                    files.append(Path(global_section[inherited]))
                missing = [path for path in files if not path.is_file() or path.stat().st_size == 0]
                if missing:
                    disabled.append(f"{receiver['name']}/{kind.removesuffix('_configs')} ({missing[0].name})")
                else:
                    kept.append(integration)
            if kept:
                receiver[kind] = kept
            else:
                del receiver[kind]
    return rendered, disabled


def _credential_files(section: dict[str, Any], files_base: Path) -> list[Path]:
    """Every `*_file` setting in an integration (http_config included), made absolute in place."""
    files = []
    for key, value in section.items():
        if isinstance(value, dict):
            files += _credential_files(value, files_base)
        elif key.endswith("_file") and isinstance(value, str):
            section[key] = str(files_base / value)
            files.append(Path(section[key]))
    return files


def write_alertmanager(config_path: Path, files_base: Path, out: Path) -> list[str]:
    """Render `config_path` into `out`, its templates copied beside it; returns what was left out."""
    config = yaml.safe_load(config_path.read_text())
    rendered, disabled = render_alertmanager(config, files_base)
    out.parent.mkdir(parents=True, exist_ok=True)
    for template in rendered.get("templates", []):
        source = config_path.parent / template
        if not source.is_file():
            raise RenderError(f"{config_path}: templates: {template} does not exist")
        shutil.copyfile(source, out.parent / template)
    out.write_text(yaml.safe_dump(rendered, sort_keys=False))
    return disabled


@click.group(help=__doc__.split("\n", 1)[0])
def cli() -> None:
    pass


@cli.command(help="Print one public base URL.")
@click.argument("key", type=click.Choice([field.name for field in dataclasses.fields(PublicUrls)]))
def url(key: str) -> None:
    urls = _urls()
    click.echo(urls.runbooks_base if key == "runbooks" else getattr(urls, key))


@cli.command(help="Render the alert rules with their links on the public URLs.")
@click.option("--source", type=click.Path(path_type=Path), default=Path("alert_rules"), show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True)
def rules(source: Path, out: Path) -> None:
    try:
        write_rules(source, out, _urls())
    except RenderError as exc:
        raise click.ClickException(str(exc)) from None


@cli.command(help="Render an Alertmanager config for the credentials present.")
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--files-base", type=click.Path(path_type=Path), required=True, help="what *_file paths are under")
@click.option("--out", type=click.Path(path_type=Path), required=True)
def alertmanager(config: Path, files_base: Path, out: Path) -> None:
    try:
        disabled = write_alertmanager(config, files_base.resolve(), out)
    except RenderError as exc:
        raise click.ClickException(str(exc)) from None
    if disabled:
        click.echo(f"alertmanager: no credentials, so not delivering to: {', '.join(disabled)}", err=True)


def _urls() -> PublicUrls:
    try:
        return load_urls()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
