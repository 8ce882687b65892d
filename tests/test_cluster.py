"""A real multi-node Ray cluster on loopback (a head and a worker node on this machine)."""

import subprocess
import sys

import pytest

from zoo.folder.reader import ZooReader


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    own = str(tmp_path_factory.mktemp("worker-node-cache"))  # the worker node's own scratch
    cluster.add_node(num_cpus=1, env_vars={"PHASE_ZOO_CACHE": own})
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


@pytest.mark.slow
@pytest.mark.cluster
def test_generate_on_a_two_node_cluster_equals_the_local_zoo(tiny_zoo, tmp_path, cluster):
    out = tmp_path / "clustered"
    command = [sys.executable, "-m", "generators.cli", "generate", str(tiny_zoo.parent / "tiny.yaml"),
               "--out", str(out), "--address", cluster.address, "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "on 2 Ray nodes" in done.stdout
    columns = ["model_id", "epoch", "weights", "test_loss"]
    local = ZooReader(tiny_zoo).table("models", columns).sort_by([("model_id", "ascending"),
                                                                  ("epoch", "ascending")])
    remote = ZooReader(out).table("models", columns).sort_by([("model_id", "ascending"),
                                                              ("epoch", "ascending")])
    assert remote.equals(local)


@pytest.mark.slow
@pytest.mark.cluster
def test_generate_on_a_two_node_cluster_to_a_store_equals_the_local_zoo(tiny_zoo, cluster,
                                                                        s3_store):
    url = s3_store.url("clustered")  # the nodes share no path: shards go to the store
    command = [sys.executable, "-m", "generators.cli", "generate",
               str(tiny_zoo.parent / "tiny.yaml"), "--out", url, "--address", cluster.address,
               "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "on 2 Ray nodes" in done.stdout
    columns = ["model_id", "epoch", "weights", "test_loss"]
    order = [("model_id", "ascending"), ("epoch", "ascending")]
    local = ZooReader(tiny_zoo).table("models", columns).sort_by(order)
    assert ZooReader(url).table("models", columns).sort_by(order).equals(local)
