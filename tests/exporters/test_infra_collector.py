"""Infra collectors: exact exposition for fixed readings, node_exporter exclusions, promtool lint."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator

import psutil
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from exporters.infra.collector import ALL_COLLECTORS, NodeCollector, ProcessGroup, ProcessGroupCollector
from tests.exporters.helpers import is_meminfo_camelcase_finding, promtool_findings
from tests.exporters.infra_fixed_system import FixedSystem
from tests.servers import wait_until

NODE_EXPOSITION = """\
# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.
# TYPE node_cpu_seconds_total counter
node_cpu_seconds_total{cpu="0",mode="idle"} 100.0
node_cpu_seconds_total{cpu="0",mode="iowait"} 0.5
node_cpu_seconds_total{cpu="0",mode="irq"} 0.0
node_cpu_seconds_total{cpu="0",mode="nice"} 0.0
node_cpu_seconds_total{cpu="0",mode="softirq"} 0.125
node_cpu_seconds_total{cpu="0",mode="steal"} 0.0
node_cpu_seconds_total{cpu="0",mode="system"} 2.25
node_cpu_seconds_total{cpu="0",mode="user"} 10.5
node_cpu_seconds_total{cpu="1",mode="idle"} 90.0
node_cpu_seconds_total{cpu="1",mode="iowait"} 0.25
node_cpu_seconds_total{cpu="1",mode="irq"} 0.0
node_cpu_seconds_total{cpu="1",mode="nice"} 1.0
node_cpu_seconds_total{cpu="1",mode="softirq"} 0.5
node_cpu_seconds_total{cpu="1",mode="steal"} 0.75
node_cpu_seconds_total{cpu="1",mode="system"} 3.0
node_cpu_seconds_total{cpu="1",mode="user"} 20.0
# HELP node_cpu_guest_seconds_total Seconds the CPUs spent in guests (VMs) for each mode.
# TYPE node_cpu_guest_seconds_total counter
node_cpu_guest_seconds_total{cpu="0",mode="user"} 0.0
node_cpu_guest_seconds_total{cpu="0",mode="nice"} 0.0
node_cpu_guest_seconds_total{cpu="1",mode="user"} 0.0
node_cpu_guest_seconds_total{cpu="1",mode="nice"} 0.0
# HELP node_load1 1m load average.
# TYPE node_load1 gauge
node_load1 0.5
# HELP node_load5 5m load average.
# TYPE node_load5 gauge
node_load5 0.25
# HELP node_load15 15m load average.
# TYPE node_load15 gauge
node_load15 0.125
# HELP node_memory_Active_bytes Memory information field Active_bytes.
# TYPE node_memory_Active_bytes gauge
node_memory_Active_bytes 1e+09
# HELP node_memory_Buffers_bytes Memory information field Buffers_bytes.
# TYPE node_memory_Buffers_bytes gauge
node_memory_Buffers_bytes 1e+08
# HELP node_memory_Inactive_bytes Memory information field Inactive_bytes.
# TYPE node_memory_Inactive_bytes gauge
node_memory_Inactive_bytes 2e+09
# HELP node_memory_MemAvailable_bytes Memory information field MemAvailable_bytes.
# TYPE node_memory_MemAvailable_bytes gauge
node_memory_MemAvailable_bytes 6e+09
# HELP node_memory_MemFree_bytes Memory information field MemFree_bytes.
# TYPE node_memory_MemFree_bytes gauge
node_memory_MemFree_bytes 4e+09
# HELP node_memory_MemTotal_bytes Memory information field MemTotal_bytes.
# TYPE node_memory_MemTotal_bytes gauge
node_memory_MemTotal_bytes 8e+09
# HELP node_memory_Shmem_bytes Memory information field Shmem_bytes.
# TYPE node_memory_Shmem_bytes gauge
node_memory_Shmem_bytes 5e+07
# HELP node_memory_Slab_bytes Memory information field Slab_bytes.
# TYPE node_memory_Slab_bytes gauge
node_memory_Slab_bytes 3e+08
# HELP node_memory_SwapFree_bytes Memory information field SwapFree_bytes.
# TYPE node_memory_SwapFree_bytes gauge
node_memory_SwapFree_bytes 7.5e+08
# HELP node_memory_SwapTotal_bytes Memory information field SwapTotal_bytes.
# TYPE node_memory_SwapTotal_bytes gauge
node_memory_SwapTotal_bytes 1e+09
# HELP node_disk_io_time_seconds_total Total seconds spent doing I/Os.
# TYPE node_disk_io_time_seconds_total counter
node_disk_io_time_seconds_total{device="vda"} 1.75
# HELP node_disk_read_bytes_total The total number of bytes read successfully.
# TYPE node_disk_read_bytes_total counter
node_disk_read_bytes_total{device="vda"} 409600.0
# HELP node_disk_read_time_seconds_total The total number of seconds spent by all reads.
# TYPE node_disk_read_time_seconds_total counter
node_disk_read_time_seconds_total{device="vda"} 1.5
# HELP node_disk_reads_completed_total The total number of reads completed successfully.
# TYPE node_disk_reads_completed_total counter
node_disk_reads_completed_total{device="vda"} 100.0
# HELP node_disk_reads_merged_total The total number of reads merged.
# TYPE node_disk_reads_merged_total counter
node_disk_reads_merged_total{device="vda"} 3.0
# HELP node_disk_write_time_seconds_total This is the total number of seconds spent by all writes.
# TYPE node_disk_write_time_seconds_total counter
node_disk_write_time_seconds_total{device="vda"} 0.25
# HELP node_disk_writes_completed_total The total number of writes completed successfully.
# TYPE node_disk_writes_completed_total counter
node_disk_writes_completed_total{device="vda"} 50.0
# HELP node_disk_writes_merged_total The number of writes merged.
# TYPE node_disk_writes_merged_total counter
node_disk_writes_merged_total{device="vda"} 4.0
# HELP node_disk_written_bytes_total The total number of bytes written successfully.
# TYPE node_disk_written_bytes_total counter
node_disk_written_bytes_total{device="vda"} 204800.0
# HELP node_filesystem_avail_bytes Filesystem space available to non-root users in bytes.
# TYPE node_filesystem_avail_bytes gauge
node_filesystem_avail_bytes{device="/dev/vda",fstype="ext4",mountpoint="/"} 55000.0
node_filesystem_avail_bytes{device="/dev/vdb",fstype="xfs",mountpoint="/data"} 500.0
# HELP node_filesystem_free_bytes Filesystem free space in bytes.
# TYPE node_filesystem_free_bytes gauge
node_filesystem_free_bytes{device="/dev/vda",fstype="ext4",mountpoint="/"} 60000.0
node_filesystem_free_bytes{device="/dev/vdb",fstype="xfs",mountpoint="/data"} 500.0
# HELP node_filesystem_size_bytes Filesystem size in bytes.
# TYPE node_filesystem_size_bytes gauge
node_filesystem_size_bytes{device="/dev/vda",fstype="ext4",mountpoint="/"} 100000.0
node_filesystem_size_bytes{device="/dev/vdb",fstype="xfs",mountpoint="/data"} 500.0
# HELP node_network_receive_bytes_total Network device statistic receive_bytes.
# TYPE node_network_receive_bytes_total counter
node_network_receive_bytes_total{device="eth0"} 3000.0
# HELP node_network_receive_drop_total Network device statistic receive_drop.
# TYPE node_network_receive_drop_total counter
node_network_receive_drop_total{device="eth0"} 3.0
# HELP node_network_receive_errs_total Network device statistic receive_errs.
# TYPE node_network_receive_errs_total counter
node_network_receive_errs_total{device="eth0"} 1.0
# HELP node_network_receive_packets_total Network device statistic receive_packets.
# TYPE node_network_receive_packets_total counter
node_network_receive_packets_total{device="eth0"} 30.0
# HELP node_network_transmit_bytes_total Network device statistic transmit_bytes.
# TYPE node_network_transmit_bytes_total counter
node_network_transmit_bytes_total{device="eth0"} 2000.0
# HELP node_network_transmit_drop_total Network device statistic transmit_drop.
# TYPE node_network_transmit_drop_total counter
node_network_transmit_drop_total{device="eth0"} 4.0
# HELP node_network_transmit_errs_total Network device statistic transmit_errs.
# TYPE node_network_transmit_errs_total counter
node_network_transmit_errs_total{device="eth0"} 2.0
# HELP node_network_transmit_packets_total Network device statistic transmit_packets.
# TYPE node_network_transmit_packets_total counter
node_network_transmit_packets_total{device="eth0"} 20.0
"""

PROCESS_EXPOSITION = """\
# HELP vibelux_process_cpu_seconds_total CPU seconds used by the group's processes.
# TYPE vibelux_process_cpu_seconds_total counter
vibelux_process_cpu_seconds_total{mode="system",name="ratelimit-proxy"} 1.5
vibelux_process_cpu_seconds_total{mode="user",name="ratelimit-proxy"} 3.5
vibelux_process_cpu_seconds_total{mode="system",name="tickets"} 0.0
vibelux_process_cpu_seconds_total{mode="user",name="tickets"} 0.0
# HELP vibelux_processes Running processes in the group.
# TYPE vibelux_processes gauge
vibelux_processes{name="ratelimit-proxy"} 2.0
vibelux_processes{name="tickets"} 0.0
# HELP vibelux_process_open_fds Open file descriptors of the group's processes.
# TYPE vibelux_process_open_fds gauge
vibelux_process_open_fds{name="ratelimit-proxy"} 15.0
vibelux_process_open_fds{name="tickets"} 0.0
# HELP vibelux_process_resident_memory_bytes Resident memory of the group's processes in bytes.
# TYPE vibelux_process_resident_memory_bytes gauge
vibelux_process_resident_memory_bytes{name="ratelimit-proxy"} 4000.0
vibelux_process_resident_memory_bytes{name="tickets"} 0.0
# HELP vibelux_process_threads Threads of the group's processes.
# TYPE vibelux_process_threads gauge
vibelux_process_threads{name="ratelimit-proxy"} 6.0
vibelux_process_threads{name="tickets"} 0.0
"""

GROUPS = [ProcessGroup("ratelimit-proxy", r"vibelux-proxy"), ProcessGroup("tickets", r"vibelux-tickets")]


def exposition(*collectors: object) -> str:
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)  # type: ignore[arg-type]
    return generate_latest(registry).decode()


def test_node_collector_fixed_readings_give_exact_node_exporter_exposition() -> None:
    assert exposition(NodeCollector(FixedSystem())) == NODE_EXPOSITION


def test_process_collector_sums_matching_processes_and_skips_exited_ones() -> None:
    assert exposition(ProcessGroupCollector(FixedSystem(), GROUPS)) == PROCESS_EXPOSITION


def test_process_command_lines_are_read_once_per_process_not_per_scrape() -> None:
    system = FixedSystem()
    registry = CollectorRegistry()
    registry.register(ProcessGroupCollector(system, GROUPS))
    for _ in range(3):
        assert registry.get_sample_value("vibelux_processes", {"name": "ratelimit-proxy"}) == 2.0
    assert [process.cmdline_reads for process in system.process_iter()] == [1, 1, 1, 1, 1]
    system.process_iter().pop(0)  # pid 10 exits
    assert registry.get_sample_value("vibelux_processes", {"name": "ratelimit-proxy"}) == 1.0
    assert registry.get_sample_value("vibelux_process_threads", {"name": "ratelimit-proxy"}) == 2.0


@pytest.fixture
def shells() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for shell in started:
        for process in psutil.Process(shell.pid).children(recursive=True):
            process.kill()
        shell.kill()
        shell.wait(5)


@pytest.mark.integration
def test_a_shell_wrapping_a_matched_process_is_left_out_but_a_shell_that_is_the_service_counts(
    shells: list[subprocess.Popen[bytes]],
) -> None:
    """What honcho starts for a Procfile line that does not exec: `/bin/sh -c "<command>; …"` stays the parent
    of the command, and its command line holds the command's words."""
    wrapped, lone = f"vbx-wrapped-{uuid.uuid4().hex}", f"vbx-lone-{uuid.uuid4().hex}"
    child = f"import time; time.sleep(30)  # {wrapped}"
    shells.append(subprocess.Popen(["/bin/sh", "-c", f"{sys.executable} -c '{child}'; true"]))
    shells.append(subprocess.Popen(["/bin/sh", "-c", f"sleep 30; true  # {lone}"]))  # its child matches nothing
    wait_until(lambda: all(psutil.Process(shell.pid).children() for shell in shells), timeout=10)
    registry = CollectorRegistry()
    registry.register(ProcessGroupCollector(psutil, [ProcessGroup("wrapped", wrapped), ProcessGroup("lone", lone)]))
    assert registry.get_sample_value("vibelux_processes", {"name": "wrapped"}) == 1.0
    assert registry.get_sample_value("vibelux_processes", {"name": "lone"}) == 1.0
    (python,) = psutil.Process(shells[0].pid).children()
    threads = python.num_threads()
    assert registry.get_sample_value("vibelux_process_threads", {"name": "wrapped"}) == threads  # the child's


def test_collector_selection_limits_output_to_the_chosen_collectors() -> None:
    output = exposition(NodeCollector(FixedSystem(), collectors=["loadavg"]))
    names = {line.split()[0] for line in output.splitlines() if not line.startswith("#")}
    assert names == {"node_load1", "node_load5", "node_load15"}


def test_exclusion_patterns_can_be_emptied_to_publish_every_device() -> None:
    output = exposition(
        NodeCollector(
            FixedSystem(),
            collectors=["diskstats", "filesystem"],
            disk_device_exclude="",
            fs_mountpoint_exclude="",
            fs_type_exclude="",
        )
    )
    assert 'node_disk_read_bytes_total{device="loop0"} 1.0' in output
    assert 'node_filesystem_size_bytes{device="proc",fstype="proc",mountpoint="/proc"}' not in output
    assert output.count('node_filesystem_size_bytes{device="/dev/vda"') == 1  # duplicate mount listed once


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"collectors": ["cpu", "textfile"]}, "unknown collectors ['textfile']"),
        ({"disk_device_exclude": "(unclosed"}, "missing ), unterminated subpattern"),
    ],
)
def test_node_collector_rejects_bad_options(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(Exception, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        NodeCollector(FixedSystem(), **kwargs)  # type: ignore[arg-type]


def test_process_group_rejects_invalid_regex_at_construction() -> None:
    with pytest.raises(Exception, match="unterminated character set"):
        ProcessGroup("bad", "[abc")


def test_real_host_exposition_passes_promtool_lint_except_node_exporters_own_meminfo_names() -> None:
    output = exposition(NodeCollector(psutil, collectors=ALL_COLLECTORS), ProcessGroupCollector(psutil, GROUPS))
    findings = promtool_findings(output)
    assert [line for line in findings if not is_meminfo_camelcase_finding(line)] == []
    assert any(is_meminfo_camelcase_finding(line) for line in findings)  # the check above really ran


def test_fixed_exposition_passes_promtool_lint_except_meminfo_names() -> None:
    findings = promtool_findings(NODE_EXPOSITION + PROCESS_EXPOSITION)
    assert [line for line in findings if not is_meminfo_camelcase_finding(line)] == []
