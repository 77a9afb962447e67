"""A cold build, then a rebuild after touching one file in dynamo/, for the same target.

The rebuild must reuse every engine layer: only our wheel and the layers after it run again.
Default target: llama.cpp on the CPU (it compiles llama.cpp in the framework stage) on the
Debian stand-in base image from .ci/engines, with buildah.

Run: python benchmarks/build_cache.py [--framework F --cuda X] [--engine buildah|docker]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--framework", default="llama_cpp")
    parser.add_argument("--cuda", default="cpu")
    parser.add_argument("--engine", default="buildah")
    parser.add_argument("--base-image", default="localhost/standin:bookworm-amd64")
    parser.add_argument("--python", default="3.11")
    parser.add_argument("--ca-cert", default="/etc/ssl/certs/ca-certificates.crt")
    args = parser.parse_args()

    from dynamo.containers import get_engine
    from dynamo.imagebuild.image import Progress, build_image
    from dynamo.imagebuild.plan import make_plan
    from dynamo.matrix import load

    engine = get_engine(args.engine)
    common = dict(framework=args.framework, cuda=args.cuda, python=args.python, base_image=args.base_image,
                  ca_cert=args.ca_cert if Path(args.ca_cert).exists() else None,
                  tags=[f"localhost/dynamo-bench:{args.framework}-{args.cuda}"])
    matrix = load()

    def timed(label: str, **extra) -> Progress:
        progress = Progress(out=open("/dev/null", "w"))
        summary = build_image(make_plan(matrix, **common, **extra), engine, progress)
        print(f"{label:<58} {summary.seconds:7.1f} s, {summary.steps} steps, {summary.cached} from cache")
        return progress

    timed(f"cold build ({engine.name}, --no-cache)", no_cache=True)
    # buildah 1.28 keeps no reusable layers from a --no-cache build: one plain build seeds the cache.
    timed("same build again, untouched (seeds the layer cache)")

    touched = REPO / "dynamo" / "__init__.py"
    original = touched.read_text()
    try:
        touched.write_text(original + f"# benchmark touch {time.time()}\n")
        warm = timed("rebuild after touching dynamo/__init__.py")
    finally:
        touched.write_text(original)
    ran = [what for what, cached in warm.log if not cached and not what.startswith(("FROM", "ARG", "ENV", "LABEL",
                                                                                    "USER", "WORKDIR", "SHELL"))]
    engine_steps = [what for what, _ in warm.log if "constraints" in what or "COPY --from=framework" in what]
    print("steps that ran again:")
    for what in ran:
        print(f"  {what[:100]}")
    reused = all(cached for what, cached in warm.log if what in engine_steps)
    print(f"engine layers reused: {'yes' if reused else 'NO'} ({len(engine_steps)} engine steps checked)")


if __name__ == "__main__":
    main()
