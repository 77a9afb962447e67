"""Discovery through a real etcd (Debian's etcd-server): workers register under leases, a killed
worker's key expires with its lease, and the frontend stops routing to it."""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
import time

import pytest
from conftest import require
from processes import Deployment, free_port
from test_frontend import http, wait_for_instances

LEASE_TTL = 2


class Etcd:
    """A real etcd on 127.0.0.1 that a test can stop, start again (same data) and freeze."""

    def __init__(self, tmp_path, start: bool = True) -> None:
        require(None if shutil.which("etcd") else "etcd is not installed (apt-get install etcd-server)")
        self.tmp_path = tmp_path
        self.client, self.peer = free_port(), free_port()
        self.endpoint = f"http://127.0.0.1:{self.client}"
        from etcd3gw.client import Etcd3Client
        self.api = Etcd3Client(host="127.0.0.1", port=self.client, timeout=2)
        self.server: subprocess.Popen | None = None
        if start:
            self.start()

    def start(self) -> None:
        peer = f"http://127.0.0.1:{self.peer}"
        self.log = (self.tmp_path / "etcd.log").open("ab")
        self.server = subprocess.Popen(["etcd", "--data-dir", str(self.tmp_path / "etcd"), "--listen-client-urls",
                                        self.endpoint, "--advertise-client-urls", self.endpoint, "--listen-peer-urls",
                                        peer, "--initial-advertise-peer-urls", peer, "--initial-cluster",
                                        f"default={peer}"], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.api.status()
                return
            except Exception:
                assert time.monotonic() < deadline and self.server.poll() is None, \
                    (self.tmp_path / "etcd.log").read_text()
                time.sleep(0.2)

    def stop(self) -> None:
        if self.server is None or self.server.poll() is not None:
            return
        self.server.send_signal(signal.SIGCONT)  # were it frozen
        self.server.terminate()
        self.server.wait(10)
        self.log.close()


@pytest.fixture
def etcd(tmp_path):
    server = Etcd(tmp_path)
    yield server.endpoint, server.api
    server.stop()


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


class Traffic:
    """Requests one after another from a thread, each a live worker could serve: every one must succeed."""

    def __init__(self, url: str) -> None:
        self.url, self.answered, self.failures = url, 0, []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                code, answer, _ = http(self.url + "/v1/completions", {"model": "mock", "prompt": "hi", "max_tokens": 2})
            except Exception as error:  # the frontend itself went away
                code, answer = 0, repr(error)
            if code == 200:
                self.answered += 1
            else:
                self.failures.append((code, answer))
            time.sleep(0.05)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(60)


def health(url: str) -> dict:
    return http(url + "/health")[1]


def wait_for_status(url: str, status: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while (now := health(url))["status"] != status:
        assert time.monotonic() < deadline, now
        time.sleep(0.1)
    return now


@pytest.fixture
def outage(tmp_path):
    """etcd, a frontend and two workers of `mock`, with 2-second leases, and traffic."""
    server = Etcd(tmp_path)
    deployment = Deployment(tmp_path, DYN_DISCOVERY="etcd", ETCD_ENDPOINTS=server.endpoint)
    url = deployment.frontend("--lease-ttl", str(LEASE_TTL))
    for _ in range(2):
        deployment.mocker("mock", "--lease-ttl", str(LEASE_TTL))
    try:
        wait_for_instances(url, 2)
        traffic = Traffic(url)
        yield server, deployment, url, traffic
        traffic.stop()
    finally:
        deployment.stop()
        server.stop()


def test_frontend_serves_through_etcd_stopped(outage):
    server, deployment, url, traffic = outage
    time.sleep(1)
    server.stop()  # SIGTERM: gone for 8 s
    during = wait_for_status(url, "degraded", timeout=LEASE_TTL + 8)
    assert "cannot reach etcd" in during["message"] and len(during["instances"]) == 2
    time.sleep(8)
    server.start()
    wait_for_status(url, "healthy", timeout=15)
    deployment.mocker("mock", "--lease-ttl", str(LEASE_TTL))  # and it catches up
    wait_for_instances(url, 3)
    traffic.stop()
    assert deployment.processes[0].popen.poll() is None
    assert traffic.failures == [] and traffic.answered > 50, (traffic.answered, traffic.failures[:3])
    assert "Traceback" not in deployment.processes[0].output()


def test_workers_register_again_after_etcd_froze_past_their_leases(outage):
    server, deployment, url, traffic = outage
    time.sleep(1)
    server.server.send_signal(signal.SIGSTOP)  # frozen three leases long: every lease expires
    wait_for_status(url, "degraded", timeout=LEASE_TTL + 10)
    time.sleep(3 * LEASE_TTL)
    server.server.send_signal(signal.SIGCONT)
    deadline = time.monotonic() + 15
    while keys(server.api) != 2:  # the workers registered again, under new leases
        assert time.monotonic() < deadline, keys(server.api)
        time.sleep(0.2)
    wait_for_status(url, "healthy", timeout=15)
    fresh = deployment.frontend()  # one started now finds them
    wait_for_instances(fresh, 2)
    traffic.stop()
    assert traffic.failures == [] and traffic.answered > 50, (traffic.answered, traffic.failures[:3])
    for worker in deployment.processes[1:3]:
        assert "registering again" in worker.output() and "Traceback" not in worker.output()


def test_frontend_started_before_etcd_catches_up(tmp_path):
    server = Etcd(tmp_path, start=False)
    deployment = Deployment(tmp_path, DYN_DISCOVERY="etcd", ETCD_ENDPOINTS=server.endpoint)
    try:
        url = deployment.frontend("--lease-ttl", str(LEASE_TTL))
        deadline = time.monotonic() + 10
        while "cannot reach etcd" not in (waiting := health(url))["message"]:
            assert time.monotonic() < deadline, waiting
            time.sleep(0.1)
        assert waiting["status"] == "unhealthy" and http(url + "/health")[0] == 503
        server.start()
        deployment.mocker("mock", "--lease-ttl", str(LEASE_TTL))
        wait_for_instances(url, 1)
        assert health(url)["status"] == "healthy"
    finally:
        deployment.stop()
        server.stop()
