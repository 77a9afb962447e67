"""Judge host facts against the matrix: one finding per check, with the fix under each problem."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from packaging.version import InvalidVersion, Version

from dynamo import nvidia_require as requirement
from dynamo.doctor.facts import Gpu, HostFacts, cuda_suffix_mismatches, gpu_field
from dynamo.frozen import Frozen
from dynamo.matrix import InvalidCombination, Matrix, Target, targets
from dynamo.matrix.query import arch_name, matching_caveats, normalize_arch

OK, WARN, FAIL = "ok", "warn", "fail"
MARKS = {OK: "✓", WARN: "!", FAIL: "✗"}
GIB = 2**30


class Finding(Frozen):
    status: str
    check: str
    message: str
    fix: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Subject(Frozen):
    """What the host is judged for: a release, and optionally a framework and device (CUDA or cpu)."""

    release: str
    framework: str | None = None
    device: str | None = None  # "12.9" or "cpu"
    # What the toolkit reads from a built image's environment (requirement.from_env), ANDed;
    # None: the image this matrix renders for the target.
    requirements: tuple[str, ...] | None = None
    # The container gets its GPUs through CDI (podman; docker --device nvidia.com/gpu=...), where the
    # toolkit checks no NVIDIA_REQUIRE_*: https://github.com/NVIDIA/nvidia-container-toolkit/issues/1470
    cdi: bool = False


def _version(text: str | None) -> Version | None:
    try:
        return Version(text) if text else None
    except InvalidVersion:
        return None


# The words NVIDIA appends to a model's name: memory ("80GB", "16 GB"), form factor, memory kind.
_SUFFIX_WORD = re.compile(r"(?i)\d+GB|PCIe|SXM\d*|HBM\d\w*|NVL")
TRUNCATED = "..."  # how nvidia-smi's table ends a name too long for its column


def model_name(gpu_name: str) -> str:
    """The name NVIDIA's list gives a GPU: "NVIDIA H100 80GB HBM3" -> "h100", "Tesla V100-SXM2-16GB" ->
    "tesla v100" (case-folded; the matrix's [gpu] keys are compared the same way). Word by word from
    the end, in time linear in the name."""
    name = re.sub(r"^NVIDIA\s+", "", gpu_name.strip(), flags=re.IGNORECASE)
    words = [(m.group(), m.end()) for m in re.finditer(r"[^\s-]+", name)]
    end = len(words)  # the first word is the model's, never a suffix
    while end > 1:
        last, before = words[end - 1][0], words[end - 2][0]
        if _SUFFIX_WORD.fullmatch(last):
            end -= 1
        elif end > 2 and ((last.upper() == "GB" and before.isdigit())
                          or (last.lower(), before.lower()) == ("gpu", "laptop")):
            end -= 2
        else:
            break
    return name[:words[end - 1][1]].casefold() if words else ""


class Identity(Frozen):
    compute_capability: str | None
    brand: str | None


def identify(matrix: Matrix, gpu: Gpu) -> Identity:
    """Brand and compute capability from the source (NVML, nvidia-smi), else the matrix's GPU table."""
    known = known_gpu(matrix, gpu.name)
    return Identity(gpu.compute_capability or known.compute_capability, gpu.brand or known.brand)


def known_gpu(matrix: Matrix, gpu_name: str) -> Identity:
    """What the matrix's GPU table says of a name: matched exactly; a name nvidia-smi's table cut short
    ("Tesla V100-SXM2...") by its prefix, when every GPU it may be agrees (every V100 is 7.0)."""
    rows = tuple((cc, brand, name) for cc, brands in matrix.gpu.items() for brand, names in brands.items()
                 for name in names)
    return _known(rows, gpu_name)


@functools.lru_cache(maxsize=4096)
def _known(rows: tuple[tuple[str, str, str], ...], gpu_name: str) -> Identity:
    table = [(model_name(name), cc, brand) for cc, brand, name in rows]
    model = model_name(gpu_name)
    found = {(cc, brand) for name, cc, brand in table if name == model}
    if not found and gpu_name.endswith(TRUNCATED):
        prefix = re.sub(r"^NVIDIA\s+", "", gpu_name.removesuffix(TRUNCATED).strip(), flags=re.IGNORECASE).casefold()
        found = {(cc, brand) for name, cc, brand in table
                 if name.startswith(prefix) or (prefix.startswith(name) and prefix[len(name)] in " -")}
    ccs, brands = {cc for cc, _ in found}, {brand for _, brand in found}
    return Identity(ccs.pop() if len(ccs) == 1 else None, brands.pop() if len(brands) == 1 else None)


def contradictions(matrix: Matrix, facts: HostFacts, source: str) -> list[str]:
    """A recorded compute capability that NVIDIA's list contradicts for the GPU's name (an H100 at 12.0):
    a recording no real host printed."""
    problems = []
    for index, gpu in enumerate(facts.gpus):
        known = known_gpu(matrix, gpu.name).compute_capability
        if gpu.compute_capability and known and gpu.compute_capability != known:
            problems.append(f"{source}/{facts.gpu_file}: {gpu_field(facts.gpu_file or '', index, 'compute_capability')}:"
                            f" {gpu.compute_capability}, but every {gpu.name} is {known} (NVIDIA's list, the matrix's"
                            f" [gpu] table)")
    return problems


def covered(cc: str, archs: tuple[str, ...]) -> bool:
    """A cubin runs on the same major with an equal or higher minor, never across majors."""
    major, minor = (int(x) for x in cc.split("."))
    return any(int(a.split(".")[0]) == major and int(a.split(".")[1]) <= minor for a in archs)




def judge(matrix: Matrix, facts: HostFacts, subject: Subject, scope: str = "all") -> list[Finding]:
    inside = scope == "all"  # the Python, packages and limits of this environment
    findings = [*_platform(matrix, facts, subject)[:1 if not inside else None]]
    if inside:
        findings += _python(matrix, facts, subject)
    else:
        findings += _run_flag_caveats(matrix, facts, subject)
    if subject.framework:
        target, refusal = target_of(matrix, facts, subject)
        if target is None:
            findings.append(Finding(FAIL, "matrix", refusal,
                                    f"run `dynamo matrix show --release {subject.release}` for what it offers"))
        else:
            if target.status == "experimental":
                findings.append(Finding(WARN, "experimental", "; ".join(target.notes)))
            if for_an_image(matrix, facts, target, scope):
                findings += _toolkit(matrix, facts, target, subject)
            findings += _driver(matrix, facts, target)
            findings += _gpus(matrix, facts, target)
            if inside:
                findings += _packages(matrix, facts, target)
                findings += _limits(matrix, facts, target)
    else:
        findings += _driver_presence(facts)
    return findings


def for_an_image(matrix: Matrix, facts: HostFacts, target: Target, scope: str) -> bool:
    """Whether the NVIDIA container toolkit stands between this host and the engine: judging a host for
    a container (scope host), or for an engine not installed here. Inside a container, or for an engine
    installed on this host (the preflight of a pip install), it does not."""
    package = matrix.framework[target.framework].package
    return not facts.in_container and (scope == "host" or not (package and facts.packages.get(package)))


def host_device(matrix: Matrix, facts: HostFacts, framework: str | None) -> str | None:
    """The device to judge when none was asked for: the container's CUDA; "cpu" for a framework that
    runs on the CPU on a host with no GPU; else None (the release's default)."""
    if facts.container_cuda:
        return facts.container_cuda
    if framework and matrix.framework[framework].cpu and not facts.gpus and not facts.wsl:
        return "cpu"
    return None


def release_to_judge(matrix: Matrix, installed: str | None, framework: str | None, device: str | None) -> str:
    """The release to judge when none was asked for: the installed dynamo's; else the latest, or for a
    framework the newest release that ships it on the device."""
    from dynamo.matrix.query import default_release

    if installed in matrix.release:
        return installed
    return default_release(matrix, framework, device)[0] if framework else matrix.latest


def subject_of(matrix: Matrix, facts: HostFacts, framework: str | None) -> Subject:
    """What an entry point's preflight judges (`framework`: "vllm", "frontend", "mocker"...): in one of
    our images, the release it was built as and, for its own engine, its device; elsewhere the installed
    release and the host's device."""
    from dynamo.doctor.image import baked

    known = framework in matrix.framework
    cell = baked()
    if cell is not None and cell.release in matrix.release:
        release = cell.release
        # the image's device for its own engine; another entry point (the frontend, the mocker) runs on the host's
        device = cell.device if framework == cell.framework else host_device(matrix, facts, framework if known else None)
    else:
        device = host_device(matrix, facts, framework if known else None)
        release = release_to_judge(matrix, facts.packages.get("dynamo"), framework if known else None, device)
    return Subject(release, framework if framework in matrix.release[release].engines else None, device)


def target_of(matrix: Matrix, facts: HostFacts, subject: Subject) -> tuple[Target | None, str]:
    """The subject's build target, or None and the matrix's reason why there is none."""
    from dynamo.matrix.query import default_device, evaluate

    if subject.framework is None:
        return None, "no framework to judge"
    try:
        device = subject.device or (facts.container_cuda or default_device(matrix, subject.release, subject.framework))
        # The cell as the matrix builds it (its image's Python): the host's own Python is judged apart.
        release = matrix.release[subject.release]
        python = matrix.os[release.image_os].python or release.python_default
        return evaluate(matrix, subject.release, subject.framework, device, _arch(matrix, facts) or "x86_64", python), ""
    except InvalidCombination as exc:
        return None, str(exc)


def _arch(matrix: Matrix, facts: HostFacts) -> str | None:
    try:
        return normalize_arch(matrix, facts.arch)
    except InvalidCombination:
        return None


def _os_key(matrix: Matrix, facts: HostFacts) -> str | None:
    """The matrix's name for the OS in /etc/os-release."""
    return next((k for k, o in matrix.os.items() if o.id == facts.os_id and o.version_id == facts.os_version), None)


def _platform(matrix: Matrix, facts: HostFacts, subject: Subject) -> list[Finding]:
    release = matrix.release[subject.release]
    arch = _arch(matrix, facts)
    out = []
    status = release.cpu_arch.get(arch) if arch else None
    if status is None or arch is None:
        out.append(Finding(FAIL, "cpu", f"{facts.arch} is not supported by release {subject.release}",
                           f"use a {' or '.join(map(arch_name, release.cpu_arch))} host"))
    else:
        out.append(Finding(OK if status == "supported" else WARN, "cpu", f"{arch_name(arch)} ({status})"))
    where = " (inside a container: the image's OS, not the host's)" if facts.in_container else ""
    os_key = _os_key(matrix, facts)
    rows = [p for p in release.platforms if p.arch == arch and p.os in (os_key, "linux")]
    if rows:
        state = rows[0].status
        out.append(Finding(OK if state == "supported" else WARN, "os", f"{facts.os_name or facts.os_id} ({state}){where}"))
    else:
        listed = ", ".join(f"{matrix.os[p.os].name} {matrix.os[p.os].version}" for p in release.platforms if p.arch == arch)
        out.append(Finding(WARN, "os", f"{facts.os_name or facts.os_id or 'unknown OS'} is not verified by release"
                           f" {subject.release}{where}", f"verified: {listed}" if listed else None))
    return out


def _python(matrix: Matrix, facts: HostFacts, subject: Subject) -> list[Finding]:
    release = matrix.release[subject.release]
    python = ".".join(facts.python.split(".")[:2])
    out = []
    if python in release.python:
        out.append(Finding(OK, "python", f"Python {facts.python}"))
    else:
        out.append(Finding(FAIL, "python", f"Python {facts.python} is not supported by release {subject.release}",
                           f"use Python {' or '.join(release.python)}"))
    context = _caveat_context(matrix, facts, subject, python=python, feature={"nixl"} if release.nixl else set())
    for caveat in matching_caveats(matrix, subject.release, context):
        status = FAIL if caveat.effect == "unsupported" else WARN
        out.append(Finding(status, "caveat", caveat.message, caveat.fix))
    return out


def _caveat_context(matrix: Matrix, facts: HostFacts, subject: Subject, **more: object) -> dict[str, object]:
    """What caveats are matched against, for this host and subject."""
    return {"framework": subject.framework, "os": _os_key(matrix, facts), "arch": _arch(matrix, facts),
            "cuda": subject.device, **more}


def _run_flag_caveats(matrix: Matrix, facts: HostFacts, subject: Subject) -> list[Finding]:
    """Caveats about how a container is started on this host (e.g. AL2023, TensorRT-LLM and --network host)."""
    context = _caveat_context(matrix, facts, subject)
    return [Finding(WARN, "caveat", caveat.message + f" (avoid {', '.join(caveat.avoid_flags)})", caveat.fix)
            for caveat in matching_caveats(matrix, subject.release, context) if caveat.avoid_flags]


def _driver_presence(facts: HostFacts) -> list[Finding]:
    if (mismatch := _mismatch(facts)) is not None:
        return [mismatch]
    if facts.driver:
        cuda = f", supports CUDA up to {facts.driver_cuda}" if facts.driver_cuda else ""
        windows = " (the Windows driver, under WSL2)" if facts.wsl else ""
        return [Finding(OK, "driver", f"NVIDIA driver {facts.driver}{windows}{cuda} (from {facts.gpu_source})")]
    return [Finding(WARN, "driver", "no NVIDIA driver found" + (f" ({facts.gpu_error})" if facts.gpu_error else ""),
                    "CPU-only images (llama_cpp --cuda cpu, frontend) still run here")]


def driver_cuda(matrix: Matrix, facts: HostFacts) -> str | None:
    """The newest CUDA the host driver supports: as the driver said, else by the matrix's floors."""
    if facts.driver_cuda:
        return facts.driver_cuda
    driver = _version(facts.driver)
    if driver is None or facts.wsl:
        return None
    fits = [name for name, cuda in matrix.cuda.items() if Version(cuda.driver_linux) <= driver]
    return max(fits, key=Version, default=None)


def _cuda_candidates(matrix: Matrix, facts: HostFacts) -> list[str]:
    """The CUDA versions the toolkit may read from this driver: the one it reports; below the first
    toolkit of the matrix when the driver is below that one's floor; else any (unknown: "ERR!")."""
    if cuda := driver_cuda(matrix, facts):
        return [cuda]
    driver = _version(facts.driver)
    lowest = min(matrix.cuda.values(), key=lambda cuda: Version(cuda.driver_linux))
    if driver is not None and not facts.wsl and driver < Version(lowest.driver_linux):
        return ["0"]
    return ["0", "99"]


class Start(Frozen):
    """The toolkit's answer to an image's NVIDIA_REQUIRE_CUDA on this host."""

    verdict: str  # "start", "refuse" or "unknown" (a GPU whose brand the doctor does not know)
    through_floor: bool  # started by the cuda>= clause, not a forward-compatibility one
    gpu: str | None = None  # the GPU it refuses or cannot be sure of


def predict_start(matrix: Matrix, facts: HostFacts, *requirements: str) -> Start:
    """Evaluate the image's requirements (ANDed) per visible GPU, as `nvidia-container-cli configure
    --require` does. Raises requirement.InvalidRequirement for one the toolkit cannot read."""
    floor = requirements[0].split(" ")[0] if requirements else ""
    cudas = _cuda_candidates(matrix, facts)
    devices: list[tuple[str | None, list[requirement.Device]]] = []
    for index, gpu in enumerate(facts.gpus):
        identity = identify(matrix, gpu)
        brands = [identity.brand] if identity.brand else list(requirement.NVML_BRANDS)
        devices.append((f"GPU {index} {gpu.name}", [requirement.Device(cuda, facts.driver, True,
                                                                       identity.compute_capability, brand)
                                                     for brand in brands for cuda in cudas]))
    if not devices:
        devices.append((None, [requirement.Device(cuda, facts.driver) for cuda in cudas]))
    through_floor, unsure = True, None
    for label, candidates in devices:
        answers = {all(requirement.satisfied(text, device) for text in requirements) for device in candidates}
        if answers == {False}:
            return Start("refuse", False, label)
        if answers != {True}:
            unsure = unsure or label
        through_floor = through_floor and all(requirement.satisfied(floor, device) for device in candidates)
    return Start("unknown", through_floor, unsure) if unsure else Start("start", through_floor)


def _fixes(matrix: Matrix, facts: HostFacts, target: Target) -> str:
    """What makes this framework run here: a driver branch, an image of the matrix that runs, --cuda cpu."""
    floor = _cuda_floor(target)[1]
    if facts.wsl:
        fixes = [f"update the NVIDIA driver on Windows to {target.published_windows or floor.major} or newer"
                 f" (WSL2 uses the Windows driver: never install a Linux driver inside WSL2)"]
    else:
        fixes = [f"install NVIDIA driver >= {target.driver_linux} (branch R{floor.major})"]
    runnable = _runnable_elsewhere(matrix, facts, target)
    if runnable:
        fixes.append(f"or use an image that runs on this host: {', '.join(runnable)}")
    if matrix.framework[target.framework].cpu:
        fixes.append("or run on the CPU: --cuda cpu")
    return "; ".join(fixes)


def _driver_ok(matrix: Matrix, facts: HostFacts, target: Target) -> bool:
    return all(f.status != FAIL for f in _driver(matrix, facts, target, fixes=False))


def _runnable_elsewhere(matrix: Matrix, facts: HostFacts, target: Target) -> list[str]:
    found = []
    for other in targets(matrix, framework=target.framework):
        if other.arch != target.arch or other.cuda is None or other.cuda == target.cuda:
            continue
        start = predict_start(matrix, facts, other.require_cuda)
        gpus_ok = all(f.status != FAIL for f in _gpus(matrix, facts, other))
        if (facts.in_container or start.verdict == "start") and gpus_ok and _driver_ok(matrix, facts, other):
            from dynamo import images  # only to name a tag

            tag = images.tags(matrix, other)[0]
            if tag not in found:
                found.append(tag)
    return found[:4]


def _toolkit(matrix: Matrix, facts: HostFacts, target: Target, subject: Subject) -> list[Finding]:
    """Will `docker run --gpus` start the image? The NVIDIA container toolkit decides, from the
    NVIDIA_REQUIRE_* of its environment: a built image's own, else what dynamo.images renders.
    Through CDI it checks none of them. Inside a started container that question has been answered."""
    if target.cuda is None or not facts.driver or _mismatch(facts) is not None:
        return []  # a CPU image asks for no GPU; no driver to start with: the driver finding says so
    if subject.cdi:
        return [Finding(OK, "toolkit", "the GPUs come through CDI, where the NVIDIA container toolkit checks no"
                        " NVIDIA_REQUIRE_* (NVIDIA/nvidia-container-toolkit#1470): the image starts, and the driver"
                        " and GPU checks say how it runs")]
    texts = (target.require_cuda,) if subject.requirements is None else \
        tuple(t for t in subject.requirements if t.strip())
    if not texts:
        return [Finding(OK, "toolkit", "the NVIDIA container toolkit starts this image: its environment requires"
                        " nothing (no NVIDIA_REQUIRE_*, or NVIDIA_DISABLE_REQUIRE)")]
    try:
        start = predict_start(matrix, facts, *texts)
    except requirement.InvalidRequirement as exc:
        return [Finding(FAIL, "toolkit", f"the NVIDIA container toolkit refuses this image: requirement error: {exc}",
                        "rebuild the image with build.py, or fix its NVIDIA_REQUIRE_* environment variable")]
    floor = texts[0].split(" ")[0]
    if start.verdict == "refuse":
        on = f" on {start.gpu}" if start.gpu else ""
        refused = next((t for t in texts if predict_start(matrix, facts, t).verdict == "refuse"), texts[0])
        return [Finding(FAIL, "toolkit", f"the NVIDIA container toolkit refuses this image{on} (driver {facts.driver},"
                        f" CUDA {driver_cuda(matrix, facts) or 'unknown'}): \"{requirement.refusal(refused)}\"",
                        _fixes(matrix, facts, target))]
    if start.verdict == "unknown":
        return [Finding(WARN, "toolkit", f"the NVIDIA container toolkit starts this image on {start.gpu} only if it is a"
                        f" data-center or professional GPU (its brand is unknown here; {floor} is not met)",
                        _fixes(matrix, facts, target))]
    how = f"its driver meets {floor}" if start.through_floor else "through a forward-compatibility clause of its" \
        " NVIDIA_REQUIRE_CUDA"
    return [Finding(OK, "toolkit", f"the NVIDIA container toolkit starts this image: {how}")]


def _cuda_floor(target: Target) -> tuple[str, Version]:
    """A CUDA target's toolkit and Linux driver floor (the driver's checks run for CUDA targets only)."""
    if target.cuda is None or target.driver_linux is None:
        raise ValueError(f"{target.framework} {target.device} has no CUDA driver floor")
    return target.cuda, Version(target.driver_linux)


def _driver(matrix: Matrix, facts: HostFacts, target: Target, fixes: bool = True) -> list[Finding]:
    """What happens inside a started container: the floor, forward compatibility (data-center and
    professional GPUs on the matrix's branches), minor-version compatibility, or error 35."""
    if target.cuda is None:
        return [Finding(OK, "driver", "the CPU build needs no GPU driver")]
    if (mismatch := _mismatch(facts)) is not None:
        return [mismatch]

    def fix() -> str | None:  # only a warning or a failure names one: the hint looks at every target
        return _fixes(matrix, facts, target) if fixes else None

    host = _version(facts.driver)
    if host is None:
        return [_no_driver(matrix, facts, target, fix)]
    if facts.wsl:
        return [_windows_driver(facts, target, host, fix)]
    if host >= _cuda_floor(target)[1]:
        return [Finding(OK, "driver", f"driver {facts.driver} >= {target.driver_linux}, the floor of CUDA {target.cuda}")]
    return [_forward_compatible(matrix, facts, target, host, fix) or _minor_compatible(matrix, facts, target, host, fix)
            or _insufficient(matrix, facts, target, fix)]


def _below(facts: HostFacts, target: Target) -> str:
    return f"driver {facts.driver} is below {target.driver_linux} (CUDA {target.cuda})"  # the floor as recorded


def _no_driver(matrix: Matrix, facts: HostFacts, target: Target, fix: Callable[[], str | None]) -> Finding:
    if "no devices were found" in (facts.gpu_error or "").lower():
        return Finding(FAIL, "driver", f"the NVIDIA driver is loaded but sees no GPU ({facts.gpu_error})",
                       "check that the GPU is seated, powered and supported by this driver (`dmesg | grep -i NVRM`)"
                       + ("; or run on the CPU: --cuda cpu" if matrix.framework[target.framework].cpu else ""))
    said = f" ({facts.gpu_error})" if facts.gpu_error else ""
    where = "in WSL2 (no GPU through /dev/dxg)" if facts.wsl else "found"
    return Finding(FAIL, "driver", f"no NVIDIA driver {where}{said}; CUDA {target.cuda} needs >= {target.driver_linux}",
                   fix())


def windows_floor(target: Target) -> int:
    """The Windows driver branch a CUDA target needs under WSL2 (576 for CUDA 12.9)."""
    return int((target.published_windows or str(_cuda_floor(target)[1].major)).split(".")[0])


def _windows_driver(facts: HostFacts, target: Target, host: Version, fix: Callable[[], str | None]) -> Finding:
    """Under WSL2 the Windows driver's floor applies, and forward compatibility does not."""
    windows = windows_floor(target)
    if host.major >= windows:
        return Finding(OK, "driver", f"Windows driver {facts.driver} >= {windows}.xx, the floor of CUDA {target.cuda}"
                       f" under WSL2")
    return Finding(FAIL, "driver", f"Windows driver {facts.driver} is below {windows}.xx, the floor of CUDA"
                   f" {target.cuda} under WSL2 (forward compatibility does not apply there)", fix())


def _forward_compatible(matrix: Matrix, facts: HostFacts, target: Target, host: Version,
                        fix: Callable[[], str | None]) -> Finding | None:
    """Below the floor on one of the matrix's forward-compatibility branches: the image's cuda-compat
    libraries run it on data-center and professional GPUs."""
    compat = matrix.forward_compat
    branches = compat.branches.get(_cuda_floor(target)[0], ()) if compat else ()
    brands = [identify(matrix, gpu).brand for gpu in facts.gpus]
    if compat is None or host.major not in branches or not brands:
        return None
    capable = [b in compat.brands for b in brands if b]
    if all(capable) and len(capable) == len(brands):
        return Finding(WARN, "driver", f"{_below(facts, target)}; it runs through forward compatibility (the image's"
                       f" cuda-compat libraries on R{host.major}, data-center and professional GPUs only)", fix())
    if None in brands and all(capable):
        return Finding(WARN, "driver", f"{_below(facts, target)}; forward compatibility works only if every GPU is a"
                       f" data-center or professional one (a GPU here is unknown)", fix())
    return None


def _minor_compatible(matrix: Matrix, facts: HostFacts, target: Target, host: Version,
                      fix: Callable[[], str | None]) -> Finding | None:
    """Below the floor, on a driver of the same CUDA major: minor-version compatibility, with its limits."""
    major = _cuda_floor(target)[0].split(".")[0]
    minor = matrix.cuda_major.get(major)
    if minor and host >= Version(minor.minor_compat_driver) and (driver_cuda(matrix, facts) or "").split(".")[0] == major:
        return Finding(WARN, "driver", f"{_below(facts, target)}; it runs through CUDA {major}.x minor-version"
                       f" compatibility with a limited feature set: code that JIT-compiles newer PTX fails"
                       f" (cudaErrorUnsupportedPtxVersion, 222)", fix())
    return None


def _insufficient(matrix: Matrix, facts: HostFacts, target: Target, fix: Callable[[], str | None]) -> Finding:
    message = f"{_below(facts, target)}: \"CUDA driver version is insufficient\" (error 35)"
    compat = matrix.forward_compat
    brands = [identify(matrix, gpu).brand for gpu in facts.gpus]
    if brands and not all(b in (compat.brands if compat else ()) for b in brands):
        message += "; forward compatibility needs a data-center or professional GPU (error 804 elsewhere)"
    return Finding(FAIL, "driver", message, fix())


def _gpus(matrix: Matrix, facts: HostFacts, target: Target) -> list[Finding]:
    """Kernels for each GPU's compute capability; a CUDA build needs a GPU at all, and not a Jetson."""
    if target.cuda is None:
        return []
    cpu = "; or run on the CPU: --cuda cpu" if matrix.framework[target.framework].cpu else ""
    if facts.jetson:
        return [Finding(FAIL, "gpu", f"{facts.gpus[0].name} is a Jetson (L4T) integrated GPU: server ARM64 (SBSA) images"
                        f" do not run on Jetson", "use NVIDIA's Jetson (L4T) containers" + cpu)]
    if not facts.gpus:
        if not facts.driver:
            return []  # the driver finding says it
        return [Finding(FAIL, "gpu", f"no GPU is visible, though driver {facts.driver} is"
                        + (f" ({facts.gpu_error})" if facts.gpu_error else ""),
                        "check `nvidia-smi -L`; in a container, pass the GPUs (--gpus all)" + cpu)]
    release = matrix.release[target.release]
    out = []
    for index, gpu in enumerate(facts.gpus):
        cc = identify(matrix, gpu).compute_capability
        label = f"GPU {index} {gpu.name}"
        if cc is None:
            out.append(Finding(WARN, "gpu", f"{label}: unknown GPU (not in the matrix's GPU table); its compute"
                               f" capability is unknown", "check it with `nvidia-smi --query-gpu=compute_cap"
                               " --format=csv` and add the GPU to [gpu] in the matrix"))
            continue
        info = matrix.compute_capability.get(cc)
        if (problem := kernel_problem(matrix, target, cc)) is not None:
            out.append(Finding(FAIL, "gpu", f"{label} (compute capability {cc}){problem[0]}", problem[1] + cpu))
        elif info is None or info.arch not in release.gpu_arch:
            out.append(Finding(WARN, "gpu", f"{label} (compute capability {cc}) is not in the support matrix's GPU"
                               f" architectures"))
        else:
            out.append(Finding(OK, "gpu", f"{label}, compute capability {cc}, {matrix.gpu_arch[info.arch].name}"
                               + (", MIG enabled" if gpu.mig else "")))
    return out


def kernel_problem(matrix: Matrix, target: Target, cc: str) -> tuple[str, str] | None:
    """Why a GPU of compute capability `cc` cannot run a CUDA target, and the fix; None where it can."""
    info = matrix.compute_capability.get(cc)
    if info and info.dropped_in and Version(target.cuda or "0") >= Version(info.dropped_in):
        return (f" is not supported by CUDA {target.cuda}", f"use an image with CUDA below {info.dropped_in}, or a"
                " newer GPU")
    if not covered(cc, target.cuda_archs):
        return (f": {target.framework}'s kernels are built for {' '.join(target.cuda_archs)}: \"no kernel image is"
                " available for execution on the device\"", "use a GPU the engine is built for, or another engine")
    return None


def _packages(matrix: Matrix, facts: HostFacts, target: Target) -> list[Finding]:
    out = []
    fw = matrix.framework[target.framework]
    # the requirement as the image installs it: the engine's extras, NIXL's build for the CUDA major
    wanted = [(fw.package, target.engine_pin, target.engine_requirement), ("nixl", target.nixl, target.nixl_requirement)]
    for package, pin, requirement_text in wanted:
        if not package or not pin:
            continue
        found = facts.packages.get(package)
        if found is None:
            out.append(Finding(WARN, "package", f"{package} is not installed (expected {pin})",
                               f"pip install '{requirement_text}' (or run the image)"))
        elif _version(found) != _version(pin):
            out.append(Finding(FAIL, "package", f"{package} {found} is installed; release {target.release} pins {pin}",
                               f"pip install '{requirement_text}'"))
        else:
            out.append(Finding(OK, "package", f"{package} {found}"))
    for name in cuda_suffix_mismatches(facts.packages, target.cuda):  # none without a CUDA
        replacement = re.sub(r"cuda\d+x$", f"cuda{(target.cuda or '').split('.')[0]}x", name)
        out.append(Finding(FAIL, "package", f"{name} is built for another CUDA major than CUDA {target.cuda}",
                           f"pip uninstall {name} && pip install {replacement}"))
    return out


def _limits(matrix: Matrix, facts: HostFacts, target: Target) -> list[Finding]:
    out = []
    gpus = len(facts.gpus)  # NCCL's shared memory is per GPU: with none (the frontend, a CPU engine) it needs none
    need = GIB * gpus
    if facts.shm_bytes is not None and gpus:
        if facts.shm_bytes >= need:
            out.append(Finding(OK, "shm", f"/dev/shm {facts.shm_bytes / GIB:.1f} GiB"))
        else:
            out.append(Finding(FAIL, "shm", f"/dev/shm is {facts.shm_bytes / 2**20:.0f} MiB; {gpus} GPU(s) need"
                               f" >= {need // GIB} GiB (NCCL fails in ncclShmOpen)", "docker run --shm-size=10g"))
    if facts.memlock is not None and needs_memlock(matrix, target):
        if facts.memlock[0] == -1:
            out.append(Finding(OK, "memlock", "memlock unlimited"))
        else:
            why = "MPI" if matrix.framework[target.framework].memlock_unlimited else "NIXL/UCX"
            out.append(Finding(FAIL, "memlock", f"memlock is {facts.memlock[0] // 1024} KiB; {why} needs unlimited",
                               "docker run --ulimit memlock=-1"))
    if facts.nofile is not None and 0 <= facts.nofile[0] < 65536:
        out.append(Finding(WARN, "nofile", f"open files limit {facts.nofile[0]} is below 65536",
                           "docker run --ulimit nofile=65536:65536"))
    return out


def needs_memlock(matrix: Matrix, target: Target) -> bool:
    """MPI (TensorRT-LLM) and NIXL's UCX pin memory: they need memlock unlimited."""
    return matrix.framework[target.framework].memlock_unlimited or bool(target.nixl)


MISMATCH_FIX = "reboot, or unload and reload the nvidia kernel modules, so that they match the user-space driver"


def _mismatch(facts: HostFacts) -> Finding | None:
    """The kernel module and the user-space driver differ: every CUDA call fails with error 803."""
    if "version mismatch" in (facts.gpu_error or "").lower():
        module = f" (kernel module {facts.kernel_module})" if facts.kernel_module else ""
        return Finding(FAIL, "driver", f"Driver/library version mismatch{module}: CUDA fails with error 803"
                       f" ({facts.gpu_error})", MISMATCH_FIX)
    if facts.kernel_module and facts.driver and facts.gpu_source != "proc" and facts.kernel_module != facts.driver \
            and not facts.wsl:
        return Finding(FAIL, "driver", f"kernel module {facts.kernel_module} differs from the user-space driver"
                       f" {facts.driver}: \"Driver/library version mismatch\" (error 803)", MISMATCH_FIX)
    return None
