"""The frontend's own cost: non-streaming chat completions against the mocker at zero delay,
driven by wrk (Debian's `wrk`) at 1, 16 and 64 concurrent connections, on this machine's cores.

Target (2 cores): at least 1000 requests/s, and p99 under 20 ms at 16 clients.
Run: python benchmarks/frontend_speed.py [--seconds S] [--max-tokens N] [--router-mode MODE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from runtime_start import installed_env, start

CONCURRENCY = (1, 16, 64)
LUA = """wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
"""


def to_ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1, "s": 1000}[unit]


def run_wrk(url: str, script: Path, connections: int, seconds: int) -> tuple[float, float, float, int]:
    output = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
                             url + "/v1/chat/completions"], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    p50 = to_ms(re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1))
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return rps, p50, p99, int(errors.group(1)) if errors else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--router-mode", default="round-robin")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk")
    with tempfile.TemporaryDirectory() as scratch:
        env = installed_env(DYN_DISCOVERY_DIR=scratch, DYN_SKIP_PREFLIGHT="1")
        port = 18000 + os.getpid() % 1000
        worker = start(["dynamo.mocker", "--model-name", "bench"], env)
        frontend = start(["dynamo.frontend", "--http-host", "127.0.0.1", "--http-port", str(port),
                          "--router-mode", args.router_mode], env)
        url = f"http://127.0.0.1:{port}"
        try:
            while b"bench" not in urllib.request.urlopen(url + "/v1/models").read():
                time.sleep(0.1)
            body = json.dumps({"model": "bench", "messages": [{"role": "user", "content": "Hello, how are you?"}],
                               "max_tokens": args.max_tokens})
            script = Path(scratch) / "post.lua"
            script.write_text(LUA.format(body=body))
            run_wrk(url, script, 16, 2)  # warm up
            print(f"frontend + mocker (zero delay, {args.max_tokens} tokens per answer), {os.cpu_count()} cores, "
                  f"wrk on the same machine, {args.seconds} s per row, {args.router_mode} routing")
            print(f"{'clients':>8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
            for connections in CONCURRENCY:
                rps, p50, p99, errors = run_wrk(url, script, connections, args.seconds)
                print(f"{connections:>8} {rps:>9.0f} {p50:>8.2f} {p99:>8.2f} {errors:>7}")
                if connections == 16:
                    verdict = "met" if rps >= 1000 and p99 < 20 else "NOT met"
            print(f"target at 16 clients (>= 1000 req/s, p99 < 20 ms): {verdict}")
        finally:
            for process in (frontend, worker):
                process.terminate()
                process.wait()


if __name__ == "__main__":
    main()
