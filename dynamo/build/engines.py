"""Container engines behind one interface: one class per engine.

Docker with buildx and buildah/podman are driven through their CLIs; Docker's classic builder
through the Docker SDK (it cannot parse `RUN --mount`, so it gets a transformed Dockerfile in a
deterministic context, see `dynamo.build.classic`). Every failure is an `EngineError` whose
message is one line naming what to do.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import ClassVar

from dynamo.build.plan import BuildPlan

Lines = Callable[[str], None]
_STEP_LINE = re.compile(r"^(\[\d+/\d+\] )?STEP \d+/\d+:|^Step \d+/\d+ :|^#\d+ \[")


class EngineError(Exception):
    """An engine is missing or failed; str() says what to do."""


def _local_registry(ref: str) -> bool:
    host = ref.split("/", 1)[0] if "/" in ref else ""
    return host.startswith(("localhost", "127.0.0.1"))


def stream(command: list[str], on_line: Lines, env: dict[str, str] | None = None) -> tuple[int, list[str]]:
    """Run a command, handing each output line to on_line; return its exit code and last lines."""
    tail: list[str] = []
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   errors="replace", bufsize=1, env=env)
    except FileNotFoundError:
        raise EngineError(f"{command[0]} is not installed") from None
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


class ContainerEngine(ABC):
    name: ClassVar[str]
    multi_platform: ClassVar[bool] = False
    install_hint: ClassVar[str]
    store: ClassVar[str]  # where a built image is, in words

    @classmethod
    @abstractmethod
    def unavailable(cls) -> str | None:
        """None when usable here, else why not."""

    @abstractmethod
    def describe_build(self, plan: BuildPlan, temp_ref: str) -> str:
        """The exact command or API call `build` makes, for --dry-run."""

    @abstractmethod
    def build(self, plan: BuildPlan, temp_ref: str, on_line: Lines) -> str:
        """Build into temp_ref (never a final tag); return the image (or manifest list) id."""

    @abstractmethod
    def has_image(self, ref: str) -> bool: ...

    @abstractmethod
    def pull(self, ref: str) -> None: ...

    @abstractmethod
    def tag(self, source: str, tags: Iterable[str]) -> None: ...

    @abstractmethod
    def push(self, ref: str) -> None: ...

    @abstractmethod
    def remove(self, ref: str) -> None: ...

    @abstractmethod
    def inspect(self, ref: str) -> dict:
        """{"id", "size", "labels", "architecture"} of a local image."""

    @abstractmethod
    def run(self, ref: str, command: list[str]) -> subprocess.CompletedProcess:
        """Run a command in a throwaway container of the image."""

    def ensure_base_image(self, ref: str) -> None:
        """The base image is here, or can be pulled; else a one-line error with the fix."""
        if self.has_image(ref):
            return
        try:
            self.pull(ref)
        except EngineError as exc:
            raise EngineError(f"base image {ref} is not here and could not be pulled ({exc}); pull it,"
                              f" or pass --base-image with an image you have") from None


class _CliEngine(ContainerEngine):
    """Engines driven by a CLI (subprocess, no shell)."""

    cli: ClassVar[str]

    def __init__(self, cache_dir: Path | None = None) -> None:
        """cache_dir: where buildah keeps `RUN --mount=type=cache` caches (its TMPDIR); a fresh
        directory builds from empty caches."""
        self.cache_dir = cache_dir

    @classmethod
    def unavailable(cls) -> str | None:
        return None if shutil.which(cls.cli) else f"{cls.cli} is not installed ({cls.install_hint})"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        try:
            result = subprocess.run([self.cli, *args], capture_output=True, text=True, errors="replace")
        except FileNotFoundError:
            raise EngineError(f"{self.cli} is not installed ({self.install_hint})") from None
        if check and result.returncode != 0:
            message = (result.stderr.strip() or result.stdout.strip()).splitlines()
            raise EngineError(f"{self.cli} {args[0]} failed: {message[-1] if message else 'exit ' + str(result.returncode)}")
        return result

    def describe_build(self, plan: BuildPlan, temp_ref: str) -> str:
        return " ".join(_quote(part) for part in self.build_command(plan, temp_ref))

    @abstractmethod
    def build_command(self, plan: BuildPlan, temp_ref: str, iidfile: str = "IIDFILE") -> list[str]: ...

    def build(self, plan: BuildPlan, temp_ref: str, on_line: Lines) -> str:
        with tempfile.TemporaryDirectory() as tmp:
            iidfile = str(Path(tmp) / "iid")
            env = dict(os.environ, TMPDIR=str(self.cache_dir)) if self.cache_dir else None
            code, tail = stream(self.build_command(plan, temp_ref, iidfile), on_line, env)
            if code != 0:
                raise EngineError(f"{self.cli} build failed (exit {code}): {_last_error(tail)}")
            iid = Path(iidfile).read_text().strip() if Path(iidfile).exists() else temp_ref
        return iid

    def run(self, ref: str, command: list[str]) -> subprocess.CompletedProcess:
        return self._run("run", "--rm", ref, *command, check=False)


class Buildah(_CliEngine):
    name = cli = "buildah"
    store = "containers-storage, which buildah and podman share (container/run.sh runs it with podman)"
    multi_platform = True
    install_hint = "apt-get install buildah"

    def build_command(self, plan: BuildPlan, temp_ref: str, iidfile: str = "IIDFILE") -> list[str]:
        # Reproducible: --timestamp gives the image's created time and every file in its layers the
        # commit's time. The OCI format, because buildah 1.28 writes a random container id and hostname
        # into a Docker-format config (newer buildah blanks them under --timestamp); it has no
        # HEALTHCHECK and runs RUN with /bin/sh, whatever SHELL says.
        command = [self.cli, "build", "--isolation", "chroot", "--layers", "--format", "oci",
                   "--timestamp", str(plan.source_date_epoch), *_build_flags(plan)]
        if len(plan.platforms) > 1:
            command += ["--manifest", temp_ref]
        else:
            command += ["--iidfile", iidfile, "-t", temp_ref]
        return command + [str(plan.context)]

    def has_image(self, ref: str) -> bool:
        return self._run("inspect", "--type", "image", ref, check=False).returncode == 0 or \
            self._run("manifest", "inspect", ref, check=False).returncode == 0

    def pull(self, ref: str) -> None:
        self._run("pull", *self._tls(ref), ref)

    def tag(self, source: str, tags: Iterable[str]) -> None:
        self._run("tag", source, *tags)

    def push(self, ref: str) -> None:
        if self._run("manifest", "inspect", ref, check=False).returncode == 0:
            self._run("manifest", "push", "--all", *self._tls(ref), ref, f"docker://{ref}")
        else:
            self._run("push", *self._tls(ref), ref, f"docker://{ref}")

    def remove(self, ref: str) -> None:
        if self._run("manifest", "rm", ref, check=False).returncode != 0:
            self._run("rmi", ref, check=False)

    def inspect(self, ref: str) -> dict:
        data = json.loads(self._run("inspect", "--type", "image", ref).stdout)
        config = data.get("OCIv1", {})
        images = json.loads(self._run("images", "--json", data["FromImageID"]).stdout or "[]")
        return {"id": data["FromImageID"], "size": _bytes(images[0].get("size", "0")) if images else 0,
                "labels": config.get("config", {}).get("Labels") or {},
                "architecture": config.get("architecture", "")}

    def run(self, ref: str, command: list[str]) -> subprocess.CompletedProcess:
        container = self._run("from", "--pull-never", ref).stdout.strip()
        try:
            return self._run("run", "--isolation", "chroot", container, "--", *command, check=False)
        finally:
            self._run("rm", container, check=False)

    @staticmethod
    def _tls(ref: str) -> list[str]:
        return ["--tls-verify=false"] if _local_registry(ref) else []


class Podman(Buildah):
    """Podman builds with buildah's code and shares its image storage."""

    name = cli = "podman"
    store = "containers-storage, which buildah and podman share (container/run.sh runs it with podman)"
    install_hint = "apt-get install podman"

    def build_command(self, plan: BuildPlan, temp_ref: str, iidfile: str = "IIDFILE") -> list[str]:
        command = super().build_command(plan, temp_ref, iidfile)
        command[0] = self.cli
        return command

    def has_image(self, ref: str) -> bool:
        return self._run("image", "exists", ref, check=False).returncode == 0 or \
            self._run("manifest", "exists", ref, check=False).returncode == 0

    def inspect(self, ref: str) -> dict:
        data = json.loads(self._run("image", "inspect", ref).stdout)[0]
        return {"id": data["Id"], "size": data.get("Size", 0), "labels": data.get("Labels") or {},
                "architecture": data.get("Architecture", "")}

    def run(self, ref: str, command: list[str]) -> subprocess.CompletedProcess:
        return _CliEngine.run(self, ref, command)


class DockerBuildx(_CliEngine):
    name = "docker-buildx"
    store = "the Docker daemon's image store"
    cli = "docker"
    multi_platform = True
    install_hint = "install the docker-buildx plugin"

    @classmethod
    def unavailable(cls) -> str | None:
        if not shutil.which("docker"):
            return "docker is not installed"
        if subprocess.run(["docker", "buildx", "version"], capture_output=True).returncode != 0:
            return "docker has no buildx plugin (install docker-buildx)"
        if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
            return "the Docker daemon is not running (start dockerd)"
        return None

    def build_command(self, plan: BuildPlan, temp_ref: str, iidfile: str = "IIDFILE") -> list[str]:
        command = ["docker", "buildx", "build", "--progress", "plain", "--iidfile", iidfile, *_build_flags(plan)]
        if len(plan.platforms) > 1:
            if not plan.push:
                raise EngineError("docker buildx cannot load a multi-platform image into the classic image store;"
                                  " add --push, or build with --engine buildah")
            # Multi-platform images go straight to the registry under the final tags, after success only.
            return command + [arg for tag in plan.tags for arg in ("-t", tag)] + [
                "--output", "type=image,push=true,rewrite-timestamp=true", str(plan.context)]
        # BuildKit takes the SOURCE_DATE_EPOCH build arg for the image's times; rewrite-timestamp
        # clamps the files in the layers to it too.
        return command + ["--output", "type=docker,rewrite-timestamp=true", "-t", temp_ref, str(plan.context)]

    def has_image(self, ref: str) -> bool:
        return self._run("image", "inspect", ref, check=False).returncode == 0

    def pull(self, ref: str) -> None:
        self._run("pull", ref)

    def tag(self, source: str, tags: Iterable[str]) -> None:
        for tag in tags:
            self._run("tag", source, tag)

    def push(self, ref: str) -> None:
        self._run("push", ref)

    def remove(self, ref: str) -> None:
        self._run("rmi", ref, check=False)

    def inspect(self, ref: str) -> dict:
        data = json.loads(self._run("image", "inspect", ref).stdout)[0]
        return {"id": data["Id"], "size": data.get("Size", 0), "labels": data["Config"].get("Labels") or {},
                "architecture": data.get("Architecture", "")}


class DockerClassic(ContainerEngine):
    """Docker's classic builder through the Docker SDK (no BuildKit: one platform, no --mount)."""

    name = "docker"
    store = "the Docker daemon's image store"
    install_hint = "apt-get install docker.io, then start dockerd"

    def __init__(self) -> None:
        import docker  # the SDK is needed only for this engine

        self._docker = docker
        try:
            self.client = docker.from_env()
            self.client.ping()
        except docker.errors.DockerException as exc:
            raise EngineError(f"cannot reach the Docker daemon ({_first_line(exc)}); start dockerd") from None

    @classmethod
    def unavailable(cls) -> str | None:
        try:
            import docker
        except ImportError:
            return "the Docker SDK for Python is not installed (pip install docker)"
        try:
            docker.from_env().ping()
        except docker.errors.DockerException:
            return "the Docker daemon is not running (start dockerd)"
        return None

    def describe_build(self, plan: BuildPlan, temp_ref: str) -> str:
        from dynamo.build.classic import context_files

        args = ", ".join(f"{k}={v!r}" for k, v in plan.build_args.items())
        return (f"docker.APIClient.build(fileobj=<tar of {len(context_files(plan))} files, Dockerfile without"
                f" RUN --mount>, custom_context=True, tag={temp_ref!r}, target={plan.stage!r},"
                f" platform={plan.platforms[0]!r}, nocache={plan.no_cache}, cache_from={list(plan.cache_from)},"
                f" buildargs={{{args}}})")

    def build(self, plan: BuildPlan, temp_ref: str, on_line: Lines) -> str:
        from dynamo.build.classic import context_tar

        if len(plan.platforms) > 1:
            raise EngineError("Docker's classic builder builds one platform at a time; use --engine buildah"
                              " (apt-get install buildah) or install docker buildx for multi-arch images")
        if plan.cache_to:
            raise EngineError("Docker's classic builder cannot export a cache (--cache-to); use buildah or buildx")
        image_id, errors = "", []
        try:
            with context_tar(plan) as tar:
                for chunk in self.client.api.build(
                        fileobj=tar, custom_context=True, tag=temp_ref, target=plan.stage,
                        platform=plan.platforms[0], buildargs=plan.build_args, nocache=plan.no_cache,
                        cache_from=list(plan.cache_from), rm=True, forcerm=True, decode=True):
                    for line in chunk.get("stream", "").splitlines():
                        on_line(line)
                    if "error" in chunk:
                        errors.append(chunk["error"].strip())
                    image_id = chunk.get("aux", {}).get("ID", image_id)
        except self._docker.errors.APIError as exc:
            raise EngineError(f"docker build failed: {_first_line(exc)}") from None
        if errors or not image_id:
            raise EngineError(f"docker build failed: {errors[-1] if errors else 'no image was produced'}")
        return image_id

    def has_image(self, ref: str) -> bool:
        try:
            self.client.images.get(ref)
            return True
        except self._docker.errors.ImageNotFound:
            return False

    def pull(self, ref: str) -> None:
        try:
            self.client.images.pull(ref)
        except self._docker.errors.DockerException as exc:
            raise EngineError(_first_line(exc)) from None

    def tag(self, source: str, tags: Iterable[str]) -> None:
        image = self.client.images.get(source)
        for tag in tags:
            repository, _, name = tag.rpartition(":") if ":" in tag.rsplit("/", 1)[-1] else (tag, "", "latest")
            image.tag(repository, name)

    def push(self, ref: str) -> None:
        for status in self.client.images.push(ref, stream=True, decode=True):
            if "error" in status:
                raise EngineError(f"docker push {ref} failed: {status['error']}")

    def remove(self, ref: str) -> None:
        try:
            self.client.images.remove(ref, noprune=False)
        except self._docker.errors.DockerException:
            pass

    def inspect(self, ref: str) -> dict:
        data = self.client.api.inspect_image(ref)
        return {"id": data["Id"], "size": data.get("Size", 0), "labels": data["Config"].get("Labels") or {},
                "architecture": data.get("Architecture", "")}

    def run(self, ref: str, command: list[str]) -> subprocess.CompletedProcess:
        container = self.client.containers.create(ref, command)
        try:
            container.start()
            code = container.wait().get("StatusCode", 1)
            out = container.logs(stdout=True, stderr=False).decode(errors="replace")
            err = container.logs(stdout=False, stderr=True).decode(errors="replace")
        finally:
            container.remove(force=True)
        return subprocess.CompletedProcess(command, code, out, err)


# Detection order of the issue: buildx, then buildah or podman, then the classic builder.
ENGINES: dict[str, type[ContainerEngine]] = {
    "docker-buildx": DockerBuildx, "buildah": Buildah, "podman": Podman, "docker": DockerClassic}
CHOICES = ("docker", "buildah", "podman")


def get_engine(choice: str | None = None) -> ContainerEngine:
    """The engine asked for (docker means buildx when present, else the classic builder), or the
    first one available here."""
    if choice is not None and choice not in CHOICES:
        raise EngineError(f"unknown engine {choice!r}; choose {', '.join(CHOICES)}")
    candidates = list(ENGINES.values()) if choice is None else (
        [DockerBuildx, DockerClassic] if choice == "docker" else [ENGINES[choice]])
    reasons = []
    for engine in candidates:
        reason = engine.unavailable()
        if reason is None:
            return engine()
        reasons.append(reason)
    raise EngineError("no container engine can build here: " + "; ".join(dict.fromkeys(reasons))
                      + ". Install Docker (apt-get install docker.io, then start dockerd) or buildah")


def engine_with_image(ref: str, choice: str | None = None) -> ContainerEngine:
    """The engine (the one asked for, or any available here) whose image store holds `ref`."""
    candidates = [get_engine(choice)] if choice else [
        engine() for engine in ENGINES.values() if engine.unavailable() is None]
    for engine in candidates:
        if engine.has_image(ref):
            return engine
    if not candidates:
        get_engine(None)  # raises: no engine at all, with the fix
    names = ", ".join(engine.name for engine in candidates)
    raise EngineError(f"image {ref} is not in the image store of {names}; build it (python build.py ...) or pull it")


def _build_flags(plan: BuildPlan) -> list[str]:
    """The flags buildah, podman and buildx share, from the plan."""
    flags = ["-f", str(plan.dockerfile), "--target", plan.stage, "--platform", ",".join(plan.platforms)]
    for key, value in plan.build_args.items():
        flags += ["--build-arg", f"{key}={value}"]
    if plan.ca_cert:
        flags += ["--secret", f"id=ca_cert,src={plan.ca_cert}"]
    if plan.no_cache:
        flags.append("--no-cache")
    flags += [arg for ref in plan.cache_from for arg in ("--cache-from", ref)]
    flags += [arg for ref in plan.cache_to for arg in ("--cache-to", ref)]
    return flags


def _bytes(human: str) -> int:
    """buildah's "297 MB" (decimal units) as bytes."""
    number, _, unit = str(human).partition(" ")
    scale = {"B": 1, "kB": 10**3, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}.get(unit.strip() or "B", 1)
    try:
        return int(float(number) * scale)
    except ValueError:
        return 0


def _quote(part: str) -> str:
    import shlex
    return shlex.quote(part)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _last_error(tail: list[str]) -> str:
    """The root cause: the earliest error line of the output's tail (engines wrap it in later ones)."""
    for line in tail:
        if _STEP_LINE.match(line):
            continue  # the step's own command text may contain the word
        if line.strip().lower().startswith(("error", "e: ")) or "error:" in line.lower():
            return line.strip()
    return tail[-1].strip() if tail else "no output"
