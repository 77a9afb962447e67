"""Discovery through a real etcd (Debian's etcd-server): workers register under leases, a killed
worker's key expires with its lease, and the frontend stops routing to it."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time

import pytest
from conftest import require
from processes import Deployment, free_port
from test_frontend import http, wait_for_instances

LEASE_TTL = 2


@pytest.fixture
def etcd(tmp_path):
    require(None if shutil.which("etcd") else "etcd is not installed (apt-get install etcd-server)")
    client, peer = free_port(), free_port()
    endpoint = f"http://127.0.0.1:{client}"
    log = (tmp_path / "etcd.log").open("wb")
    server = subprocess.Popen(["etcd", "--data-dir", str(tmp_path / "etcd"), "--listen-client-urls", endpoint,
                               "--advertise-client-urls", endpoint, "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                               "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                               "--initial-cluster", f"default=http://127.0.0.1:{peer}"],
                              stdout=log, stderr=subprocess.STDOUT)
    from etcd3gw.client import Etcd3Client
    api = Etcd3Client(host="127.0.0.1", port=client, timeout=2)
    deadline = time.monotonic() + 30
    while True:
        try:
            api.status()
            break
        except Exception:
            assert time.monotonic() < deadline and server.poll() is None, (tmp_path / "etcd.log").read_text()
            time.sleep(0.2)
    yield endpoint, api
    server.terminate()
    server.wait(10)
    log.close()


def keys(api) -> int:
    return len(api.get_prefix("/dynamo/test/instances/"))


def test_killed_worker_disappears_within_the_lease(tmp_path, etcd):
    endpoint, api = etcd
    deployment = Deployment(tmp_path, DYN_DISCOVERY="etcd", ETCD_ENDPOINTS=endpoint)
    try:
        url = deployment.frontend()
        doomed = deployment.mocker("mock", "--lease-ttl", str(LEASE_TTL))
        deployment.mocker("mock", "--lease-ttl", str(LEASE_TTL))
        wait_for_instances(url, 2)
        assert keys(api) == 2
        used = {http(url + "/v1/completions", {"model": "mock", "prompt": "hi", "max_tokens": 1})[2]["x-dynamo-worker"]
                for _ in range(2)}
        assert len(used) == 2  # both are used

        doomed.stop(signal.SIGKILL)  # no chance to unregister: only the lease can remove it
        killed = time.monotonic()
        while keys(api) == 2:
            assert time.monotonic() - killed < LEASE_TTL + 3, "the dead worker's key outlived its lease"
            time.sleep(0.1)
        wait_for_instances(url, 1, timeout=LEASE_TTL + 3)
        answers = [http(url + "/v1/completions", {"model": "mock", "prompt": "hi", "max_tokens": 1}) for _ in range(6)]
        assert {code for code, _, _ in answers} == {200}
        assert len({headers["x-dynamo-worker"] for _, _, headers in answers}) == 1
    finally:
        deployment.stop()
    assert keys(api) == 0  # SIGTERM: the others revoked their leases on the way out


def test_etcd_unreachable_is_one_line(tmp_path):
    deployment = Deployment(tmp_path, DYN_DISCOVERY="etcd", ETCD_ENDPOINTS=f"http://127.0.0.1:{free_port()}")
    worker = deployment.start("dynamo.mocker", "--model-name", "mock", ready=None)
    assert worker.popen.wait(60) == 1
    assert "cannot reach etcd at http://127.0.0.1:" in worker.output() and "Traceback" not in worker.output()
    deployment.stop()
