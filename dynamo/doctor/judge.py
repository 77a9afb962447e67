"""Judge host facts against the matrix: one finding per check, with the fix under each problem."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from packaging.version import InvalidVersion, Version

from dynamo.doctor.facts import HostFacts, cuda_suffix_mismatches
from dynamo.matrix import InvalidCombination, Matrix, Target, targets
from dynamo.matrix.query import arch_name, matching_caveats, normalize_arch

OK, WARN, FAIL = "ok", "warn", "fail"
MARKS = {OK: "✓", WARN: "!", FAIL: "✗"}
GIB = 2**30
# GPUs that take the cuda-compat forward-compatibility package (data-center parts).
DATA_CENTER = ("A100", "A30", "A10", "A40", "A16", "A2", "L4", "L40", "H100", "H200", "H800", "H20", "GH200",
               "B200", "B300", "GB200", "GB300", "V100", "T4")


@dataclass(frozen=True)
class Finding:
    status: str
    check: str
    message: str
    fix: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Subject:
    """What the host is judged for: a release, and optionally a framework and device (CUDA or cpu)."""

    release: str
    framework: str | None = None
    device: str | None = None  # "12.9" or "cpu"


def _version(text: str | None) -> Version | None:
    try:
        return Version(text) if text else None
    except InvalidVersion:
        return None


def compute_capability_of(matrix: Matrix, gpu_name: str) -> str | None:
    """A GPU's compute capability from the matrix's GPU lists (when the source did not say)."""
    name = gpu_name.upper().replace("NVIDIA ", "")
    best = None
    for cc, info in matrix.compute_capability.items():
        for gpu in info.gpus:
            token = gpu.upper().split(" (")[0]
            if token and token in name and (best is None or len(token) > best[1]):
                best = (cc, len(token))
    return best[0] if best else None


def covered(cc: str, archs: tuple[str, ...]) -> bool:
    """A cubin runs on the same major with an equal or higher minor, never across majors."""
    major, minor = (int(x) for x in cc.split("."))
    return any(int(a.split(".")[0]) == major and int(a.split(".")[1]) <= minor for a in archs)


SCOPES = ("all", "host")  # host: only what the host decides for a container (CPU, driver, GPUs)


def judge(matrix: Matrix, facts: HostFacts, subject: Subject, scope: str = "all") -> list[Finding]:
    release = matrix.release[subject.release]
    inside = scope == "all"  # the Python, packages and limits of this environment
    findings = [*_platform(matrix, facts, subject)[:1 if not inside else None]]
    if inside:
        findings += _python(matrix, facts, subject)
    else:
        findings += _run_flag_caveats(matrix, facts, subject)
    if subject.framework:
        target, refusal = _target(matrix, facts, subject)
        if target is None:
            findings.append(Finding(FAIL, "matrix", refusal,
                                    f"run `dynamo matrix show --release {subject.release}` for what it offers"))
        else:
            if target.status == "experimental":
                findings.append(Finding(WARN, "experimental", "; ".join(target.notes)))
            findings += _driver(matrix, facts, target)
            findings += _gpus(matrix, facts, target, release.gpu_arch)
            if inside:
                findings += _packages(matrix, facts, target)
                findings += _limits(matrix, facts, target)
    else:
        findings += _driver_presence(facts)
    findings += _kernel_module(facts)
    return findings


def _target(matrix: Matrix, facts: HostFacts, subject: Subject) -> tuple[Target | None, str]:
    """The subject's build target, or None and the matrix's reason why there is none."""
    from dynamo.matrix.query import default_device, evaluate

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
    if status is None:
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
    if facts.driver:
        cuda = f", supports CUDA up to {facts.driver_cuda}" if facts.driver_cuda else ""
        return [Finding(OK, "driver", f"NVIDIA driver {facts.driver}{cuda} (from {facts.gpu_source})")]
    return [Finding(WARN, "driver", "no NVIDIA driver found" + (f" ({facts.gpu_error})" if facts.gpu_error else ""),
                    "CPU-only images (llama_cpp --cuda cpu, frontend) still run here")]


def _driver(matrix: Matrix, facts: HostFacts, target: Target) -> list[Finding]:
    if target.cuda is None:
        return [Finding(OK, "driver", "the CPU build needs no GPU driver")]
    floor, floor_text = Version(target.driver_linux), target.driver_linux  # shown as recorded: 575.51.03
    host = _version(facts.driver)
    if host is None:
        said = f" ({facts.gpu_error})" if facts.gpu_error else ""
        return [Finding(FAIL, "driver", f"no NVIDIA driver found{said}; CUDA {target.cuda} needs >= {floor_text}",
                        f"install NVIDIA driver >= {floor_text} (branch R{floor.major})")]
    if host >= floor:
        return [Finding(OK, "driver", f"driver {facts.driver} >= {floor_text}, the floor of CUDA {target.cuda}")]
    major = target.cuda.split(".")[0]
    compat = matrix.cuda_major.get(major)
    runnable = _runnable_elsewhere(matrix, target, host)
    fix = f"install NVIDIA driver >= {floor_text} (branch R{floor.major})" + (
        f"; or use an image that runs on driver {facts.driver}: {', '.join(runnable)}" if runnable else "")
    below = f"driver {facts.driver} is below {floor_text} (CUDA {target.cuda})"
    driver_cuda = facts.driver_cuda or _newest_cuda_for(matrix, host)
    if compat and host >= Version(compat.minor_compat_driver) and (driver_cuda or "").split(".")[0] == major:
        return [Finding(WARN, "driver", f"{below}; it runs through CUDA {major}.x minor-version compatibility with a"
                        f" limited feature set: code that JIT-compiles newer PTX fails (cudaErrorUnsupportedPtxVersion,"
                        f" 222)", fix)]
    insufficient = f"{below}: \"CUDA driver version is insufficient\" (error 35)"
    if facts.gpus and all(any(tag in g.name.upper() for tag in DATA_CENTER) for g in facts.gpus):
        return [Finding(FAIL, "driver", insufficient, fix + f"; or, on these data-center GPUs, install"
                        f" cuda-compat-{target.cuda.replace('.', '-')} (forward compatibility)")]
    return [Finding(FAIL, "driver", f"{insufficient}; forward compatibility needs a data-center GPU (error 804"
                    f" elsewhere)", fix)]


def _newest_cuda_for(matrix: Matrix, driver: Version) -> str | None:
    """The newest CUDA this driver runs by its floor, where no source said (nvidia-smi's CSV does not)."""
    fits = [name for name, cuda in matrix.cuda.items() if Version(cuda.driver_linux) <= driver]
    return max(fits, key=Version, default=None)


def _runnable_elsewhere(matrix: Matrix, target: Target, driver: Version) -> list[str]:
    from dynamo import images  # only when the driver is too old

    found = []
    for other in targets(matrix, framework=target.framework):
        if other.arch == target.arch and other.driver_linux and Version(other.driver_linux) <= driver:
            tag = images.tags(matrix, other)[0]
            if tag not in found:
                found.append(tag)
    return found[:6]


def _gpus(matrix: Matrix, facts: HostFacts, target: Target, gpu_arch: dict[str, str]) -> list[Finding]:
    if target.cuda is None:
        return []
    out = []
    for index, gpu in enumerate(facts.gpus):
        cc = gpu.compute_capability or compute_capability_of(matrix, gpu.name)
        label = f"GPU {index} {gpu.name}"
        if cc is None:
            out.append(Finding(WARN, "gpu", f"{label}: compute capability unknown",
                               "check it with `nvidia-smi --query-gpu=compute_cap --format=csv`"))
            continue
        info = matrix.compute_capability.get(cc)
        if info and info.dropped_in and Version(target.cuda) >= Version(info.dropped_in):
            out.append(Finding(FAIL, "gpu", f"{label} (compute capability {cc}) is not supported by CUDA {target.cuda}",
                               f"use an image with CUDA below {info.dropped_in}, or a newer GPU"))
        elif not covered(cc, target.cuda_archs):
            out.append(Finding(FAIL, "gpu", f"{label} (compute capability {cc}): {target.framework}'s kernels are"
                               f" built for {' '.join(target.cuda_archs)}: \"no kernel image is available for"
                               f" execution on the device\"", "use a GPU the engine is built for, or another engine"))
        elif info is None or info.arch not in gpu_arch:
            out.append(Finding(WARN, "gpu", f"{label} (compute capability {cc}) is not in the support matrix's GPU"
                               f" architectures"))
        else:
            out.append(Finding(OK, "gpu", f"{label}, compute capability {cc}, {matrix.gpu_arch[info.arch].name}"
                               + (", MIG enabled" if gpu.mig else "")))
    return out


def _packages(matrix: Matrix, facts: HostFacts, target: Target) -> list[Finding]:
    out = []
    fw = matrix.framework[target.framework]
    wanted = [(fw.package, target.engine_pin), ("nixl", target.nixl)]
    for package, pin in wanted:
        if not package or not pin:
            continue
        found = facts.packages.get(package)
        if found is None:
            out.append(Finding(WARN, "package", f"{package} is not installed (expected {pin})",
                               f"pip install '{package}=={pin}' (or run the image)"))
        elif _version(found) != _version(pin):
            out.append(Finding(FAIL, "package", f"{package} {found} is installed; release {target.release} pins {pin}",
                               f"pip install '{package}=={pin}'"))
        else:
            out.append(Finding(OK, "package", f"{package} {found}"))
    for name in cuda_suffix_mismatches(facts.packages, target.cuda):
        replacement = re.sub(r"cuda\d+x$", f"cuda{target.cuda.split('.')[0]}x", name)
        out.append(Finding(FAIL, "package", f"{name} is built for another CUDA major than CUDA {target.cuda}",
                           f"pip uninstall {name} && pip install {replacement}"))
    return out


def _limits(matrix: Matrix, facts: HostFacts, target: Target) -> list[Finding]:
    out = []
    gpus = max(1, len(facts.gpus))
    need = GIB * gpus
    if facts.shm_bytes is not None:
        if facts.shm_bytes >= need:
            out.append(Finding(OK, "shm", f"/dev/shm {facts.shm_bytes / GIB:.1f} GiB"))
        else:
            out.append(Finding(FAIL, "shm", f"/dev/shm is {facts.shm_bytes / 2**20:.0f} MiB; {gpus} GPU(s) need"
                               f" >= {need // GIB} GiB (NCCL fails in ncclShmOpen)", "docker run --shm-size=10g"))
    needs_memlock = matrix.framework[target.framework].memlock_unlimited or bool(target.nixl)
    if facts.memlock is not None and needs_memlock:
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


def _kernel_module(facts: HostFacts) -> list[Finding]:
    fix = "reboot, or unload and reload the nvidia kernel modules, so that they match the user-space driver"
    if "version mismatch" in (facts.gpu_error or "").lower():
        module = f" (kernel module {facts.kernel_module})" if facts.kernel_module else ""
        return [Finding(FAIL, "driver", f"Driver/library version mismatch{module}: CUDA fails with error 803", fix)]
    if facts.kernel_module and facts.driver and facts.gpu_source != "proc" and facts.kernel_module != facts.driver:
        return [Finding(FAIL, "driver", f"kernel module {facts.kernel_module} differs from the user-space driver"
                        f" {facts.driver}: \"Driver/library version mismatch\" (error 803)", fix)]
    return []
