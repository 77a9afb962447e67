"""The layer cache of one target: a cold build, a rebuild with nothing changed, and a rebuild after
touching one file in dynamo/.

A rebuild with nothing changed must take every step from the cache (target: at most 5 s, as
`python build.py` runs it); its time is split into what comes before the engine's first step
(Python, the plan, the base image check), the steps, and what comes after the last one (tagging,
reading the image back). The rebuild after a touch must reuse every engine layer: only our wheel
and the layers after it run again. Default target: llama.cpp on the CPU (it compiles llama.cpp in
the framework stage) on the Debian stand-in base image from .ci/engines, with buildah.

The touched rebuild also reports how much of the image changed: the layers it does not share with the
image before the touch (what a registry receives and users pull again after a fix of ours). Targets for
the vLLM image: at most 30 s and at most 50 MB of changed layers.

Run: python benchmarks/build_cache.py [--framework F --cuda X] [--engine buildah|docker] [--warm]
(--warm: skip the two cold builds, for an image whose layers are cached already, e.g. vLLM's 8.5 GiB)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from runtime_start import REPO, load_average

sys.path.insert(0, str(REPO))

from dynamo.imagebuild.image import Progress  # noqa: E402 -- after the checkout is on the path

METADATA = ("FROM", "ARG", "ENV", "LABEL", "USER", "WORKDIR", "SHELL", "EXPOSE", "HEALTHCHECK", "CMD")


@dataclass
class Timeline(Progress):
    """Progress that also notes when the engine announced its first step and printed its last line."""

    first_step: float | None = None
    last_line: float = 0.0

    def line(self, text: str) -> None:
        super().line(text)
        if self.first_step is None and self.steps:
            self.first_step = self.elapsed()
        self.last_line = self.elapsed()


def store_size(engine_name: str) -> str:
    """buildah and podman look a cached step up among every image in the store, intermediate ones included:
    the more images, the slower each cached step."""
    if engine_name not in ("buildah", "podman"):
        return ""
    listing = subprocess.run([engine_name, "images", "--all", "--quiet"], capture_output=True, text=True).stdout
    return f", {len(listing.split())} images in the store"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--framework", default="llama_cpp")
    parser.add_argument("--cuda", default="cpu")
    parser.add_argument("--engine", default="buildah")
    parser.add_argument("--base-image", default="localhost/standin:bookworm-amd64")
    parser.add_argument("--python", default="3.11")
    parser.add_argument("--ca-cert", default="/etc/ssl/certs/ca-certificates.crt")
    parser.add_argument("--release", default=None)
    parser.add_argument("--warm", action="store_true", help="skip the cold builds: the layers are cached already")
    args = parser.parse_args()

    from dynamo.containers import get_engine
    from dynamo.imagebuild.image import build_image
    from dynamo.imagebuild.plan import make_plan
    from dynamo.matrix import load as load_matrix

    engine = get_engine(args.engine)
    ca_cert = args.ca_cert if Path(args.ca_cert).exists() else None
    tag = f"localhost/dynamo-bench:{args.framework}-{args.cuda}"
    common = dict(framework=args.framework, cuda=args.cuda, python=args.python, base_image=args.base_image,
                  ca_cert=ca_cert, tags=[tag], release=args.release)
    matrix = load_matrix()

    def timed(label: str, **extra) -> Timeline:
        progress = Timeline(out=open(os.devnull, "w"))
        summary = build_image(make_plan(matrix, **common, **extra), engine, progress)
        print(f"{label:<58} {summary.seconds:7.1f} s, {summary.steps} steps, {summary.cached} from cache"
              f"  (load average {load_average()}{store_size(engine.name)})")
        return progress

    def ran_again(progress: Timeline) -> list[str]:
        return [what for what, cached in progress.log if not cached and not what.startswith(METADATA)]

    if not args.warm:
        timed(f"cold build ({engine.name}, --no-cache)", no_cache=True)
        # buildah 1.28 keeps no reusable layers from a --no-cache build: one plain build seeds the cache.
        timed("same build again (seeds the layer cache)")

    nothing = timed("rebuild, nothing changed (build_image)")
    steps_end = nothing.last_line
    print(f"  before the first step {nothing.first_step or 0:5.1f} s, steps {steps_end - (nothing.first_step or 0):5.1f} s,"
          f" after the last step {nothing.elapsed() - steps_end:5.1f} s")
    print(f"  steps not from the cache: {len(ran_again(nothing))} {ran_again(nothing)}")
    command = [sys.executable, str(REPO / "build.py"), "--framework", args.framework, "--cuda", args.cuda,
               *(["--release", args.release] if args.release else []),
               "--python", args.python, "--base-image", args.base_image, "--engine", engine.name, "--tag", tag,
               *(["--ca-cert", ca_cert] if ca_cert else [])]
    started = time.monotonic()
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    print(f"{'rebuild, nothing changed (python build.py, end to end)':<58} {time.monotonic() - started:7.1f} s"
          f"  (load average {load_average()})")

    before = layers(engine.name, tag)
    touched = REPO / "dynamo" / "__init__.py"
    original = touched.read_text()
    try:
        touched.write_text(original + f"# benchmark touch {time.time()}\n")
        warm = timed("rebuild after touching dynamo/__init__.py")
    finally:
        touched.write_text(original)
    engine_steps = [what for what, _ in warm.log if "constraints" in what or "COPY --from=framework" in what]
    print("steps that ran again:")
    for what in ran_again(warm):
        print(f"  {what[:100]}")
    reused = all(cached for what, cached in warm.log if what in engine_steps)
    print(f"engine layers reused: {'yes' if reused else 'NO'} ({len(engine_steps)} engine steps checked)")
    after = layers(engine.name, tag)
    changed = {digest: size for digest, size in after.items() if digest not in before}
    print(f"layers changed by the touch: {len(changed)} of {len(after)}, {sum(changed.values()) / 1e6:.1f} MB"
          f" of {sum(after.values()) / 1e6:.0f} MB")


def layers(engine_name: str, ref: str) -> dict[str, int]:
    """{layer digest: size} of an image, as skopeo reads it from the engine's store."""
    transport = "containers-storage:" if engine_name in ("buildah", "podman") else "docker-daemon:"
    manifest = subprocess.run(["skopeo", "inspect", "--raw", transport + ref], capture_output=True, text=True,
                              check=True).stdout
    return {layer["digest"]: layer["size"] for layer in json.loads(manifest)["layers"]}


if __name__ == "__main__":
    main()
