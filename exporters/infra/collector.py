"""Host and process metrics under node_exporter's names, read from an injected psutil-like source.

The source is the `psutil` module in production and an object with fixed readings in tests, so the
exposition can be compared byte for byte. Every scrape reads each psutil call once and builds fresh metric
families; nothing is cached between scrapes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import psutil
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# node_exporter 1.5's default exclusions, so both exporters publish the same series on one Linux host.
DEFAULT_DISK_DEVICE_EXCLUDE = r"^(ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$"
DEFAULT_FS_MOUNTPOINT_EXCLUDE = (
    r"^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)"
)
DEFAULT_FS_TYPE_EXCLUDE = (
    r"^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660|mqueue|"
    r"nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|sysfs|tracefs)$"
)

ALL_COLLECTORS = ("cpu", "loadavg", "meminfo", "diskstats", "filesystem", "netdev", "processes")

# psutil field -> node_exporter mode label of node_cpu_seconds_total. psutil has only the fields the platform
# knows (macOS: user, nice, system, idle), so missing ones are skipped.
CPU_MODES = ("idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user")
CPU_GUEST_MODES = {"guest": "user", "guest_nice": "nice"}

# psutil virtual_memory()/swap_memory() field -> /proc/meminfo key. psutil's `cached` is left out on
# purpose: on Linux it adds SReclaimable to Cached and would disagree with node_exporter.
MEMINFO_FIELDS = (
    ("virtual", "active", "Active"),
    ("virtual", "buffers", "Buffers"),
    ("virtual", "inactive", "Inactive"),
    ("virtual", "available", "MemAvailable"),
    ("virtual", "free", "MemFree"),
    ("virtual", "total", "MemTotal"),
    ("virtual", "shared", "Shmem"),
    ("virtual", "slab", "Slab"),
    ("swap", "free", "SwapFree"),
    ("swap", "total", "SwapTotal"),
)


@dataclass(frozen=True)
class CounterField:
    """One psutil counter field published as one node_exporter metric (value multiplied by `scale`)."""

    field: str
    name: str
    help: str
    scale: float = 1.0


DISK_FIELDS = (
    CounterField("busy_time", "node_disk_io_time_seconds_total", "Total seconds spent doing I/Os.", 0.001),
    CounterField("read_bytes", "node_disk_read_bytes_total", "The total number of bytes read successfully."),
    CounterField(
        "read_time",
        "node_disk_read_time_seconds_total",
        "The total number of seconds spent by all reads.",
        0.001,
    ),
    CounterField("read_count", "node_disk_reads_completed_total", "The total number of reads completed successfully."),
    CounterField("read_merged_count", "node_disk_reads_merged_total", "The total number of reads merged."),
    CounterField(
        "write_time",
        "node_disk_write_time_seconds_total",
        "This is the total number of seconds spent by all writes.",
        0.001,
    ),
    CounterField(
        "write_count",
        "node_disk_writes_completed_total",
        "The total number of writes completed successfully.",
    ),
    CounterField("write_merged_count", "node_disk_writes_merged_total", "The number of writes merged."),
    CounterField("write_bytes", "node_disk_written_bytes_total", "The total number of bytes written successfully."),
)

NET_FIELDS = tuple(
    CounterField(field, f"node_network_{stat}_total", f"Network device statistic {stat}.")
    for field, stat in (
        ("bytes_recv", "receive_bytes"),
        ("dropin", "receive_drop"),
        ("errin", "receive_errs"),
        ("packets_recv", "receive_packets"),
        ("bytes_sent", "transmit_bytes"),
        ("dropout", "transmit_drop"),
        ("errout", "transmit_errs"),
        ("packets_sent", "transmit_packets"),
    )
)


class SystemSource(Protocol):
    """The part of psutil's module API the collectors read; `psutil` itself satisfies it."""

    def cpu_times(self, percpu: bool = ...) -> Any: ...
    def getloadavg(self) -> tuple[float, float, float]: ...
    def virtual_memory(self) -> Any: ...
    def swap_memory(self) -> Any: ...
    def disk_io_counters(self, perdisk: bool = ..., nowrap: bool = ...) -> Any: ...
    def disk_partitions(self, all: bool = ...) -> Any: ...
    def disk_usage(self, path: str) -> Any: ...
    def net_io_counters(self, pernic: bool = ..., nowrap: bool = ...) -> Any: ...
    def process_iter(self) -> Iterable[Any]: ...


@dataclass(frozen=True)
class ProcessGroup:
    """Processes counted under one `name` label: every process whose command line matches `match`."""

    name: str
    match: str

    def __post_init__(self) -> None:
        re.compile(self.match)  # fail at start-up, not at the first scrape


def counter_families(
    fields: Sequence[CounterField], label: str, readings: dict[str, Any], include: Callable[[str], bool]
) -> Iterator[Metric]:
    """One counter family per field, one sample per key of `readings` (a device) that `include` accepts."""
    keys = sorted(key for key in readings if include(key))
    for spec in fields:
        family = CounterMetricFamily(spec.name, spec.help, labels=[label])
        for key in keys:
            value = getattr(readings[key], spec.field, None)
            if value is not None:
                family.add_metric([key], value * spec.scale)
        if family.samples:
            yield family


def excluded_by(pattern: str) -> Callable[[str], bool]:
    """A predicate accepting names the (possibly empty) exclusion regex does not match."""
    if not pattern:
        return lambda _name: True
    compiled = re.compile(pattern)
    return lambda name: compiled.search(name) is None


class NodeCollector(Collector):
    """node_exporter-compatible host metrics (cpu, loadavg, meminfo, diskstats, filesystem, netdev)."""

    def __init__(
        self,
        source: SystemSource,
        collectors: Sequence[str] = ALL_COLLECTORS,
        disk_device_exclude: str = DEFAULT_DISK_DEVICE_EXCLUDE,
        fs_mountpoint_exclude: str = DEFAULT_FS_MOUNTPOINT_EXCLUDE,
        fs_type_exclude: str = DEFAULT_FS_TYPE_EXCLUDE,
        net_device_exclude: str = "",
    ) -> None:
        unknown = set(collectors) - set(ALL_COLLECTORS)
        if unknown:
            raise ValueError(f"unknown collectors {sorted(unknown)}; known: {', '.join(ALL_COLLECTORS)}")
        self._source = source
        self._collectors = set(collectors)
        self._disk_included = excluded_by(disk_device_exclude)
        self._mountpoint_included = excluded_by(fs_mountpoint_exclude)
        self._fstype_included = excluded_by(fs_type_exclude)
        self._net_included = excluded_by(net_device_exclude)

    def describe(self) -> Iterable[Metric]:
        """Nothing to describe up front: registering must not read the system."""
        return ()

    def collect(self) -> Iterator[Metric]:
        if "cpu" in self._collectors:
            yield from self._cpu()
        if "loadavg" in self._collectors:
            yield from self._loadavg()
        if "meminfo" in self._collectors:
            yield from self._meminfo()
        if "diskstats" in self._collectors:
            yield from counter_families(
                DISK_FIELDS, "device", self._source.disk_io_counters(perdisk=True, nowrap=False) or {},
                self._disk_included,
            )  # fmt: skip
        if "filesystem" in self._collectors:
            yield from self._filesystem()
        if "netdev" in self._collectors:
            yield from counter_families(
                NET_FIELDS, "device", self._source.net_io_counters(pernic=True, nowrap=False) or {},
                self._net_included,
            )  # fmt: skip

    def _cpu(self) -> Iterator[Metric]:
        seconds = CounterMetricFamily(
            "node_cpu_seconds_total", "Seconds the CPUs spent in each mode.", labels=["cpu", "mode"]
        )
        guest = CounterMetricFamily(
            "node_cpu_guest_seconds_total",
            "Seconds the CPUs spent in guests (VMs) for each mode.",
            labels=["cpu", "mode"],
        )
        for cpu, times in enumerate(self._source.cpu_times(percpu=True)):
            for mode in CPU_MODES:
                value = getattr(times, mode, None)
                if value is not None:
                    seconds.add_metric([str(cpu), mode], value)
            for field, mode in CPU_GUEST_MODES.items():
                value = getattr(times, field, None)
                if value is not None:
                    guest.add_metric([str(cpu), mode], value)
        yield seconds
        if guest.samples:
            yield guest

    def _loadavg(self) -> Iterator[Metric]:
        for minutes, value in zip((1, 5, 15), self._source.getloadavg(), strict=True):
            yield GaugeMetricFamily(f"node_load{minutes}", f"{minutes}m load average.", value=value)

    def _meminfo(self) -> Iterator[Metric]:
        readings = {"virtual": self._source.virtual_memory(), "swap": self._source.swap_memory()}
        for kind, field, key in MEMINFO_FIELDS:
            value = getattr(readings[kind], field, None)
            if value is not None:
                yield GaugeMetricFamily(
                    f"node_memory_{key}_bytes", f"Memory information field {key}_bytes.", value=value
                )

    def _filesystem(self) -> Iterator[Metric]:
        labels = ["device", "fstype", "mountpoint"]
        size = GaugeMetricFamily("node_filesystem_size_bytes", "Filesystem size in bytes.", labels=labels)
        free = GaugeMetricFamily("node_filesystem_free_bytes", "Filesystem free space in bytes.", labels=labels)
        avail = GaugeMetricFamily(
            "node_filesystem_avail_bytes",
            "Filesystem space available to non-root users in bytes.",
            labels=labels,
        )
        seen: set[tuple[str, str, str]] = set()
        for part in self._source.disk_partitions(all=True):
            key = (part.device, part.fstype, part.mountpoint)
            if key in seen or not self._mountpoint_included(part.mountpoint) or not self._fstype_included(part.fstype):
                continue
            seen.add(key)
            try:
                usage = self._source.disk_usage(part.mountpoint)
            except OSError:  # unmounted or unreadable between listing and statvfs: skip like node_exporter
                continue
            # psutil: total = f_blocks*f_frsize, free = f_bavail*f_frsize (non-root),
            # used = (f_blocks-f_bfree)*f_frsize, so node_exporter's free (f_bfree) is total - used
            size.add_metric(list(key), usage.total)
            free.add_metric(list(key), usage.total - usage.used)
            avail.add_metric(list(key), usage.free)
        yield from (avail, free, size)


SHELLS = frozenset({"sh", "dash", "bash", "ash", "ksh", "zsh"})


class Membership(NamedTuple):
    """The groups a process's command line matches, and whether it is a shell running `-c`."""

    groups: list[str]
    shell: bool


def runs_shell_command(command: list[str]) -> bool:
    """`/bin/sh -c '<line>'`: how honcho (and foreman, supervisord) starts a Procfile line."""
    return len(command) >= 2 and command[1] == "-c" and command[0].rsplit("/", 1)[-1] in SHELLS


class ProcessGroupCollector(Collector):
    """Per-group totals over the stack's own processes: CPU seconds, resident memory, fds, threads, count.

    Several processes can match one group (granian workers); their readings are summed, as process-exporter
    does. A group with no running process still reports `vibelux_processes 0`, so an alert can see it.
    A runner's wrapper is left out: a shell running `-c` whose command line matches a group only because it
    holds the command of its child in that group (a shell that did not exec its last command), so three
    exporters under honcho count 3, not 4. A shell with no such child (a shell script that is the service)
    still counts.
    """

    def __init__(self, source: SystemSource, groups: Sequence[ProcessGroup]) -> None:
        self._source = source
        self._groups = [(group.name, re.compile(group.match)) for group in groups]
        # groups of each process seen at the last scrape: a command line is read and matched once per
        # process, not once per scrape (psutil.process_iter hands back the same Process objects, hashed
        # by pid and start time, so a reused pid is a new key)
        self._membership: dict[Any, Membership] = {}

    def _membership_of(self, process: Any) -> Membership:
        membership = self._membership.get(process)
        if membership is None:
            try:
                words = process.cmdline()
            except psutil.Error:  # exited, or a kernel thread / foreign process we may not read
                words = []
            command = " ".join(words)
            groups = [name for name, pattern in self._groups if command and pattern.search(command)]
            membership = Membership(groups, runs_shell_command(words))
        return membership

    @staticmethod
    def _without_wrappers(membership: dict[Any, Membership]) -> dict[Any, list[str]]:
        """Each matched process's groups, less those a shell wrapper shares with one of its children."""
        matched = {process: m for process, m in membership.items() if m.groups}
        if not any(m.shell for m in matched.values()):
            return {process: m.groups for process, m in matched.items()}  # no parent to look up
        children_groups: dict[int, set[str]] = {}
        for process, m in matched.items():
            try:
                children_groups.setdefault(process.ppid(), set()).update(m.groups)
            except psutil.Error:
                continue
        return {
            process: [g for g in m.groups if g not in children_groups.get(process.pid, ())] if m.shell else m.groups
            for process, m in matched.items()
        }

    def describe(self) -> Iterable[Metric]:
        """Nothing to describe up front: registering must not read the process table."""
        return ()

    def collect(self) -> Iterator[Metric]:
        totals = {
            name: dict.fromkeys(("count", "user", "system", "rss", "fds", "threads"), 0.0) for name, _ in self._groups
        }
        if self._groups:
            membership = {process: self._membership_of(process) for process in self._source.process_iter()}
            for process, groups in self._without_wrappers(membership).items():
                if groups:
                    self._add_readings(process, [totals[name] for name in groups])
            self._membership = membership  # forget processes that are gone
        names = [name for name, _ in self._groups]
        cpu = CounterMetricFamily(
            "vibelux_process_cpu_seconds_total",
            "CPU seconds used by the group's processes.",
            labels=["name", "mode"],
        )
        families = {
            "count": GaugeMetricFamily("vibelux_processes", "Running processes in the group.", labels=["name"]),
            "fds": GaugeMetricFamily(
                "vibelux_process_open_fds", "Open file descriptors of the group's processes.", labels=["name"]
            ),
            "rss": GaugeMetricFamily(
                "vibelux_process_resident_memory_bytes",
                "Resident memory of the group's processes in bytes.",
                labels=["name"],
            ),
            "threads": GaugeMetricFamily(
                "vibelux_process_threads", "Threads of the group's processes.", labels=["name"]
            ),
        }
        for name in names:
            for mode in ("system", "user"):
                cpu.add_metric([name, mode], totals[name][mode])
            for key, family in families.items():
                family.add_metric([name], totals[name][key])
        yield cpu
        yield from families.values()

    @staticmethod
    def _add_readings(process: Any, targets: list[dict[str, float]]) -> None:
        """Read one process once (psutil oneshot) and add it to every group it belongs to."""
        try:
            with process.oneshot():
                times = process.cpu_times()
                readings = {
                    "count": 1.0,
                    "user": times.user,
                    "system": times.system,
                    "rss": process.memory_info().rss,
                    "threads": process.num_threads(),
                    # Windows has handles, not file descriptors
                    "fds": process.num_fds() if hasattr(process, "num_fds") else 0,
                }
        except psutil.Error:  # exited or not ours to read (NoSuchProcess, AccessDenied): it does not count
            return
        for target in targets:
            for key, value in readings.items():
                target[key] += value
