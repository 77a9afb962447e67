"""`container/run.sh`: run a Dynamo image the way the field expects (GPU, shm, ulimits, IPC, network),
after checking this host against the image's labels.

The image is run by the engine whose image store holds it: Docker, or podman (which shares its
store with buildah, so an image that `build.py` built with buildah runs without a copy). Before
starting anything it settles what the daemon would refuse with a raw error: GPU flags only for an
image that needs a GPU, and ulimits no higher than the engine can grant.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dynamo import nvidia_require as requirement
from dynamo.containers import RUNNERS, ContainerEngineError, ImageInfo
from dynamo.images import LABEL_PREFIX
from dynamo.matrix import InvalidCombination, MatrixInvalid, load
from dynamo.matrix.query import check_framework, find_release

if TYPE_CHECKING:
    from dynamo.doctor.facts import HostFacts
    from dynamo.doctor.judge import Finding

REPO = Path(__file__).resolve().parents[1]
ENGINES = tuple(RUNNERS)  # docker, podman
DEFAULT_ULIMITS = {"memlock": "-1", "nofile": "65536:65536", "stack": "67108864"}
# /proc/PID/limits rows of each ulimit we set.
LIMIT_ROWS = {"memlock": "Max locked memory", "nofile": "Max open files", "stack": "Max stack size",
              "nproc": "Max processes"}
CAP_SYS_RESOURCE = 24  # a process with it may raise hard limits (capabilities(7))
UNLIMITED = -1
# dynamo:<release>-<framework>-<device> and dynamo:latest-<framework>, as dynamo.images.tags makes them
OUR_TAG = re.compile(r"(?:^|/)dynamo:(?:(?P<release>\d[^-]*)-(?P<framework>[a-z_]+)-(?P<device>cpu|cuda[\d.]+)"
                     r"|latest-(?P<latest>[a-z_]+))$")
USAGE = """\
usage: container/run.sh [options] [-- COMMAND...]

Run a Dynamo image with the GPU, shm, ulimit, IPC and network flags it needs, after checking this
host against the image's labels (driver floor, compute capabilities) instead of the NVIDIA container
toolkit's "unsatisfied condition: cuda>=12.9".

  --image IMAGE         default: dynamo:latest-<framework>, else the framework's newest release built here
  --framework NAME      default: vllm (only picks the default image)
  --engine docker|podman  default: the one whose image store holds the image (Docker first)
  --gpus auto|all|none|SPEC  default: auto: all GPUs for a CUDA image, none for a CPU image
  --shm-size SIZE       default: 10G
  --ulimit NAME=VALUE   replaces that default (memlock=-1, nofile=65536:65536, stack=67108864); repeatable.
                        A default the engine cannot grant is lowered to its hard limit, with a warning.
  --network NAME        default: host; -p mappings switch it to the default bridge
  -p HOST:CONTAINER     publish a port (repeatable)
  -v SRC:DST, -e NAME[=VALUE]   repeatable
  -it                   interactive terminal
  --mount-workspace     this repository at /workspace, HF_TOKEN passed, a persistent Hugging Face cache
  --hf-cache DIR        the Hugging Face cache to mount (default: ${HF_HOME:-~/.cache/huggingface})
  --name NAME, --entrypoint CMD, --user USER, --workdir DIR
  --skip-preflight      do not check this host against the image's labels
  --dry-run             print the exact command and run nothing (writes nothing either)
"""


class UsageError(Exception):
    """Bad flags: exit 2."""


class RunError(Exception):
    """The image cannot be run here as asked: exit 1, nothing started."""


@dataclass
class Options:
    image: str = ""
    framework: str = "vllm"
    engine: str | None = None
    gpus: str = "auto"
    shm_size: str = "10G"
    ulimits: dict[str, str] = field(default_factory=dict)  # the user's own --ulimit values
    network: str = "host"
    ports: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    envs: list[str] = field(default_factory=list)
    interactive: bool = False
    workspace: bool = False
    hf_cache: str = os.environ.get("HF_HOME") or str(Path.home() / ".cache" / "huggingface")
    name: str = ""
    entrypoint: str = ""
    user: str = ""
    workdir: str = ""
    preflight: bool = True
    dry_run: bool = False
    command: list[str] = field(default_factory=list)


_VALUED = {"--image": "image", "--framework": "framework", "--engine": "engine", "--gpus": "gpus",
           "--shm-size": "shm_size", "--network": "network", "--hf-cache": "hf_cache", "--name": "name",
           "--entrypoint": "entrypoint", "--user": "user", "--workdir": "workdir"}
_REPEATED = {"-p": "ports", "--publish": "ports", "-v": "volumes", "--volume": "volumes", "-e": "envs", "--env": "envs"}
_FLAGS = {"-it": "interactive", "-ti": "interactive", "--mount-workspace": "workspace", "--dry-run": "dry_run"}


def parse(argv: list[str]) -> Options:
    """run.sh's flags, docker-style (`-it`, repeatable `-p`), the container's command after `--`."""
    options = Options()
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--":
            options.command = args
            break
        if arg in _FLAGS:
            setattr(options, _FLAGS[arg], True)
        elif arg == "--skip-preflight":
            options.preflight = False
        elif arg in _VALUED or arg in _REPEATED or arg == "--ulimit":
            if not args or not args[0]:
                raise UsageError(f"{arg} needs a value")
            value = args.pop(0)
            if arg == "--ulimit":
                name, sep, limit = value.partition("=")
                if not sep or not name or not limit:
                    raise UsageError(f"--ulimit expects NAME=VALUE, got '{value}'")
                if not re.fullmatch(r"-?\d+(:-?\d+)?", limit):
                    raise UsageError(f"--ulimit {value}: the value is a number, -1 (unlimited) or SOFT:HARD")
                options.ulimits[name] = limit
            elif arg in _REPEATED:
                getattr(options, _REPEATED[arg]).append(value)
            else:
                setattr(options, _VALUED[arg], value)
        else:
            raise UsageError(f"unknown option '{arg}' (see --help); put the container's command after --")
    if options.engine not in (None, *ENGINES):
        raise UsageError(f"--engine must be one of {', '.join(ENGINES)}, got '{options.engine}'")
    check_values(options)
    return options


# What the engine accepts, in docker's own forms: a value outside them would reach `docker run` raw.
# -p [IP:][HOST_PORT[-END]:]CONTAINER_PORT[-END][/PROTOCOL] (docker run --publish)
PORT_MAPPING = re.compile(r"(?:(?:\[[0-9a-fA-F:.]+\]|[0-9.]+):)?(?:(?P<host>\d{1,5}(?:-\d{1,5})?)?:)?"
                          r"(?P<container>\d{1,5}(?:-\d{1,5})?)(?:/(?:tcp|udp|sctp))?")
# --gpus auto, none, all, a count, or docker's KEY=VALUE list ("device=0,1", "count=2,capabilities=utility")
GPU_SPEC = re.compile(r"auto|none|all|\d{1,3}|\"?(?:count|device|driver|capabilities)=[\w.:-]+"
                      r"(?:,(?:(?:count|device|driver|capabilities)=)?[\w.:-]+)*\"?", re.ASCII)
# --shm-size: a size above 0 as docker reads it (go-units RAMInBytes): 10G, 512m, 1.5GiB, 67108864
SHM_SIZE = re.compile(r"(?P<number>\d+(?:\.\d+)?) ?[kKmMgGtTpP]?[iI]?[bB]?", re.ASCII)


def check_values(options: Options) -> None:
    """One UsageError naming the first value the engine would refuse with its own error, or take as
    something else."""
    from dynamo.matrix import checks

    if options.image and checks.any_image_ref(options.image) is not None:
        raise UsageError(f"--image {options.image!r} is not an image reference: {checks.any_image_ref(options.image)}")
    for port in options.ports:
        match = PORT_MAPPING.fullmatch(port)
        numbers = re.findall(r"\d+", f"{match['host'] or ''} {match['container']}") if match else []
        if not match or not all(1 <= int(n) <= 65535 for n in numbers):
            raise UsageError(f"-p {port!r}: expected [IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp], ports 1 to 65535,"
                             " e.g. -p 8000:8000")
    if not GPU_SPEC.fullmatch(options.gpus):
        raise UsageError(f"--gpus {options.gpus!r}: expected auto, all, none, a count or device=ID[,ID...]")
    size = SHM_SIZE.fullmatch(options.shm_size)
    if not size or float(size["number"]) <= 0:
        raise UsageError(f"--shm-size {options.shm_size!r}: expected a size above 0 such as 10G or 512m")


# ---------------------------------------------------------------- where the image is

def image_info(engine: str, image: str) -> ImageInfo | None:
    """The image's labels and environment (what the NVIDIA container toolkit reads its requirements
    from) in that engine's store; None when it is not there."""
    runner = RUNNERS[engine]
    if runner.unavailable() is not None:
        return None
    try:
        return runner().inspect(image)
    except ContainerEngineError:
        return None


# the names our images have in each store: "dynamo" as build.py tags it; podman and buildah say localhost/dynamo
OUR_REPOSITORIES = ("dynamo", "localhost/dynamo", "docker.io/library/dynamo")


def newest_local(framework: str, engine: str | None) -> tuple[str, str] | None:
    """(engine, image) of the newest release of `framework` in the stores (`dynamo:<release>-<framework>-<device>`,
    the newest CUDA first among a release's), for when no dynamo:latest-<framework> is there; None when none is."""
    from packaging.version import InvalidVersion, Version

    found = []
    for candidate in (engine,) if engine else ENGINES:
        if RUNNERS[candidate].unavailable() is not None:
            continue
        try:
            refs = RUNNERS[candidate]().tags("dynamo")
        except ContainerEngineError:  # a daemon that is not running has no images to offer
            continue
        for ref in refs:
            match = OUR_TAG.search(ref)
            if not match or match["framework"] != framework or ref.rpartition(":")[0] not in OUR_REPOSITORIES:
                continue
            try:
                device = Version(match["device"].removeprefix("cuda")) if match["device"] != "cpu" else Version("0")
                found.append((Version(match["release"]), device, -ENGINES.index(candidate), candidate, ref))
            except InvalidVersion:  # a tag in our scheme's shape that no build.py wrote: not ours to pick
                continue
    return max(found)[3:] if found else None


def locate(image: str, engine: str | None) -> tuple[str, ImageInfo | None]:
    """(engine, image): the first engine whose store holds the image; the image None when none does."""
    for candidate in (engine,) if engine else ENGINES:
        info = image_info(candidate, image)
        if info is not None:
            return candidate, info
    return engine or ENGINES[0], None


def container_env(options: Options, image_env: dict[str, str]) -> dict[str, str]:
    """The container's environment as the engine makes it: the image's, then each -e (a bare NAME
    takes this shell's value, and is left out when this shell has none)."""
    env = dict(image_env)
    for entry in options.envs:
        name, sep, value = entry.partition("=")
        if sep:
            env[name] = value
        elif name in os.environ:
            env[name] = os.environ[name]
    return env


def build_hint(options: Options) -> str:
    """The build.py command that makes this image, read from our tag scheme."""
    match = OUR_TAG.search(options.image)
    if match and match["latest"]:
        return f"python build.py --framework {match['latest']}"
    if match:
        device = "cpu" if match["device"] == "cpu" else match["device"].removeprefix("cuda")
        return f"python build.py --framework {match['framework']} --release {match['release']} --cuda {device}"
    return f"python build.py --framework {options.framework} --tag {options.image}"


# ---------------------------------------------------------------- what the engine can grant

def _limit_value(text: str) -> int:
    return UNLIMITED if text in ("unlimited", "-1") else int(text)


def process_limits(pid: int | str) -> tuple[dict[str, int], bool] | None:
    """(hard limit per ulimit name, may raise them) of a process, from /proc; None when unreadable."""
    try:
        limits = Path(f"/proc/{pid}/limits").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    hard = {}
    for name, row in LIMIT_ROWS.items():
        line = next((line for line in limits.splitlines() if line.startswith(row)), None)
        if line:
            hard[name] = _limit_value(line[len(row):].split()[1])
    caps = next((line.split()[1] for line in status.splitlines() if line.startswith("CapEff:")), "0")
    return hard, bool(int(caps, 16) >> CAP_SYS_RESOURCE & 1)


def engine_limits(engine: str) -> tuple[dict[str, int], bool, str] | None:
    """(hard limits, may raise them, whose) of the process that sets the container's limits: the
    Docker daemon (when it runs on this machine), or a daemonless engine (podman), which runs as this
    process's user."""
    if RUNNERS[engine].daemonless:
        found = process_limits("self")
        if not found:
            return None
        hard, may_raise = found
        # podman lowers its own nproc to the kernel's pid_max at start when it cannot raise it
        pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
        hard["nproc"] = pid_max if hard.get("nproc", UNLIMITED) == UNLIMITED else min(hard["nproc"], pid_max)
        return hard, may_raise, f"{engine}'s"
    found = next((process_limits(pid) for pid in _pids("dockerd")), None)
    return (*found, "the Docker daemon's") if found else None


def _pids(name: str) -> list[str]:
    """Process ids of the processes with this command name (pgrep -x, without procps)."""
    found = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == name:
                found.append(comm.parent.name)
        except OSError:
            continue
    return found


def _requested(value: str) -> int:
    """The hard limit a docker-style ulimit value asks for (SOFT[:HARD]; -1 is unlimited)."""
    return _limit_value(value.split(":")[-1])


def settle_ulimits(options: Options, engine: str, warn: Callable[[str], None]) -> dict[str, str]:
    """The ulimits to pass: defaults above what the engine can grant are lowered to its hard limit
    (with a warning); a value the user asked for that it cannot grant is refused with the one to pass."""
    implicit = dict(RUNNERS[engine].implicit_ulimits)
    wanted = implicit | DEFAULT_ULIMITS | options.ulimits
    limits = engine_limits(engine)
    if limits is None or limits[1]:
        return {name: value for name, value in wanted.items() if name not in implicit or name in options.ulimits}
    hard, _, whose = limits
    settled = {}
    for name, value in wanted.items():
        ceiling, asked = hard.get(name), _requested(value)
        if ceiling is None or ceiling == UNLIMITED or (asked != UNLIMITED and asked <= ceiling):
            settled[name] = value
            continue
        fits = f"{ceiling}:{ceiling}" if ":" in value else str(ceiling)
        if name in options.ulimits:
            raise RunError(f"--ulimit {name}={value} is above {whose} hard limit ({ceiling}); pass --ulimit {name}={fits}"
                           f" or raise the engine's limit")
        if name not in implicit:
            warn(f"{name} lowered from {value} to {fits}, {whose} hard limit (pass --ulimit {name}=VALUE to choose)")
        settled[name] = fits
    return settled


# ---------------------------------------------------------------- the command

def wants_gpus(options: Options, labels: dict[str, str] | None) -> bool:
    """`--gpus auto`: GPUs for an image whose labels (or, unbuilt, whose tag) say CUDA."""
    if options.gpus != "auto":
        return options.gpus != "none"
    if labels and labels.get(LABEL_PREFIX + "release"):
        return bool(labels.get(LABEL_PREFIX + "cuda.version"))
    match = OUR_TAG.search(options.image)
    if match and match["device"]:
        return match["device"] != "cpu"
    framework = match["latest"] if match and match["latest"] else options.framework
    return framework not in ("frontend",)


def command(options: Options, engine: str, gpus: bool, ulimits: dict[str, str]) -> list[str]:
    args = [engine, "run", "--rm"]
    if options.interactive:
        args.append("-it")
    if gpus:
        spec = "all" if options.gpus == "auto" else options.gpus
        args += ["--device", f"nvidia.com/gpu={spec}"] if RUNNERS[engine].cdi_gpus else ["--gpus", spec]
    if RUNNERS[engine].shm_size_beside_host_ipc:
        args.append(f"--shm-size={options.shm_size}")
    for name in sorted(ulimits):
        args += ["--ulimit", f"{name}={ulimits[name]}"]
    args += ["--ipc", "host"]
    if options.ports:
        for port in options.ports:
            args += ["-p", port]
    else:
        args += ["--network", options.network]
    if options.workspace:
        args += ["-v", f"{REPO}:/workspace", "-w", "/workspace", "-e", "HF_TOKEN",
                 "-v", f"{options.hf_cache}:/home/dynamo/.cache/huggingface"]
    for volume in options.volumes:
        args += ["-v", volume]
    for env in options.envs:
        args += ["-e", env]
    for flag, value in (("--name", options.name), ("--entrypoint", options.entrypoint), ("--user", options.user),
                        ("-w", options.workdir)):
        if value:
            args += [flag, value]
    return [*args, options.image, *options.command]


def preflight(options: Options, image: ImageInfo, gpus: bool, engine: str, facts: HostFacts | None = None) -> list[str]:
    """Check this host (or recorded `facts`) against the image's labels with the doctor's host checks,
    and the NVIDIA toolkit's requirements as the container's environment will hold them (docker --gpus;
    podman gets the GPUs through CDI, where the toolkit checks none); the caveat warnings to show.
    Raises RunError when the host cannot run the image."""
    labels = image.labels
    release, framework = labels.get(LABEL_PREFIX + "release"), labels.get(LABEL_PREFIX + "framework")
    if not release or not framework:
        return [f"{options.image} has no {LABEL_PREFIX.rstrip('.')} labels (not built by build.py); the host was not checked"]
    image_cuda = labels.get(LABEL_PREFIX + "cuda.version", "")
    if image_cuda and not gpus:
        raise RunError(f"{options.image} is a CUDA {image_cuda} image and needs GPUs; drop --gpus none"
                       " (or pass --skip-preflight)")
    cdi = bool(image_cuda) and RUNNERS[engine].cdi_gpus  # command(): --device nvidia.com/gpu=..., that is CDI
    # what the toolkit will read from the container's environment; ("",) for nothing
    needs = tuple(requirement.from_env(container_env(options, image.env)) or ("",)) if image_cuda and not cdi else None
    try:
        findings = _host_findings(release, framework, image_cuda or "cpu", needs, cdi, facts)
    except (InvalidCombination, MatrixInvalid) as exc:  # labels this matrix does not know, or a broken matrix
        return [f"the host check could not run ({(str(exc).splitlines() or [type(exc).__name__])[0]}); continuing"]
    return _verdict(options, findings)


def _verdict(options: Options, findings: list[Finding]) -> list[str]:
    """RunError listing the failed checks with their fixes; else the warnings to show."""
    from dynamo.doctor.cli import finding_lines
    from dynamo.doctor.judge import FAIL, WARN

    width = max((len(finding.check) for finding in findings), default=0)
    failed = [line for finding in findings if finding.status == FAIL for line in finding_lines(finding, width)]
    if failed:
        raise RunError("\n".join([f"this host cannot run {options.image}:", *failed,
                                  "nothing was started; fix the above, or pass --skip-preflight to try anyway"]))
    # what starts but with a limit (forward or minor-version compatibility, an unknown GPU) and the
    # matrix's caveats about how to start the container here, with their fixes
    return [line for finding in findings if finding.status == WARN and finding.check in SHOWN_WARNINGS
            for line in finding_lines(finding, width)]


SHOWN_WARNINGS = ("caveat", "toolkit", "driver", "gpu")  # the doctor's warnings about starting a container here


def _host_findings(release: str, framework: str, device: str, requirements: tuple[str, ...] | None, cdi: bool,
                   facts: HostFacts | None) -> list[Finding]:
    """What the doctor finds of this host (scope host) for the image's release, framework and device (the
    doctor loads only when a preflight runs)."""
    from dynamo.doctor.facts import interpret, record
    from dynamo.doctor.judge import Subject, judge

    matrix = load()
    check_framework(matrix, framework)
    subject = Subject(find_release(matrix, release), framework, device.lower().removeprefix("cuda"), requirements,
                      cdi=cdi)
    return judge(matrix, facts or interpret(record(), "this host"), subject, "host")


def find_image(options: Options, warn: Callable[[str], None]) -> tuple[str, ImageInfo | None]:
    """(engine, image) for --image, by default dynamo:latest-<framework>; where no store holds that, the
    framework's newest image there is, said in a warning. Sets options.image to the image chosen."""
    if options.image:
        return locate(options.image, options.engine)
    options.image = f"dynamo:latest-{options.framework}"
    engine, image = locate(options.image, options.engine)
    if image is None and (newest := newest_local(options.framework, options.engine)) is not None:
        engine, options.image = newest
        warn(f"no dynamo:latest-{options.framework} here; running {options.image}, the newest {options.framework}"
             f" image in {engine}'s image store (--image picks another)")
        image = image_info(engine, options.image)
    return engine, image


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(arg in ("-h", "--help") for arg in argv[:argv.index("--") if "--" in argv else len(argv)]):
        print(USAGE, end="")
        return 0

    def warn(message: str) -> None:
        print(f"run.sh: warning: {message}", file=sys.stderr)

    try:
        options = parse(argv)
        engine, image = find_image(options, warn)
        gpus = wants_gpus(options, image.labels if image else None)
        if options.dry_run:
            print(shlex.join(command(options, engine, gpus, settle_ulimits(options, engine, warn))))
            return 0
        if (missing := RUNNERS[engine].unavailable()) is not None:
            raise RunError(missing)
        if image is None:
            where = f"not in {engine}'s image store" if options.engine else "in neither Docker's nor podman's image store"
            raise RunError(f"image {options.image} is {where}; build it: {build_hint(options)}")
        if options.preflight:
            for line in preflight(options, image, gpus, engine):
                warn(line)
        args = command(options, engine, gpus, settle_ulimits(options, engine, warn))
        if options.workspace:
            Path(options.hf_cache).mkdir(parents=True, exist_ok=True)
    except UsageError as exc:
        print(f"run.sh: error: {exc}", file=sys.stderr)
        return 2
    except RunError as exc:
        first, *rest = str(exc).splitlines()
        print(f"run.sh: error: {first}" if not rest else f"run.sh: {first}", file=sys.stderr)
        for line in rest[:-1]:
            print(line, file=sys.stderr)
        if rest:
            print(f"run.sh: {rest[-1]}", file=sys.stderr)
        return 1
    sys.stdout.flush()
    os.execvp(args[0], args)


if __name__ == "__main__":
    sys.exit(main())
