"""The release scenarios of issue 17 on real processes, at small load and short intervals: two demo
upstream colours, the proxy (granian, admin API, the response cache on ``/api/v1/*`` as shipped), Redis,
Prometheus scraping the proxy, and ``vibelux-release`` as its own process. The full 200 rps x 60 s
measurement is bench/releases.py.

One rig serves the whole module (starting it is most of the cost); ``fresh`` puts it back between tests:
no release and its counters in Redis, blue at 100% on the data path, and green restarted when a test needs
it to fail or never be ready. Assertions are outcomes and orderings (rolled back, 0 failed requests, never
received traffic), never durations; waits poll for what they wait for."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families

from releases.store import COMMANDS_KEY, EVENT_TIMES_KEY, EVENTS_KEY, LEASE_KEY, STATE_KEY
from tests.releases.rig import (
    KEYS,
    DemoColour,
    Load,
    ProxyStack,
    prometheus_for,
    proxy_config,
    release_state,
    weights,
)
from tests.servers import PrometheusServer, RedisServer, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]
RPS = 40
# Tests run in file order: those with a healthy green first, so green restarts only twice.
# Scraped every 0.5 s. At 100% a 3 s window holds about 120 requests, all after the step: enough for the
# analysis to judge the p99 (releases/analysis.py, min_latency_requests); at 25% it judges the errors only.
ANALYSIS = {"interval_seconds": 3.0, "window_seconds": 3.0}
GATE = {"timeout_seconds": 1.5, "retry_seconds": 0.5, "smoke": [{"path": "/api/v1/users"}]}
CACHED = "/api/v1/catalog"  # the demo's one answer a shared cache may store, naming its colour


@dataclass
class Rig:
    blue: DemoColour
    green: DemoColour
    stack: ProxyStack
    prometheus: PrometheusServer
    redis: redis.Redis

    def events(self) -> list[str]:
        state = release_state(self.stack)
        return [e["event"] for e in state["events"]] if state else []

    def get(self, path: str, key: str) -> requests.Response:
        return requests.get(f"{self.stack.url}{path}", headers={"Authorization": f"Bearer {key}"}, timeout=10)

    def colour_of(self, key: str) -> str:
        return self.get("/api/v1/users", key).headers.get("X-Demo-Colour", "")

    def lease_holder(self) -> int | None:
        """The pid of the controller holding the release lease (its token is ``host:pid``)."""
        token = self.redis.get(LEASE_KEY)
        return int(bytes(token).decode().rsplit(":", 1)[1]) if isinstance(token, bytes) else None

    def set_weights(self, blue: int, green: int) -> None:
        """As the controller sets them (Redis, announced); returns once the data path follows them."""
        answer = self.stack.admin("PUT", "/upstreams/weights", json={"weights": {"blue": blue, "green": green}})
        answer.raise_for_status()
        expected = {"blue"} if green == 0 else {"green"} if blue == 0 else {"blue", "green"}
        wait_until(lambda: {self.colour_of(key) for key in KEYS[:20]} == expected, timeout=10)

    def reset(self, green_fail_percent: int = 0, green_never_ready: bool = False) -> None:
        """No release, blue at 100% on the data path, then green restarted if it must behave otherwise (after
        the weights, so a restarted green's request counts start at 0 with no traffic on its way to it)."""
        self.redis.delete(STATE_KEY, COMMANDS_KEY, EVENTS_KEY, EVENT_TIMES_KEY, LEASE_KEY)
        self.set_weights(100, 0)
        wanted = (green_fail_percent, green_never_ready)
        if wanted != (self.green.fail_percent, self.green.never_ready) or self.green.process is None:
            self.green.stop()
            self.green.fail_percent, self.green.never_ready = wanted
            self.green.start()


@pytest.fixture(scope="module")
def rig(redis_server: RedisServer) -> Iterator[Rig]:
    if redis_server.process is None:
        redis_server.start()
    redis_server.flush()
    blue, green = DemoColour("blue"), DemoColour("green")
    stack = ProxyStack()
    prometheus = prometheus_for(stack, scrape_seconds=0.5)
    stack.config = proxy_config(blue, green, redis_server.url, prometheus.url, analysis=ANALYSIS, gate=GATE)
    processes = (blue, green, stack, prometheus)
    client = redis.Redis.from_url(redis_server.url)
    try:
        with ThreadPoolExecutor(len(processes)) as starting:  # each start mostly waits for its readiness
            list(starting.map(lambda process: process.start(), processes))
        yield Rig(blue, green, stack, prometheus, client)
    finally:
        client.close()
        for process in reversed(processes):
            process.close()


@pytest.fixture
def make_rig(rig: Rig) -> Callable[..., Rig]:
    """The shared rig, reset for one test (``Rig.reset``'s arguments: how green behaves)."""

    def make(green_fail_percent: int = 0, green_never_ready: bool = False) -> Rig:
        rig.reset(green_fail_percent, green_never_ready)
        return rig

    return make


def wait_for_release(rig: Rig, condition: Callable[[dict[str, Any]], bool], timeout: float) -> None:
    """Wait until the release state meets ``condition``; on a timeout, say where the release stood."""
    try:
        wait_until(lambda: condition(release_state(rig.stack) or {}), timeout=timeout)
    except TimeoutError:
        state = release_state(rig.stack) or {}
        raise AssertionError(
            f"release {state.get('status')} at {state.get('weight')}%: {state.get('message')}"
        ) from None


def state_id(rig: Rig) -> str:
    state = release_state(rig.stack)
    assert state is not None
    return str(state["id"])


def wait_for_answers(load: Load, more: int, timeout: float = 30) -> None:
    """Until the load has sent ``more`` requests from now: traffic before a release, or after one."""
    target = load.report.sent + more
    wait_until(lambda: load.report.sent >= target, timeout=timeout)


def cached_answers(stack: ProxyStack) -> dict[str, float]:
    """ratelimit_pool_cached_answers_total of 2xx by colour, from the proxy's /metrics."""
    text = requests.get(f"{stack.admin_url}/metrics", timeout=5).text
    return {
        sample.labels["colour"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "ratelimit_pool_cached_answers_total" and sample.labels["status_class"] == "2xx"
    }


def stop_all(processes: list[subprocess.Popen[str]]) -> None:
    """SIGTERM to all at once, then wait: a controller ends its round and lets go of the lease first, which
    on a machine with a load average near 20 took more than 10 s; SIGKILL after 60 s."""
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def ordered(events: list[str], *expected: str) -> bool:
    """``expected`` appear in ``events`` in this order (others may come between)."""
    remaining = iter(events)
    return all(any(e == wanted for e in remaining) for wanted in expected)


def test_release_full_switch_blue_to_green_under_load_fails_no_request_and_survives_a_controller_kill(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig()
    load = Load(rig.stack.url, RPS).start()
    controllers = []
    try:
        wait_for_answers(load, RPS // 2)
        started = rig.stack.admin("POST", "/releases", json={"to": "green"})
        assert started.status_code == 201, started.text
        assert started.json()["status"] == "gating"
        # Two controllers, as two replicas run them: one holds the lease and acts, the other waits for it.
        controllers = [rig.stack.release_cli("run", wait=False) for _ in range(2)]
        wait_for_release(rig, lambda state: state.get("weight") == 25, timeout=30)
        killed = next(c for c in controllers if c.pid == rig.lease_holder())
        killed.kill()  # mid-release, without letting go of its lease: the other must wait it out
        killed.wait(10)
        wait_for_release(rig, lambda state: state.get("status") == "succeeded", timeout=60)
        wait_for_answers(load, RPS // 2)
    finally:
        report = load.stop()
        stop_all(controllers)
    standby = next(c for c in controllers if c is not killed)
    finished = rig.stack.admin("GET", "/audit", params={"action": "release.succeeded", "target_id": state_id(rig)})
    assert [r["actor"] for r in finished.json()["data"]] == [f"release-controller:{socket.gethostname()}:{standby.pid}"]
    audit = rig.stack.admin("GET", "/audit").json()["data"]
    state = release_state(rig.stack)
    assert state is not None
    assert report.failed == 0, (report.statuses, report.failures)
    assert report.proxy_errors == 0
    assert report.colours["blue"] > 0 and report.colours["green"] > 0
    assert ordered(rig.events(), "started", "gate_passed", "step", "analysis_passed", "step", "analysis_passed")
    assert rig.events()[-1] == "succeeded"
    assert weights(rig.stack) == {"blue": 0, "green": 100}
    assert {rig.colour_of(key) for key in KEYS[:20]} == {"green"}
    actions = {record["action"] for record in audit}
    assert {"release.start", "release.gate_passed", "release.step", "release.succeeded"} <= actions
    metrics = requests.get(f"{rig.stack.admin_url}/metrics", timeout=5).text
    assert 'release_events_total{event="succeeded"} 1.0' in metrics
    assert 'release_traffic_weight{colour="green"} 100.0' in metrics


def test_cached_answers_follow_the_callers_colour_during_a_canary_and_after_promotion(
    make_rig: Callable[..., Rig],
) -> None:
    """The proxy's shared cache during a 50/50 canary: a caller sticky to green is never served blue's cached
    body (and the reverse); after promotion to 100% green no blue body is served to anyone."""
    rig = make_rig()
    rig.set_weights(50, 50)
    by_colour: dict[str, list[str]] = {"blue": [], "green": []}
    for key in KEYS[:40]:
        by_colour[rig.colour_of(key)].append(key)
    assert by_colour["blue"] and by_colour["green"]
    canary = [(colour, key, rig.get(CACHED, key)) for colour, keys in by_colour.items() for key in keys for _ in (1, 2)]
    assert {(colour, answer.json()["colour"]) for colour, _, answer in canary} == {("blue", "blue"), ("green", "green")}
    assert {answer.headers["X-Cache"] for _, _, answer in canary} == {"MISS", "HIT"}  # each colour's entry served
    rig.set_weights(0, 100)  # what the controller's promote writes
    promoted = {rig.get(CACHED, key).json()["colour"] for key in by_colour["blue"] + by_colour["green"]}
    assert promoted == {"green"}
    cached = cached_answers(rig.stack)
    assert cached["blue"] >= len(by_colour["blue"]) and cached["green"] >= len(by_colour["green"])


def test_release_green_answering_20_percent_5xx_is_rolled_back_at_its_first_analysis(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig(green_fail_percent=20)
    load = Load(rig.stack.url, RPS).start()
    try:
        wait_for_answers(load, RPS // 2)
        controller = rig.stack.release_cli("start", "green", "--wait")
        served_after_rollback = sum(n for p, n in rig.green.served().items() if p.startswith("/api/"))
        wait_for_answers(load, RPS)  # a second of traffic after the rollback: none of it may reach green
    finally:
        report = load.stop()
    output = controller.stdout.read() if controller.stdout else ""
    assert controller.returncode == 1, output
    state = release_state(rig.stack)
    assert state is not None and state["status"] == "rolled_back"
    assert state["last_analysis"]["check"] == "error_ratio"
    assert state["last_analysis"]["value"] > 0.05
    assert "error_ratio of green is" in state["message"]
    events = rig.events()
    # rolled back at the first analysis after traffic moved: no analysis passed in between
    assert events.index("rolled_back") > events.index("step")
    assert "analysis_passed" not in events
    assert weights(rig.stack) == {"blue": 100, "green": 0}
    assert sum(n for p, n in rig.green.served().items() if p.startswith("/api/")) == served_after_rollback
    assert report.proxy_errors == 0 and not report.failures  # the only failures were green's own 500s
    assert report.colours["green"] > 0


def test_release_green_that_never_becomes_ready_never_receives_traffic(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(green_never_ready=True)
    load = Load(rig.stack.url, RPS).start()
    try:
        wait_for_answers(load, RPS // 2)
        controller = rig.stack.release_cli("start", "green", "--wait")
        wait_for_answers(load, RPS // 2)
    finally:
        report = load.stop()
    output = controller.stdout.read() if controller.stdout else ""
    assert controller.returncode == 1, output
    state = release_state(rig.stack)
    assert state is not None and state["status"] == "gate_failed"
    assert "/readyz: status 503, expected 200" in state["message"]
    assert "step" not in rig.events()
    assert not [path for path in rig.green.served() if path.startswith("/api/")]
    assert report.colours["green"] == 0
    assert report.failed == 0
    assert weights(rig.stack) == {"blue": 100, "green": 0}
