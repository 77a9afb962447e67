"""Runtime processes for tests: started as a user starts them, ready when they say so, always stopped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Process:
    """`python -m MODULE ARGS` with its output in a log file."""

    def __init__(self, log_dir: Path, module: str, *args: str, env: dict[str, str], ready: str | None = "ready",
                 stdin: int | None = None) -> None:
        self.log = log_dir / f"{module.replace('.', '_')}-{time.monotonic_ns()}.log"
        self.handle = self.log.open("wb")
        self.popen = subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO, env={**os.environ, **env},
                                      stdout=self.handle, stderr=subprocess.STDOUT, stdin=stdin)
        if ready:
            self.wait_for(ready)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def worker_address(self) -> str:
        """HOST:PORT, from a worker's "worker ready: model 'm' (framework) on HOST:PORT, ..." line."""
        return self.output().split(" on ", 1)[1].split(",", 1)[0]

    def instance_id(self) -> str:
        """A worker's instance id, from its ready line (", instance ID, ")."""
        return self.output().split(", instance ", 1)[1].split(",", 1)[0]

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if self.popen.poll() is not None:
                raise AssertionError(f"{self.popen.args} exited with {self.popen.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.popen.args} did not print {text!r} in {timeout} s:\n{self.output()}")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.handle.close()
        return self.popen.returncode


class Deployment:
    """Frontends and workers of one namespace, stopped together at the end of a test."""

    def __init__(self, tmp_path: Path, **env: str) -> None:
        self.tmp_path = tmp_path
        self.env = {"DYN_DISCOVERY_DIR": str(tmp_path / "discovery"), "DYN_NAMESPACE": "test", **env}
        self.processes: list[Process] = []

    def start(self, module: str, *args: str, **kwargs) -> Process:
        process = Process(self.tmp_path, module, *args, env=self.env, **kwargs)
        self.processes.append(process)
        return process

    def frontend(self, *args: str) -> str:
        port = free_port()
        self.start("dynamo.frontend", "--http-host", "127.0.0.1", "--http-port", str(port), *args)
        return f"http://127.0.0.1:{port}"

    def mocker(self, name: str = "mock", *args: str) -> Process:
        return self.start("dynamo.mocker", "--model-name", name, *args)

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
