"""What the engines driven by a command line (buildah, podman, docker buildx) share: running the
command, the build flags a request gives them, and the root cause of a failure."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
from abc import abstractmethod
from pathlib import Path
from typing import ClassVar

from dynamo.containers.engine import BuildRequest, BuildResult, ContainerEngine, ContainerEngineError, Lines

_STEP_LINE = re.compile(r"^(\[\d+/\d+\] )?STEP \d+/\d+:|^Step \d+/\d+ :|^#\d+ \[")


def stream(command: list[str], on_line: Lines, env: dict[str, str] | None = None) -> tuple[int, list[str]]:
    """Run a command, handing each output line to on_line; return its exit code and last lines."""
    tail: list[str] = []
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   errors="replace", bufsize=1, env=env)
    except FileNotFoundError:
        raise ContainerEngineError(f"{command[0]} is not installed") from None
    try:
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip("\n")
            on_line(line)
            tail = (tail + [line])[-20:]
        return process.wait(), tail
    except BaseException:
        process.terminate()
        process.wait()
        raise


class CliEngine(ContainerEngine):
    """Engines driven by a CLI (subprocess, no shell)."""

    cli: ClassVar[str]

    def __init__(self, cache_dir: Path | None = None) -> None:
        """cache_dir: where buildah keeps `RUN --mount=type=cache` caches (its TMPDIR); a fresh
        directory builds from empty caches."""
        self.cache_dir = cache_dir

    @classmethod
    def unavailable(cls) -> str | None:
        return None if shutil.which(cls.cli) else f"{cls.cli} is not installed ({cls.install_hint})"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        try:
            result = subprocess.run([self.cli, *args], capture_output=True, text=True, errors="replace")
        except FileNotFoundError:
            raise ContainerEngineError(f"{self.cli} is not installed ({self.install_hint})") from None
        if check and result.returncode != 0:
            message = (result.stderr.strip() or result.stdout.strip()).splitlines()
            raise ContainerEngineError(f"{self.cli} {args[0]} failed: {message[-1] if message else 'exit ' + str(result.returncode)}")
        return result

    def describe_build(self, request: BuildRequest, temp_ref: str) -> str:
        return " ".join(shlex.quote(part) for part in self.build_command(request, temp_ref))

    @abstractmethod
    def build_command(self, request: BuildRequest, temp_ref: str, iidfile: str = "IIDFILE") -> list[str]: ...

    def build(self, request: BuildRequest, temp_ref: str, on_line: Lines) -> BuildResult:
        with tempfile.TemporaryDirectory() as tmp:
            iidfile = str(Path(tmp) / "iid")
            env = dict(os.environ, TMPDIR=str(self.cache_dir)) if self.cache_dir else None
            code, tail = stream(self.build_command(request, temp_ref, iidfile), on_line, env)
            if code != 0:
                raise ContainerEngineError(f"{self.cli} build failed (exit {code}): {_last_error(tail)}")
            iid = Path(iidfile).read_text().strip() if Path(iidfile).exists() else temp_ref
        return BuildResult(image_id=iid, ref=temp_ref)

    def run(self, ref: str, command: list[str]) -> subprocess.CompletedProcess[str]:
        return self._run("run", "--rm", ref, *command, check=False)


def build_flags(request: BuildRequest) -> list[str]:
    """The flags buildah, podman and buildx share, from the request."""
    flags = ["-f", str(request.dockerfile), "--target", request.stage, "--platform", ",".join(request.platforms)]
    for key, value in request.build_args.items():
        flags += ["--build-arg", f"{key}={value}"]
    if request.ca_cert:
        flags += ["--secret", f"id=ca_cert,src={request.ca_cert}"]
    if request.no_cache:
        flags.append("--no-cache")
    flags += [arg for ref in request.cache_from for arg in ("--cache-from", ref)]
    flags += [arg for ref in request.cache_to for arg in ("--cache-to", ref)]
    return flags


def _last_error(tail: list[str]) -> str:
    """The root cause: the earliest error line of the output's tail (engines wrap it in later ones)."""
    for line in tail:
        if _STEP_LINE.match(line):
            continue  # the step's own command text may contain the word
        if line.strip().lower().startswith(("error", "e: ")) or "error:" in line.lower():
            return line.strip()
    return tail[-1].strip() if tail else "no output"


def local_registry(ref: str) -> bool:
    """A registry on this machine (localhost, 127.0.0.1), which engines and skopeo talk plain HTTP to."""
    host = ref.split("/", 1)[0] if "/" in ref else ""
    return host.startswith(("localhost", "127.0.0.1"))
