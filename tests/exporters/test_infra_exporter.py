"""The infra exporter as a process: agrees with node_exporter on this host; bad config stops start-up."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.exporters.helpers import ExporterProcess, run_cli, write_config
from tests.servers import free_port, wait_until

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def series(body: str) -> Series:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): float(sample.value)
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


@pytest.fixture(scope="module")
def node_exporter() -> Iterator[str]:
    """Debian's prometheus-node-exporter limited to the collectors this exporter reimplements."""
    binary = shutil.which("prometheus-node-exporter")
    assert binary, "prometheus-node-exporter is a system dependency (scripts/system-deps.sh)"
    port = free_port()
    collectors = ["cpu", "loadavg", "meminfo", "diskstats", "filesystem", "netdev"]
    process = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{port}", "--collector.disable-defaults"]
        + [f"--collector.{name}" for name in collectors],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/metrics"
    wait_until(lambda: requests.get(url, timeout=1).status_code == 200)
    yield url
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="module")
def infra_exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExporterProcess]:
    port = free_port()
    path = tmp_path_factory.mktemp("infra") / "infra.yml"
    # this very exporter (other people's exporters may run on the same machine), and the test runner
    groups = {"exporters": re.escape(f"exporters.infra.cli --config {path}"), "pytest": "pytest"}
    config = write_config(path, {"server": {"port": port}, "processes": groups})
    exporter = ExporterProcess("infra", config, port)
    yield exporter
    exporter.stop()


def pick(data: Series, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: value for (metric, labels), value in data.items() if metric == name}


@pytest.mark.integration
def test_values_agree_with_node_exporter_on_this_host(node_exporter: str, infra_exporter: ExporterProcess) -> None:
    theirs = series(requests.get(node_exporter, timeout=5).text)
    ours = series(infra_exporter.scrape()[0])

    for name in ("node_memory_MemTotal_bytes", "node_memory_SwapTotal_bytes"):
        assert ours[(name, ())] == theirs[(name, ())], name
    for name in ("node_memory_MemAvailable_bytes", "node_memory_MemFree_bytes", "node_memory_Buffers_bytes"):
        assert ours[(name, ())] == pytest.approx(theirs[(name, ())], rel=0.05), name  # memory moves meanwhile

    # same cpu/mode series; counters read a few milliseconds apart (USER_HZ ticks of 10 ms)
    cpu_ours, cpu_theirs = pick(ours, "node_cpu_seconds_total"), pick(theirs, "node_cpu_seconds_total")
    assert set(cpu_ours) == set(cpu_theirs)
    for labels, value in cpu_theirs.items():
        assert cpu_ours[labels] == pytest.approx(value, abs=2.0), labels

    # same disks (node_exporter's default exclusions), same counters
    for name in ("node_disk_read_bytes_total", "node_disk_reads_completed_total", "node_disk_io_time_seconds_total"):
        disk_ours, disk_theirs = pick(ours, name), pick(theirs, name)
        assert set(disk_ours) == set(disk_theirs), name
        for labels, value in disk_theirs.items():
            assert disk_ours[labels] == pytest.approx(value, rel=0.01, abs=1.0), (name, labels)

    # filesystems both see: identical sizes (node_exporter reads /proc/1/mounts, psutil /proc/self/mounts)
    size_ours, size_theirs = pick(ours, "node_filesystem_size_bytes"), pick(theirs, "node_filesystem_size_bytes")
    common = set(size_ours) & set(size_theirs)
    assert any(dict(labels)["mountpoint"] == "/" for labels in common)
    for labels in common:
        assert size_ours[labels] == size_theirs[labels], labels

    # network devices both see: same byte counters (loopback traffic moves during the comparison)
    net_ours, net_theirs = (
        pick(ours, "node_network_transmit_bytes_total"),
        pick(theirs, "node_network_transmit_bytes_total"),
    )
    assert set(net_ours) & set(net_theirs)
    for labels in set(net_ours) & set(net_theirs):
        assert net_ours[labels] == pytest.approx(net_theirs[labels], rel=0.01, abs=65536), labels

    assert ours[("node_load1", ())] == pytest.approx(theirs[("node_load1", ())], abs=1.0)


@pytest.mark.integration
def test_process_groups_report_the_running_exporter_and_the_test_runner(infra_exporter: ExporterProcess) -> None:
    ours = series(infra_exporter.scrape()[0])
    assert ours[("vibelux_processes", (("name", "exporters"),))] == 1.0
    assert ours[("vibelux_processes", (("name", "pytest"),))] >= 1.0
    assert ours[("vibelux_process_resident_memory_bytes", (("name", "exporters"),))] > 10_000_000
    assert ours[("vibelux_process_threads", (("name", "exporters"),))] >= 2
    assert ours[("vibelux_process_open_fds", (("name", "exporters"),))] >= 3
    assert (
        "vibelux_build_info",
        (("python", sys.version.split()[0]), ("service", "exporter-infra"), ("version", "0.1.0")),
    ) in ours


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"collectors": ["cpu", "textfile"]}, "collectors: expected names from cpu, loadavg"),
        ({"processes": {"proxy": "(unclosed"}}, "processes.proxy: expected a regular expression"),
        ({"disk_device_exclude": "[a-"}, "disk_device_exclude: expected a regular expression"),
        ({"server": {"port": 70000}}, "server.port: expected a TCP port between 1 and 65535"),
    ],
)
def test_bad_config_stops_start_up_with_one_line(tmp_path: Path, config: dict[str, object], message: str) -> None:
    path = write_config(tmp_path / "infra.yml", config)
    code, _, stderr = run_cli("infra", "--config", str(path), "serve")
    assert code == 2
    assert stderr.count("\n") == 1
    assert stderr.startswith(f"config error in {path}: {message}")


def test_shipped_config_is_valid() -> None:
    assert run_cli("infra", "--config", "config/exporters/infra.yml", "check-config") == (0, "configuration ok\n", "")
