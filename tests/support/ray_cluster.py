"""A real Ray cluster on loopback for the tests: a head node without GPUs (it runs the
dashboard and the Job Submission API) and one node that declares a logical GPU, as Ray's own
CPU-only CI does. Nodes inherit the environment given here: that is how GPU nodes learn where
the blob store and the DB are, and their credentials."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.ports import free_port
from tests.support.tiers import refuse_in_fast_tier


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """`values` in os.environ for the time of the block."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class RayCluster:
    def __init__(self, node_env: dict[str, str], gpu_nodes: int = 1) -> None:
        self.gpu_nodes = gpu_nodes
        self.node_env = {
            **node_env,
            # Everything on 127.0.0.1 (Ray otherwise binds the machine's other address).
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        self.dashboard_port = free_port()
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        self.cluster: Any = None
        self.gpu_node_ids: list[str] = []

    def start(self) -> "RayCluster":
        refuse_in_fast_tier("Ray cluster", "cluster")
        from ray.cluster_utils import Cluster

        with environment(self.node_env):
            self.cluster = Cluster(initialize_head=True, shutdown_at_exit=True, head_node_args={
                "num_cpus": 1, "num_gpus": 0, "node_ip_address": "127.0.0.1",
                "include_dashboard": True, "dashboard_host": "127.0.0.1",
                "dashboard_port": self.dashboard_port,
                # Ray's fixed default (52365) would leave a second cluster on the machine (a
                # test's while the suite's session one is up, or a benchmark's) with no agent
                # to take its jobs: "No available agent to submit job".
                "dashboard_agent_listen_port": free_port(),
                "object_store_memory": 80 << 20,
            })
            for _ in range(self.gpu_nodes):
                gpu = self.cluster.add_node(num_cpus=1, num_gpus=1, resources={"gpu_node": 1},
                                            node_ip_address="127.0.0.1",
                                            object_store_memory=80 << 20)
                self.gpu_node_ids.append(gpu.node_id)
        self.cluster.wait_for_nodes()
        return self

    def add_nodes(self, count: int, resources: dict[str, float],
                  env: dict[str, str]) -> list[Any]:
        """More nodes (no GPU, one CPU), with their own environment on top of the cluster's."""
        nodes = []
        with environment({**self.node_env, **env}):
            for _ in range(count):
                nodes.append(self.cluster.add_node(
                    num_cpus=1, num_gpus=0, resources=resources, node_ip_address="127.0.0.1",
                    object_store_memory=80 << 20))
        self.cluster.wait_for_nodes()
        return nodes

    def driver_logs(self, job_id: str) -> list[str]:
        """The Ray jobs that ever ran for a tuneserve job, by the driver logs Ray writes for
        each (they outlive the job records tuneserve deletes)."""
        return sorted(p.name for p in Path(self.cluster.head_node.get_logs_dir_path())
                      .glob(f"job-driver-{job_id}-attempt-*.log"))

    def client(self) -> Any:
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.address)

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.shutdown()
            self.cluster = None
