"""Real Redis topologies for tests: a 3-master Cluster with a replica each, and a primary + replica watched
by three Sentinels. Every node requires a password (as every shipped configuration does), so the clients'
auth path is tested too. Started once per session; failover tests kill and restart nodes in place.
"""

from __future__ import annotations

import signal
import subprocess

import redis

from tests.servers import ManagedProcess, wait_until

PASSWORD = "test-redis-password"  # a test fixture, not a secret of any deployment


class RedisNode(ManagedProcess):
    """One redis-server with a password; ``extra`` adds cluster or replication options."""

    name = "redis-node"

    def __init__(self, extra: list[str] | None = None) -> None:
        super().__init__()
        self.extra = extra or []

    def command(self) -> list[str]:
        return [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(self.workdir), "--requirepass", PASSWORD, "--masterauth", PASSWORD, *self.extra,
        ]  # fmt: skip

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, password=PASSWORD, socket_timeout=2)

    def ready(self) -> bool:
        return bool(self.client().ping())

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final save, sockets reset, as when a machine dies."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.process = None

    def role(self) -> str:
        return str(self.client().info("replication")["role"])


class ClusterNode(RedisNode):
    name = "redis-cluster"

    def __init__(self, node_timeout_ms: int) -> None:
        from tests.servers import free_port

        self.bus_port = free_port()
        super().__init__()
        self.extra = [
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(node_timeout_ms), "--cluster-port", str(self.bus_port),
            # as the README advises: a shard without a primary must not stop the others answering
            "--cluster-require-full-coverage", "no",
        ]  # fmt: skip


class RedisClusterServers:
    """``masters`` masters with one replica each, created by ``redis-cli --cluster create``."""

    def __init__(self, masters: int = 3, node_timeout_ms: int = 1000) -> None:
        self.node_timeout_ms = node_timeout_ms
        self.nodes = [ClusterNode(node_timeout_ms) for _ in range(masters * 2)]

    @property
    def seed(self) -> str:
        return f"127.0.0.1:{self.nodes[0].port}"

    @property
    def url(self) -> str:
        """Every node as a seed, the form services take (the password comes apart, from the environment)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run(
            ["redis-cli", "-a", PASSWORD, "--no-auth-warning", "--cluster", "create", *addresses,
             "--cluster-replicas", "1", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        self.wait_healthy()

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until every running node says cluster_state:ok and sees every slot served, and every replica
        has synced (a replica that never did refuses to take over: replica-validity-factor)."""

        def healthy() -> bool:
            for node in self.nodes:
                if node.process is None:
                    continue
                info = node.client().cluster("info")
                if info["cluster_state"] != "ok" or int(info["cluster_slots_ok"]) != 16384:
                    return False
                replication = node.client().info("replication")
                if replication["role"] == "slave" and replication.get("master_link_status") != "up":
                    return False
            return True

        wait_until(healthy, timeout=timeout, interval=0.1)

    def masters(self) -> list[ClusterNode]:
        return [n for n in self.nodes if n.process is not None and n.role() == "master"]

    def master_of(self, key: str) -> ClusterNode:
        slot = self.nodes[0].client().cluster("keyslot", key)
        for node in self.masters():
            for start, end in _own_slot_ranges(node):
                if start <= slot <= end:
                    return node
        raise LookupError(f"no master serves slot {slot}")

    def flush(self) -> None:
        for node in self.masters():
            node.client().flushall()
            node.client().script_flush()

    def close(self) -> None:
        for node in self.nodes:
            node.close()


def _own_slot_ranges(node: ClusterNode) -> list[tuple[int, int]]:
    for line in node.client().execute_command("CLUSTER", "NODES").decode().splitlines():
        fields = line.split()
        if "myself" in fields[2]:
            return [
                (int(part.split("-")[0]), int(part.split("-")[-1])) for part in fields[8:] if not part.startswith("[")
            ]
    return []


class SentinelNode(ManagedProcess):
    name = "redis-sentinel"

    def __init__(self, master_name: str, master_port: int, down_after_ms: int) -> None:
        super().__init__()
        (self.workdir / "sentinel.conf").write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.workdir}\n"
            f"requirepass {PASSWORD}\n"
            f"sentinel monitor {master_name} 127.0.0.1 {master_port} 2\n"
            f"sentinel auth-pass {master_name} {PASSWORD}\n"
            f"sentinel down-after-milliseconds {master_name} {down_after_ms}\n"
            f"sentinel failover-timeout {master_name} 10000\n"
            f"sentinel parallel-syncs {master_name} 1\n"
            # sentinels of one test set authenticate to each other with the same password
            f"sentinel sentinel-pass {PASSWORD}\n"
        )

    def command(self) -> list[str]:
        return ["redis-sentinel", str(self.workdir / "sentinel.conf")]

    def ready(self) -> bool:
        client = redis.Redis(port=self.port, password=PASSWORD, socket_timeout=1)
        return bool(client.ping())


class RedisSentinelServers:
    """A primary, one replica and three Sentinels watching them as ``master_name``."""

    def __init__(self, master_name: str = "vibelux", down_after_ms: int = 1000) -> None:
        self.master_name = master_name
        self.primary = RedisNode()
        self.replica = RedisNode()
        self.sentinels = [SentinelNode(master_name, self.primary.port, down_after_ms) for _ in range(3)]

    @property
    def url(self) -> str:
        addresses = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{addresses}/{self.master_name}/0"

    def start(self) -> None:
        self.primary.start()
        self.replica.extra = ["--replicaof", "127.0.0.1", str(self.primary.port)]
        self.replica.start()
        wait_until(lambda: self.replica.client().info("replication")["master_link_status"] == "up", timeout=15)
        for sentinel in self.sentinels:
            sentinel.start()
        wait_until(self._sentinels_agree, timeout=20, interval=0.1)

    def _sentinels_agree(self) -> bool:
        for sentinel in self.sentinels:
            client = redis.Redis(port=sentinel.port, password=PASSWORD, socket_timeout=1, decode_responses=True)
            state = client.sentinel_master(self.master_name)
            if state["num-other-sentinels"] < 2 or state["num-slaves"] < 1:
                return False
        return True

    def nodes(self) -> list[RedisNode]:
        return [self.primary, self.replica]

    def current_primary(self) -> RedisNode:
        for node in self.nodes():
            if node.process is not None and node.role() == "master":
                return node
        raise LookupError("no primary")

    def wait_primary_known(self, node: RedisNode, timeout: float = 30.0) -> None:
        """Until a Sentinel names ``node`` as the primary."""

        def named() -> bool:
            client = redis.Redis(port=self.sentinels[0].port, password=PASSWORD, socket_timeout=1)
            return int(client.sentinel_get_master_addr_by_name(self.master_name)[1]) == node.port

        wait_until(named, timeout=timeout, interval=0.1)

    def flush(self) -> None:
        self.current_primary().client().flushall()

    def close(self) -> None:
        for process in [*self.sentinels, self.primary, self.replica]:
            process.close()
