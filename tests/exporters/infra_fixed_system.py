"""A psutil stand-in with fixed readings: the data source the infra collectors are given in tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace as Reading
from typing import Any

import psutil


class FixedProcess:
    """One process: fixed cmdline and readings, or gone (raises NoSuchProcess like a process that exited)."""

    def __init__(self, pid: int, cmdline: list[str], *, gone: bool = False, **readings: Any) -> None:
        self.pid = pid
        self._cmdline = cmdline
        self.cmdline_reads = 0
        self._gone = gone
        self._readings = readings

    @contextmanager
    def oneshot(self) -> Iterator[None]:
        yield

    def _read(self, key: str) -> Any:
        if self._gone:
            raise psutil.NoSuchProcess(self.pid)
        return self._readings[key]

    def cmdline(self) -> list[str]:
        self.cmdline_reads += 1
        return self._cmdline

    def cpu_times(self) -> Any:
        return Reading(user=self._read("user"), system=self._read("system"))

    def memory_info(self) -> Any:
        return Reading(rss=self._read("rss"))

    def num_threads(self) -> int:
        return int(self._read("threads"))

    def num_fds(self) -> int:
        return int(self._read("fds"))


class FixedSystem:
    """Two CPUs, a disk (and a loop device node_exporter ignores), two filesystems, a NIC, processes."""

    def cpu_times(self, percpu: bool = False) -> list[Any]:
        assert percpu
        return [
            Reading(
                user=10.5,
                nice=0.0,
                system=2.25,
                idle=100.0,
                iowait=0.5,
                irq=0.0,
                softirq=0.125,
                steal=0.0,
                guest=0.0,
                guest_nice=0.0,
            ),
            Reading(
                user=20.0,
                nice=1.0,
                system=3.0,
                idle=90.0,
                iowait=0.25,
                irq=0.0,
                softirq=0.5,
                steal=0.75,
                guest=0.0,
                guest_nice=0.0,
            ),
        ]

    def getloadavg(self) -> tuple[float, float, float]:
        return (0.5, 0.25, 0.125)

    def virtual_memory(self) -> Any:
        return Reading(
            total=8_000_000_000,
            available=6_000_000_000,
            free=4_000_000_000,
            buffers=100_000_000,
            cached=999,
            shared=50_000_000,
            active=1_000_000_000,
            inactive=2_000_000_000,
            slab=300_000_000,
        )

    def swap_memory(self) -> Any:
        return Reading(total=1_000_000_000, free=750_000_000)

    def disk_io_counters(self, perdisk: bool = False, nowrap: bool = True) -> dict[str, Any]:
        return {
            "vda": Reading(
                read_count=100,
                write_count=50,
                read_bytes=409600,
                write_bytes=204800,
                read_time=1500,
                write_time=250,
                read_merged_count=3,
                write_merged_count=4,
                busy_time=1750,
            ),
            "loop0": Reading(
                read_count=1,
                write_count=1,
                read_bytes=1,
                write_bytes=1,
                read_time=1,
                write_time=1,
                read_merged_count=1,
                write_merged_count=1,
                busy_time=1,
            ),
        }

    def disk_partitions(self, all: bool = False) -> list[Any]:
        return [
            Reading(device="/dev/vda", mountpoint="/", fstype="ext4"),
            Reading(device="proc", mountpoint="/proc", fstype="proc"),
            Reading(device="/dev/vdb", mountpoint="/data", fstype="xfs"),
            Reading(device="/dev/vda", mountpoint="/", fstype="ext4"),  # listed twice, as bind mounts are
            Reading(device="nfs:/gone", mountpoint="/mnt/gone", fstype="nfs"),  # statvfs fails
        ]

    def disk_usage(self, path: str) -> Any:
        usages = {
            "/": Reading(total=100_000, used=40_000, free=55_000),
            "/data": Reading(total=500, used=0, free=500),
        }
        if path not in usages:
            raise OSError(2, "No such file or directory", path)
        return usages[path]

    def net_io_counters(self, pernic: bool = False, nowrap: bool = True) -> dict[str, Any]:
        return {
            "eth0": Reading(
                bytes_sent=2000,
                bytes_recv=3000,
                packets_sent=20,
                packets_recv=30,
                errin=1,
                errout=2,
                dropin=3,
                dropout=4,
            ),
        }

    def __init__(self) -> None:
        self._processes = [
            FixedProcess(
                10,
                ["/venv/bin/python", "/venv/bin/vibelux-proxy"],
                user=1.5,
                system=0.5,
                rss=1000,
                threads=4,
                fds=10,
            ),
            FixedProcess(
                11,
                ["/venv/bin/python", "/venv/bin/vibelux-proxy", "--worker"],
                user=2.0,
                system=1.0,
                rss=3000,
                threads=2,
                fds=5,
            ),
            FixedProcess(12, ["/venv/bin/python", "/venv/bin/vibelux-proxy"], gone=True),
            FixedProcess(13, ["/usr/bin/redis-server", "*:6379"], user=9.0, system=9.0, rss=9, threads=9, fds=9),
            FixedProcess(14, [], user=9.0, system=9.0, rss=9, threads=9, fds=9),  # kernel thread: no cmdline
        ]

    def process_iter(self) -> list[FixedProcess]:
        return self._processes
