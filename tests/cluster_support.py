"""A real Redis Cluster for the tests: 3 masters and 3 replicas of `redis-server
--cluster-enabled yes` on free ports in a temporary folder, created with `redis-cli --cluster
create ... --cluster-replicas 1 --cluster-yes`, and stopped by `stop()`.

Nothing is kept on disk but each node's nodes.conf (no RDB, no AOF). `cluster-node-timeout`
is short so that a replica takes over a killed master within a few seconds.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis as redis_lib
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.conftest import _free_port, _log_tail

NODE_TIMEOUT_MS = 1000
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0


def control(port: int, timeout_s: float = 2.0) -> redis_lib.Redis:
    return redis_lib.Redis(host="127.0.0.1", port=port, socket_timeout=timeout_s,
                           socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0))


@dataclass
class Node:
    port: int
    bus_port: int
    dir: Path
    process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not on PATH"
        options = {"port": self.port, "cluster-port": self.bus_port, "bind": "127.0.0.1",
                   "dir": self.dir, "save": "", "appendonly": "no", "daemonize": "no",
                   "logfile": self.dir / "redis.log", "cluster-enabled": "yes",
                   "cluster-config-file": "nodes.conf",
                   "cluster-node-timeout": NODE_TIMEOUT_MS,
                   # A replica may take over however long it was cut off from its master.
                   "cluster-replica-validity-factor": 0,
                   # A dead master stops only its own slots, not the whole cluster.
                   "cluster-require-full-coverage": "no",
                   "maxmemory-policy": "noeviction"}
        self.process = subprocess.Popen(
            [binary, *(item for name, value in options.items()
                       for item in (f"--{name}", str(value)))],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self._wait_for_ping()

    def _wait_for_ping(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        client = control(self.port, 0.5)
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited while starting:\n"
                                       f"{_log_tail(self.dir / 'redis.log')}")
                try:
                    if client.ping():
                        return
                except redis_lib.RedisError:
                    time.sleep(0.05)
        finally:
            client.close()
        raise RuntimeError(f"redis-server on {self.port} did not answer PING")

    def kill(self) -> None:
        """SIGKILL: the node dies without a word to its replicas."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        client = control(self.port)
        try:
            client.shutdown(nosave=True)
        except redis_lib.RedisError:
            pass
        finally:
            client.close()
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()


@dataclass
class Cluster:
    nodes: list[Node] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The cluster's URL as creditgate takes it: every node a seed."""
        return "redis+cluster://" + ",".join(node.address for node in self.nodes)

    def node(self, port: int) -> Node:
        return next(node for node in self.nodes if node.port == port)

    def masters(self) -> list[Node]:
        """The nodes that serve slots now, by CLUSTER SHARDS of a live node."""
        ports = set()
        for shard in self._shards():
            for entry in shard[b"nodes"]:
                if entry[b"role"] == b"master" and entry[b"health"] == b"online":
                    ports.add(int(entry[b"port"]))
        return [node for node in self.nodes if node.port in ports]

    def _shards(self) -> list[dict]:
        for node in self.nodes:
            if node.process and node.process.poll() is None:
                client = control(node.port)
                try:
                    return client.execute_command("CLUSTER SHARDS")
                except redis_lib.RedisError:
                    continue
                finally:
                    client.close()
        raise RuntimeError("no node of the cluster answers")

    def master_of_slot(self, slot: int) -> Node:
        client = control(self.masters()[0].port)
        try:
            for start, end, owner, *_ in client.execute_command("CLUSTER SLOTS"):
                if start <= slot <= end:
                    return self.node(int(owner[1]))
        finally:
            client.close()
        raise LookupError(slot)

    def wait_healthy(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Until every live node says cluster_state:ok and they agree on the slots' owners."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._healthy():
                return
            time.sleep(0.1)
        raise RuntimeError("the cluster did not become healthy:\n" + "\n".join(
            _log_tail(node.dir / "redis.log", 5) for node in self.nodes))

    def _healthy(self) -> bool:
        views = set()
        for node in self.nodes:
            if node.process is None or node.process.poll() is not None:
                continue
            client = control(node.port)
            try:
                if client.execute_command("CLUSTER INFO").get("cluster_state") != "ok":
                    return False
                slots = client.execute_command("CLUSTER SLOTS")
                views.add(tuple(sorted((start, end, owner[1])
                                       for start, end, owner, *_ in slots)))
            except redis_lib.RedisError:
                return False
            finally:
                client.close()
        return len(views) == 1 and sum(end - start + 1 for start, end, _ in
                                       next(iter(views))) == 16384

    def flush(self) -> None:
        for node in self.masters():
            client = control(node.port)
            try:
                client.flushall()
                client.script_flush()
            finally:
                client.close()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def start_cluster(directory: Path, masters: int = 3) -> Cluster:
    """Start 2 * `masters` nodes and join them: each master with one replica."""
    cluster = Cluster()
    try:
        for index in range(2 * masters):
            node_dir = directory / f"node{index}"
            node_dir.mkdir()
            node = Node(_free_port(), _free_port(), node_dir)
            cluster.nodes.append(node)
            node.start()
        create = subprocess.run(
            ["redis-cli", "--cluster", "create", *(node.address for node in cluster.nodes),
             "--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True, text=True, timeout=START_TIMEOUT_S)
        if create.returncode:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{create.stdout}\n"
                               f"{create.stderr}")
        cluster.wait_healthy()
        _wait_replicas_synced(cluster)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _wait_replicas_synced(cluster: Cluster, timeout_s: float = START_TIMEOUT_S) -> None:
    """Until every master has its replica connected (WAIT 1 answers 1). Right after creation
    a node's view of the roles may still change: a node that refuses WAIT as a replica is
    asked again with the masters read anew."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if all(_replicated(node) for node in cluster.masters()):
                return
        except redis_lib.ResponseError:
            pass
        time.sleep(0.1)
    raise RuntimeError("a master of the cluster has no replica in sync")


def _replicated(node: Node) -> bool:
    client = control(node.port)
    try:
        return client.execute_command("WAIT", 1, 100) >= 1
    finally:
        client.close()
