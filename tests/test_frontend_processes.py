"""Several frontend processes on one port (--processes): each answers, and discovery, /health and
/metrics read the same from any of them."""

from __future__ import annotations

import signal
import socket
import threading
import time
import urllib.request
from pathlib import Path

from processes import free_port
from test_frontend import client, deployment, http, wait_for_models  # noqa: F401 (fixture)


def metrics(url: str) -> str:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        return response.read().decode()


def test_processes_share_the_port(deployment):  # noqa: F811
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    frontend = deployment.start("dynamo.frontend", "--http-host", "127.0.0.1", "--http-port", str(port),
                                "--processes", "2")
    frontend.wait_for("process", timeout=30)
    deadline = time.monotonic() + 30
    while frontend.output().count("frontend ready") < 2:
        assert time.monotonic() < deadline, frontend.output()
        time.sleep(0.05)
    deployment.mocker("mock", "--itl-ms", "20")
    wait_for_models(url, {"mock"})
    # each process discovers the worker on its own: wait until 20 new connections in a row see it
    seen, deadline = 0, time.monotonic() + 30
    while seen < 20:
        assert time.monotonic() < deadline, "not every process discovered the worker"
        seen = seen + 1 if [m["id"] for m in http(url + "/v1/models")[1]["data"]] == ["mock"] else 0
    api = client(url)
    for _ in range(20):  # each on a new connection, spread over the processes by the kernel
        assert http(url + "/v1/completions", {"model": "mock", "prompt": "hi", "max_tokens": 2})[0] == 200
    answered_by = set()
    for _ in range(40):
        status, health, _ = http(url + "/health")
        assert status == 200 and [i["model"] for i in health["instances"]] == ["mock"]  # every process sees it
        answered_by.add(health["frontend"])
        assert "address" not in health["instances"][0] and "process" not in health  # nothing to find a host by
    assert len(answered_by) == 2

    # Metrics add up over the processes, whichever answers the scrape.
    line = 'dynamo_frontend_requests_total{endpoint="completions",model="mock",request_type="unary",status="success"}'
    for _ in range(6):
        assert f"{line} 20.0" in metrics(url)
    # A long answer in flight shows on /health and the per-worker gauge from every process.
    slow = threading.Thread(target=lambda: api.completions.create(model="mock", prompt="hi", max_tokens=100))
    slow.start()
    time.sleep(0.5)
    seen = {health["instances"][0]["inflight"] for health in (http(url + "/health")[1] for _ in range(10))}
    slow.join()
    assert seen == {1}
    assert frontend.stop(signal.SIGTERM) == 0
    assert "Traceback" not in frontend.output()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # closed connections may linger, not listeners
        sock.bind(("127.0.0.1", port))  # every process let go of the port
        sock.listen()


def test_port_in_use_is_one_line(deployment):  # noqa: F811
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        process = deployment.start("dynamo.frontend", "--http-host", "127.0.0.1", "--http-port", str(port),
                                   "--processes", "2", ready=None)
        assert process.popen.wait(60) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in process.output() and "Traceback" not in process.output()


def test_processes_follow_a_killed_parent(deployment):  # noqa: F811
    port = free_port()
    frontend = deployment.start("dynamo.frontend", "--http-host", "127.0.0.1", "--http-port", str(port),
                                "--processes", "2")
    children = Path(f"/proc/{frontend.popen.pid}/task/{frontend.popen.pid}/children").read_text().split()
    assert len(children) == 2
    frontend.stop(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{child}").exists() for child in children):
        assert time.monotonic() < deadline, "a frontend process outlived its parent"
        time.sleep(0.1)


def test_a_worker_stops_without_a_traceback_while_a_frontend_is_connected(deployment):  # noqa: F811
    """Python 3.11's start_server logs a traceback for a connection handler cancelled at shutdown
    (python/cpython#113538); the worker's handler ends its connection quietly instead."""
    url = deployment.frontend()
    worker = deployment.mocker("mock")
    wait_for_models(url, {"mock"})
    assert http(url + "/v1/completions", {"model": "mock", "prompt": "hi", "max_tokens": 2})[0] == 200
    assert worker.stop(signal.SIGTERM) == 0  # the frontend's connection to it is still open
    assert "worker stopped" in worker.output() and "Traceback" not in worker.output(), worker.output()
