"""What an image adds to its base: the image's size, its base's, the difference, and the largest parts of it.

Target for the frontend image: at most 50 MB over its base (issue 19). The breakdown is read inside the image
(file sizes, as a layer's tar holds them): what /opt/dynamo holds by kind (.pyc, shared libraries, the rest),
the largest entries of the environment's site-packages, and the rest (our user, and files of a lower layer
that a later one replaced: still shipped). Sizes come from the engine: buildah rounds them to 1 MB.

Run: python benchmarks/image_size.py [IMAGE] [--base REF] [--engine podman|buildah|docker] [--top N]
(IMAGE: default dynamo:latest-frontend, as `python build.py --framework frontend` tags it; --base: default the
image's org.opencontainers.image.base.name label, the base it was built on)
"""

from __future__ import annotations

import argparse
import json
import sys

from runtime_start import REPO

sys.path.insert(0, str(REPO))

from dynamo.containers import engine_with_image  # noqa: E402 -- after the checkout is on the path

# Run by the image's Python: {"opt": bytes under /opt/dynamo by kind, "site": bytes per site-packages entry}.
PROBE = r"""
import json, os, sysconfig
site = sysconfig.get_paths()["purelib"]

def kind(name):
    return ".pyc" if name.endswith(".pyc") else "shared libraries" if name.endswith(".so") or ".so." in name else "other"

def tree(top):
    if not os.path.isdir(top) or os.path.islink(top):
        return [(os.path.basename(top), os.lstat(top).st_size)]
    return [(name, os.lstat(os.path.join(d, name)).st_size) for d, _, names in os.walk(top) for name in names]

opt = {}
for name, size in tree("/opt/dynamo"):
    opt[kind(name)] = opt.get(kind(name), 0) + size
site_sizes = {entry: sum(size for _, size in tree(os.path.join(site, entry))) for entry in os.listdir(site)}
print(json.dumps({"opt": opt, "site": site_sizes}))
"""

MB = 1e6  # decimal megabytes, as the engines print image sizes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image", nargs="?", default="dynamo:latest-frontend")
    parser.add_argument("--base", help="default: the image's org.opencontainers.image.base.name label")
    parser.add_argument("--engine", choices=("podman", "buildah", "docker"))
    parser.add_argument("--top", type=int, default=12, help="site-packages entries to list (default 12)")
    args = parser.parse_args()

    engine = engine_with_image(args.image, args.engine)
    info = engine.inspect(args.image)
    base_ref = args.base or info.labels.get("org.opencontainers.image.base.name")
    if not base_ref:
        print(f"error: {args.image} has no org.opencontainers.image.base.name label; name its base with --base",
              file=sys.stderr)
        return 2
    base = engine.inspect(base_ref)
    result = engine.run(args.image, ["python3", "-c", PROBE])
    if result.returncode != 0:
        print(f"error: reading {args.image} failed: {result.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return 1
    found = json.loads(result.stdout)
    overhead = info.size - base.size
    opt_total = sum(found["opt"].values())

    print(f"{args.image} ({engine.name}): {info.size / MB:.1f} MB; its base {base_ref}: {base.size / MB:.1f} MB")
    print(f"overhead: {overhead / MB:.1f} MB (target <= 50 MB)")
    print(f"  /opt/dynamo: {opt_total / MB:.1f} MB")
    for name, size in sorted(found["opt"].items(), key=lambda item: -item[1]):
        print(f"    {name:<18} {size / MB:6.1f} MB")
    print(f"  the rest (our user, files that a later layer replaced): {(overhead - opt_total) / MB:.1f} MB")
    print(f"  largest site-packages entries (of {len(found['site'])}):")
    for name, size in sorted(found["site"].items(), key=lambda item: -item[1])[:args.top]:
        print(f"    {name:<34} {size / MB:6.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
