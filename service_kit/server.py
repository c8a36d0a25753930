"""Run a service under granian, the WSGI server chosen by bench/wsgi_servers.py (see bench/RESULTS.md).

Granian starts N worker processes. With more than one, prometheus-client must run in multiprocess mode,
which it decides when it is first imported; so ``serve`` sets PROMETHEUS_MULTIPROC_DIR (wiped first: stale
files from an earlier run would add old counts) and then *replaces* this process with granian, whose
workers import the app with the variable already set. Counters and histograms are summed across workers;
gauges of shared state come from scrape-time collectors (see service_kit.metrics).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

from service_kit.settings import ServerSettings

STARTED_AT_VARIABLE = "VIBELUX_STARTED_AT"  # what vibelux_start_time_seconds reports in every worker
RUN_DIR = Path(os.environ.get("VIBELUX_RUN_DIR", ".run"))


def granian_command(target: str, settings: ServerSettings) -> list[str]:
    return [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        "wsgi",
        "--host",
        settings.host,
        "--port",
        str(settings.port),
        "--workers",
        str(settings.workers),
        "--blocking-threads",
        str(settings.blocking_threads),
        "--respawn-failed-workers",
        "--workers-kill-timeout",
        "10",
        "--no-access-log",
        target,
    ]


def prepare_multiprocess_dir(service: str, run_dir: Path = RUN_DIR) -> Path:
    directory = (run_dir / "prometheus-multiproc" / service).resolve()
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return directory


def serve(service: str, target: str, settings: ServerSettings) -> None:
    """Replace this process with granian serving ``target`` (``package.module:app``)."""
    env = dict(os.environ)
    env[STARTED_AT_VARIABLE] = repr(time.time())  # one start for all workers: a respawned one is no deploy
    if settings.workers > 1:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(prepare_multiprocess_dir(service))
    else:
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    command = granian_command(target, settings)
    sys.stdout.flush()
    os.execve(command[0], command, env)  # noqa: S606 - replacing this process is the point
