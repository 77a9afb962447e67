"""What Docker's classic builder needs: our Dockerfile without `RUN --mount`, in a deterministic context.

Cache mounts only make builds faster, so they are dropped. The CA-bundle secret mount becomes a
COPY into the stages that use it and never ship (wheel, framework): a COPY is a layer, and a stage
built on one keeps it. So the runtime stage, which other engines build on the framework stage, starts
from runtime-base and copies the framework's /opt/dynamo instead (one large layer, as every classic
build had), and the shipped stages get no CA: they install only what is already here.
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

from dynamo.containers.engine import BuildRequest, ContainerEngineError

CA_IN_CONTEXT = ".dynamo-ca-cert.pem"
# RUN --mount and COPY --chmod need BuildKit; the context tar fixes modes itself (context_tar)
_MOUNT = re.compile(r"--mount=\S+\s*|(?<=^COPY )--chmod=\S+\s*")


SHIPPED = ("runtime", "dev")
_FROM_FRAMEWORK = "FROM framework AS runtime"


def transform(dockerfile: str, with_ca: bool) -> str:
    """The Dockerfile with every RUN --mount option removed; with_ca: the CA COPY'd where mounted, in the
    stages that never ship."""
    out: list[str] = []
    stage_start = None  # index in `out` of the current stage's FROM line
    ca_stages: list[int] = []
    shipped = False
    for line in dockerfile.splitlines():
        if line.startswith("FROM "):
            stage_start = len(out)
            shipped = line.split()[-1] in SHIPPED
            if line.strip() == _FROM_FRAMEWORK:
                out += ["FROM runtime-base AS runtime", "COPY --from=framework /opt/dynamo /opt/dynamo"]
                continue
        if "id=ca_cert" in line and stage_start is not None and stage_start not in ca_stages and not shipped:
            ca_stages.append(stage_start)
        stripped = _MOUNT.sub("", line)
        if stripped != line and stripped.strip() == "\\":
            continue  # a continuation line that held only mounts
        out.append(stripped.rstrip() if stripped != line else line)
    if with_ca:
        for index in reversed(ca_stages):
            out.insert(index + 1, f"COPY {CA_IN_CONTEXT} /run/secrets/ca_cert")
    return "\n".join(out) + "\n"


def _allowlist(context: Path) -> tuple[list[str], list[str]]:
    """The `!` entries of .dockerignore (what goes in) and its other entries after `*` (what stays out)."""
    include: list[str] = []
    exclude: list[str] = []
    for line in (context / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or line == "*":
            continue
        (include if line.startswith("!") else exclude).append(line.lstrip("!").rstrip("/"))
    return include, exclude


def context_files(request: BuildRequest) -> list[Path]:
    include, exclude = _allowlist(request.context)
    files = []
    for pattern in include:
        root = request.context / pattern
        for path in [root] if root.is_file() else sorted(root.rglob("*")):
            relative = path.relative_to(request.context).as_posix()
            if path.is_file() and not any(fnmatch.fnmatch(relative, p) or fnmatch.fnmatch(relative, p + "/*")
                                          or f"/{p.removeprefix('**/')}/" in f"/{relative}" for p in exclude):
                files.append(path)
    return sorted(set(files))


@contextlib.contextmanager
def context_tar(request: BuildRequest) -> Iterator[io.BytesIO]:
    """A tar of the context, the same bytes for the same inputs (sorted, mtime 0, root-owned)."""
    if request.ca_cert and (request.stage == "dev" or request.build_args.get("LOCK") == "none"):
        why = "the dev image" if request.stage == "dev" else "an unlocked runtime image (pip resolves in its last stage)"
        raise ContainerEngineError(f"Docker's classic builder would leave the CA bundle in {why}; build it"
                                   " with --engine buildah, or with docker buildx")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))

        for path in context_files(request):
            add(path.relative_to(request.context).as_posix(), path.read_bytes(), 0o755 if path.stat().st_mode & 0o111 else 0o644)
        add("Dockerfile", transform(request.dockerfile.read_text(), request.ca_cert is not None).encode())
        if request.ca_cert:
            add(CA_IN_CONTEXT, request.ca_cert.read_bytes())
    buffer.seek(0)
    yield buffer
