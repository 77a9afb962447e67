"""Reproducible builds, measured with buildah on the Debian stand-in base image from .ci/engines:

1. two builds of one cell from empty caches (--no-cache, fresh RUN --mount caches): identical image ids;
2. a rebuild with nothing changed: every step from cache, and how long it takes (target <= 5 s), and
   whether it is the same image as the cold builds;
3. what reproducibility costs: cold builds of this checkout against cold builds of the commit before
   it (`--before`, its own Dockerfile and build flags), alternating, median of --rounds (target <= +10 %).

Run: python benchmarks/reproducible_build.py [--framework frontend|llama_cpp] [--before REV] [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STANDIN = "localhost/standin:bookworm-amd64"
CA = "/etc/ssl/certs/ca-certificates.crt"


def build(checkout: Path, framework: str, tag: str, *, cold: bool) -> tuple[float, str]:
    """One `build.py` run as a user makes it; cold: --no-cache and empty RUN --mount caches (buildah's TMPDIR)."""
    device = ["--cuda", "cpu"] if framework == "llama_cpp" else []
    command = [sys.executable, str(checkout / "build.py"), "--framework", framework, *device, "--engine", "buildah",
               "--base-image", STANDIN, "--python", "3.11", "--tag", tag]
    if Path(CA).exists():
        command += ["--ca-cert", CA]
    with tempfile.TemporaryDirectory(prefix="dynamo-bench-cache-") as cache:
        env = dict(os.environ, TMPDIR=cache) if cold else None
        started = time.monotonic()
        result = subprocess.run(command + (["--no-cache"] if cold else []), cwd=checkout, env=env,
                                capture_output=True, text=True)
        seconds = time.monotonic() - started
    if result.returncode != 0:
        sys.exit(f"error: the build in {checkout} failed: {result.stderr.strip()[-400:]}")
    return seconds, result.stdout.splitlines()[0]


def image_id(tag: str) -> str:
    return subprocess.run(["buildah", "inspect", "--type", "image", "--format", "{{.FromImageID}}", tag],
                          capture_output=True, text=True, check=True).stdout.strip()


def export(revision: str, into: Path) -> None:
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", revision], capture_output=True,
                             check=True).stdout
    into.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--framework", default="frontend")
    parser.add_argument("--before", default="5d7bc4e", help="the commit before reproducible builds (default: 5d7bc4e)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    tag = f"localhost/dynamo-bench:reproducible-{args.framework}"
    with tempfile.TemporaryDirectory(prefix="dynamo-bench-") as tmp:
        now, before = Path(tmp) / "now", Path(tmp) / "before"
        export("HEAD", now)  # committed files only, so that the revision label describes the image
        export(args.before, before)
        print(f"cell: {args.framework} on {STANDIN}, buildah; this checkout = HEAD"
              f" {subprocess.run(['git', '-C', str(REPO), 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()},"
              f" before = {args.before}")

        ids, times_now, times_before = [], [], []
        for round_ in range(args.rounds):
            seconds, _ = build(now, args.framework, f"{tag}-{round_}", cold=True)
            times_now.append(seconds)
            ids.append(image_id(f"{tag}-{round_}"))
            print(f"  cold build {round_ + 1} (this checkout)   {seconds:7.1f} s  image id {ids[-1][:19]}", flush=True)
            seconds, _ = build(before, args.framework, f"{tag}-before", cold=True)
            times_before.append(seconds)
            print(f"  cold build {round_ + 1} (before)          {seconds:7.1f} s", flush=True)
        print(f"1. {len(ids)} builds from empty caches: {'identical image ids' if len(set(ids)) == 1 else 'DIFFERENT ids'}"
              f" ({', '.join(i[:12] for i in ids)})")

        # buildah 1.28 keeps no reusable layers from a --no-cache build: one plain build seeds the cache.
        build(now, args.framework, f"{tag}-0", cold=False)
        seconds, summary = build(now, args.framework, f"{tag}-0", cold=False)
        print(f"2. rebuild with nothing changed (after a plain build seeded the cache): {seconds:.1f} s wall"
              f" ({summary}); same image id as the cold builds: {image_id(f'{tag}-0') == ids[0]}")

        median_now, median_before = statistics.median(times_now), statistics.median(times_before)
        print(f"3. cold build, median of {args.rounds}: {median_now:.1f} s now vs {median_before:.1f} s before:"
              f" {100 * (median_now / median_before - 1):+.1f} %")
        for suffix in [str(i) for i in range(args.rounds)] + ["before"]:
            subprocess.run(["buildah", "rmi", f"{tag}-{suffix}"], capture_output=True)


if __name__ == "__main__":
    main()
