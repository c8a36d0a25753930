"""The README's flags SDK examples, run as written against a real flags service holding the demo flags.

The only change made to the text is the service's address: the README's is ``make up``'s port 8082, the
test's a free port. The standalone examples run as scripts in a directory holding ``.run/`` as ``make up``
leaves it; the Flask one, a fragment of a service-kit app, runs in such an app.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask, g, request
from werkzeug.serving import make_server

from flags_service.app import create_app
from flags_service.demo import seed
from flags_service.sdk import FlagsClient
from flags_service.settings import FlagsSettings
from service_kit.auth import Principal
from tests.servers import free_port

REPO = Path(__file__).resolve().parents[2]
README_URL = "http://127.0.0.1:8082"
pytestmark = pytest.mark.integration


def flags_section() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("## Feature flags")
    return text[start : text.index("\n## ", start + 1)]


def examples() -> list[tuple[str, str | None]]:
    """Each ``python`` block of the flags section, with the ``text`` block that follows it (its output)."""
    blocks = re.findall(r"```(\w+)\n(.*?)```", flags_section(), flags=re.DOTALL)
    return [
        (code, blocks[i + 1][1] if i + 1 < len(blocks) and blocks[i + 1][0] == "text" else None)
        for i, (language, code) in enumerate(blocks)
        if language == "python"
    ]


@dataclass
class DemoService:
    url: str
    workdir: Path  # what the examples' working directory would be: the repository root after make up


@pytest.fixture
def demo_service(settings: FlagsSettings, tmp_path: Path) -> Iterator[DemoService]:
    """``make up``'s flags service in small: demo flags and keys seeded, keys written to .run/."""
    _, keys = seed(settings)
    (tmp_path / ".run").mkdir()
    (tmp_path / ".run" / "flags-demo-keys.json").write_text(json.dumps(keys))
    app = create_app(settings)
    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield DemoService(f"http://127.0.0.1:{server.server_port}", tmp_path)
    server.shutdown()
    thread.join(5)
    app.extensions["flags"].recorder.close()
    app.extensions["flags"].cache.close()


def run_as_written(code: str, service: DemoService) -> subprocess.CompletedProcess[str]:
    assert README_URL in code
    return subprocess.run(
        [sys.executable, "-c", code.replace(README_URL, service.url)],
        cwd=service.workdir,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_readme_has_the_three_python_examples_two_with_their_output() -> None:
    assert [output is not None for _, output in examples()] == [True, False, True]


@pytest.mark.parametrize("index", [0, 2], ids=["flags_client", "openfeature"])
def test_readme_standalone_example_prints_its_documented_output(index: int, demo_service: DemoService) -> None:
    code, output = examples()[index]
    result = run_as_written(code, demo_service)
    assert result.returncode == 0, result.stderr
    assert result.stdout == output
    assert "WARNING" not in result.stderr and "unreachable" not in result.stderr


def test_readme_flask_example_answers_a_paying_caller_and_hides_the_route_from_a_free_one(
    demo_service: DemoService,
) -> None:
    code, _ = examples()[1]
    server_key = json.loads((demo_service.workdir / ".run" / "flags-demo-keys.json").read_text())["server"]
    app = Flask("readme")

    @app.before_request
    def authenticate() -> None:  # what the service kit's authentication leaves on g
        tier = request.headers["X-Tier"]
        g.principal = Principal(id="user-42", role="customer", kind="token", tier=tier)

    with FlagsClient(demo_service.url, server_key) as client:
        exec(code, {"app": app, "client": client})  # noqa: S102 -- the README fragment as written, in its app
        web = app.test_client()
        assert web.get("/summaries", headers={"X-Tier": "professional"}).json == {"limit_mb": 100}
        assert web.get("/summaries", headers={"X-Tier": "free"}).status_code == 404
