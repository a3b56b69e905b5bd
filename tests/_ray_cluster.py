"""A real two-node local Ray cluster for a test module (``ray.cluster_utils.Cluster``): head (1 CPU) + one node
(1 CPU), started the way the backend starts a local instance (the driver's secrets out of the environment the node
processes copy), with fast node-failure detection; the test process is connected to it as the driver.

One such cluster at a time on the machine (a file lock): pytest-xdist may hand tests of one module to both workers,
and two clusters starting at once on a loaded 2-core machine time out.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from alpha_evolve.evaluation_backend import scrubbed_environ
from alpha_evolve.ray_backend import import_ray


@contextlib.contextmanager
def two_node_cluster(secret: str) -> Iterator[Any]:
    from filelock import FileLock
    from ray.cluster_utils import Cluster

    ray = import_ray()  # under `make test` (uv run) workers would otherwise start through uv run, without ray

    lock = FileLock(os.path.join(tempfile.gettempdir(), "alpha-evolve-test-ray-cluster.lock"))
    with lock, pytest.MonkeyPatch.context() as mp:
        mp.setenv("ANTHROPIC_API_KEY", secret)
        mp.setenv("GITHUB_TOKEN", secret)
        with scrubbed_environ():
            cluster = Cluster(initialize_head=True, head_node_args={
                "num_cpus": 1, "include_dashboard": False,
                "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 10,
                                   "health_check_initial_delay_ms": 0},
            })
            cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes()
        ray.init(address=cluster.address, namespace="alpha-evolve", log_to_driver=False)
        try:
            yield cluster
        finally:
            ray.shutdown()
            cluster.shutdown()
