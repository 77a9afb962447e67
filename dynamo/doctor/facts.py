"""Host facts for the doctor: what this machine (or container) is, read without importing torch or
an engine. Parsers are pure functions over the text the sources print, so recorded outputs from
real machines test them; `gather` runs the sources live, in the fallback order NVML (nvidia-ml-py),
then `nvidia-smi`, then /proc/driver/nvidia/version.
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

PACKAGES = ("dynamo", "vllm", "sglang", "tensorrt-llm", "llama-cpp-python", "nixl", "torch",
            "cupy-cuda12x", "cupy-cuda13x")


def cuda_suffix_mismatches(packages: dict[str, str | None], cuda: str | None) -> list[str]:
    """Installed packages built for another CUDA major than `cuda` (cupy-cuda12x in a CUDA 13 image)."""
    if not cuda:
        return []
    major = cuda.split(".")[0]
    return [name for name in PACKAGES if packages.get(name)
            and re.search(r"-cuda\d+x$", name) and not name.endswith(f"-cuda{major}x")]


@dataclass
class Gpu:
    name: str
    memory_mib: int | None = None
    compute_capability: str | None = None  # "9.0"
    mig: bool | None = None


@dataclass
class HostFacts:
    arch: str = ""
    os_id: str = ""
    os_version: str = ""
    os_name: str = ""
    in_container: bool = False
    python: str = ""
    glibc: str = ""
    driver: str | None = None  # user-space driver, e.g. "580.95.05"
    driver_cuda: str | None = None  # the newest CUDA the driver supports, e.g. "13.0"
    kernel_module: str | None = None  # from /proc/driver/nvidia/version
    gpus: list[Gpu] = field(default_factory=list)
    gpu_source: str = "none"  # nvml, nvidia-smi, proc or none
    gpu_error: str | None = None  # what the GPU sources said when they failed
    container_cuda: str | None = None
    packages: dict[str, str | None] = field(default_factory=dict)
    shm_bytes: int | None = None
    memlock: tuple[int, int] | None = None  # soft, hard; -1 is unlimited
    nofile: tuple[int, int] | None = None

    def to_json(self) -> dict:
        return asdict(self)


# -- parsers ------------------------------------------------------------------------------------

def parse_os_release(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip().strip('"').strip("'")
    return values


def set_os(facts: HostFacts, os_release: str) -> None:
    release = parse_os_release(os_release)
    facts.os_id, facts.os_version = release.get("ID", ""), release.get("VERSION_ID", "")
    facts.os_name = release.get("PRETTY_NAME", "")


CSV_COLUMNS = ("name", "driver_version", "memory.total", "compute_cap", "mig.mode.current")


def parse_smi_csv(text: str) -> tuple[str | None, list[Gpu]]:
    """`nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap[,mig.mode.current]
    --format=csv,noheader`: the driver and the GPUs. With a header line (`--format=csv`), the
    columns are found by name, in any order and among others."""
    driver, gpus = None, []
    positions = {column: index for index, column in enumerate(CSV_COLUMNS)}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.split(",")]
        names = [cell.split(" [")[0] for cell in cells]  # "memory.total [MiB]"
        if "driver_version" in names:
            positions = {column: names.index(column) for column in CSV_COLUMNS if column in names}
            continue
        row = {column: cells[index] for column, index in positions.items() if index < len(cells)}
        if not re.fullmatch(r"\d+(\.\d+)+", row.get("driver_version", "")) or not row.get("name"):
            continue
        driver = row["driver_version"]
        memory = re.match(r"(\d+)\s*MiB", row.get("memory.total", ""))
        cc = row.get("compute_cap") if re.fullmatch(r"\d+\.\d+", row.get("compute_cap", "")) else None
        mig = {"Enabled": True, "Disabled": False}.get(row.get("mig.mode.current", ""))
        gpus.append(Gpu(row["name"], int(memory.group(1)) if memory else None, cc, mig))
    return driver, gpus


_SMI_HEADER = re.compile(
    r"(?:Driver Version|KMD Version):\s*(?P<driver>\d+(?:\.\d+)+).*?(?:CUDA (?:UMD )?Version):\s*(?P<cuda>\d+\.\d+|N/A)")
_SMI_GPU = re.compile(r"^\|\s+(?P<index>\d+)\s+(?P<name>.+?)\s{2,}(?:On|Off)\s+\|")
_SMI_MEMORY = re.compile(r"(?P<used>\d+)MiB\s*/\s*(?P<total>\d+)MiB")


def parse_smi_table(text: str) -> tuple[str | None, str | None, list[Gpu]]:
    """The plain `nvidia-smi` table: driver, the driver's CUDA version, and the GPUs (names and
    memory; the table has no compute capability). R610+ calls them KMD and CUDA UMD Version."""
    header = _SMI_HEADER.search(text)
    driver = header.group("driver") if header else None
    cuda = header.group("cuda") if header and header.group("cuda") != "N/A" else None
    gpus: list[Gpu] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = _SMI_GPU.match(line)
        if match:
            memory = _SMI_MEMORY.search(lines[i + 1]) if i + 1 < len(lines) else None
            # The block's third line ends with the MIG mode: Enabled, Disabled or N/A.
            last_cell = lines[i + 2].strip().strip("|").split("|")[-1].strip() if i + 2 < len(lines) else ""
            mig = {"Enabled": True, "Disabled": False}.get(last_cell)
            gpus.append(Gpu(match.group("name").strip(), int(memory.group("total")) if memory else None, None, mig))
    return driver, cuda, gpus


def parse_smi_xml(text: str) -> tuple[str | None, str | None, list[Gpu]]:
    """`nvidia-smi -q -x`: driver, CUDA version, and per GPU name, memory, MIG mode."""
    import xml.etree.ElementTree as ElementTree  # only for this rarely used source

    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError:
        return None, None, []
    driver = root.findtext("driver_version")
    cuda = root.findtext("cuda_version")
    gpus = []
    for gpu in root.findall("gpu"):
        total = re.match(r"(\d+)", gpu.findtext("fb_memory_usage/total") or "")
        mig = gpu.findtext("mig_mode/current_mig")
        gpus.append(Gpu(gpu.findtext("product_name") or "unknown", int(total.group(1)) if total else None, None,
                        {"Enabled": True, "Disabled": False}.get(mig or "")))
    return driver, (cuda if cuda and cuda != "N/A" else None), gpus


def parse_proc_version(text: str) -> str | None:
    """/proc/driver/nvidia/version: the kernel module's version."""
    match = re.search(r"NVRM version:.*?(\d{3}\.\d+(?:\.\d+)?)", text)
    return match.group(1) if match else None


def cuda_from_int(value: int) -> str:
    """NVML's 12080 is CUDA 12.8 (1000 * major + 10 * minor)."""
    return f"{value // 1000}.{(value % 1000) // 10}"


def parse_cuda_version_json(text: str) -> str | None:
    """/usr/local/cuda/version.json: major.minor of the toolkit in the image; None when it says none."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    cuda = data.get("cuda") if isinstance(data, dict) else None
    version = cuda.get("version") if isinstance(cuda, dict) else None
    match = re.match(r"(\d+)\.(\d+)", version) if isinstance(version, str) else None
    return f"{match.group(1)}.{match.group(2)}" if match else None


# -- live sources --------------------------------------------------------------------------------

def _nvml(facts: HostFacts) -> bool:
    try:
        import pynvml  # nvidia-ml-py; optional
    except ImportError:
        return False
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        facts.gpu_error = f"NVML: {exc}"
        return False
    try:
        text = lambda value: value.decode() if isinstance(value, bytes) else value  # noqa: E731 (old bindings)
        facts.driver = text(pynvml.nvmlSystemGetDriverVersion())
        facts.driver_cuda = cuda_from_int(pynvml.nvmlSystemGetCudaDriverVersion_v2())
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            try:
                mig = pynvml.nvmlDeviceGetMigMode(handle)[0] == 1
            except pynvml.NVMLError:
                mig = None
            facts.gpus.append(Gpu(text(pynvml.nvmlDeviceGetName(handle)),
                                  pynvml.nvmlDeviceGetMemoryInfo(handle).total // 2**20, f"{major}.{minor}", mig))
        facts.gpu_source = "nvml"
        return True
    except pynvml.NVMLError as exc:
        facts.gpu_error = f"NVML: {exc}"
        return False
    finally:
        pynvml.nvmlShutdown()


def _smi(facts: HostFacts) -> bool:
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return False
    query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap,mig.mode.current",
             "--format=csv,noheader"]
    try:
        csv = subprocess.run(query, capture_output=True, text=True, timeout=10)
        table = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        facts.gpu_error = f"nvidia-smi: {exc}"
        return False
    if csv.returncode != 0:
        said = (csv.stdout + csv.stderr).strip().splitlines()
        facts.gpu_error = f"nvidia-smi: {said[-1] if said else f'exit {csv.returncode}'}"
        return False
    facts.driver, facts.gpus = parse_smi_csv(csv.stdout)
    facts.driver_cuda = parse_smi_table(table.stdout)[1] if table.returncode == 0 else None
    facts.gpu_source = "nvidia-smi"
    return True


def gather(root: Path = Path("/")) -> HostFacts:
    """Everything the doctor judges, from this machine."""
    facts = HostFacts(arch=platform.machine(), python=platform.python_version(),
                      glibc=" ".join(platform.libc_ver()).strip())
    try:
        set_os(facts, (root / "etc/os-release").read_text())
    except OSError:
        pass
    facts.in_container = (root / ".dockerenv").exists() or (root / "run/.containerenv").exists() or \
        bool(os.environ.get("container"))
    try:
        facts.kernel_module = parse_proc_version((root / "proc/driver/nvidia/version").read_text())
    except OSError:
        pass
    if not (root / "dev/nvidiactl").exists() and not (root / "proc/driver/nvidia").exists():
        # No driver is loaded: NVML and nvidia-smi could only fail, slowly.
        facts.gpu_error = "the NVIDIA driver is not loaded here: no /dev/nvidiactl, no /proc/driver/nvidia"
    elif not _nvml(facts) and not _smi(facts) and facts.kernel_module:
        facts.driver, facts.gpu_source = facts.kernel_module, "proc"
    facts.container_cuda = _container_cuda(root)
    facts.packages = installed_versions(PACKAGES)
    try:
        stat = os.statvfs(root / "dev/shm")
        facts.shm_bytes = stat.f_frsize * stat.f_blocks
    except OSError:
        pass
    facts.memlock = _limit(resource.RLIMIT_MEMLOCK)
    facts.nofile = _limit(resource.RLIMIT_NOFILE)
    return facts


def _container_cuda(root: Path) -> str | None:
    env = os.environ.get("CUDA_VERSION")
    if env:
        match = re.match(r"(\d+)\.(\d+)", env)
        if match:
            return f"{match.group(1)}.{match.group(2)}"
    try:
        return parse_cuda_version_json((root / "usr/local/cuda/version.json").read_text())
    except OSError:
        return None


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def installed_versions(names: tuple[str, ...], paths: list[str] | None = None) -> dict[str, str | None]:
    """Versions of installed distributions from their *.dist-info / *.egg-info directory names:
    importing importlib.metadata, let alone the packages, costs more than the whole doctor may."""
    wanted = {_normalize(name): name for name in names}
    found: dict[str, str | None] = dict.fromkeys(names)
    for entry in paths if paths is not None else sys.path:
        try:
            listing = os.listdir(entry or ".")
        except OSError:
            continue
        for item in listing:
            stem, dot, suffix = item.rpartition(".")
            if suffix not in ("dist-info", "egg-info") or "-" not in stem:
                continue
            name, _, version = stem.partition("-")
            key = _normalize(name)
            if key in wanted and found[wanted[key]] is None:
                found[wanted[key]] = version.split("-")[0] if suffix == "egg-info" else version
    return found


def _limit(which: int) -> tuple[int, int]:
    soft, hard = resource.getrlimit(which)
    unlimited = resource.RLIM_INFINITY
    return (-1 if soft == unlimited else soft, -1 if hard == unlimited else hard)


def from_recording(directory: Path) -> HostFacts:
    """Facts recorded on another machine: the files its sources printed, in the live fallback order.

    host.json holds what is not a source's output (arch, python, packages, shm_bytes, memlock...);
    then nvml.json, nvidia-smi.csv (+ nvidia-smi.txt for the driver's CUDA), nvidia-smi.xml,
    nvidia-smi.txt, proc-driver-nvidia-version, os-release.
    """
    read = lambda name: (directory / name).read_text() if (directory / name).is_file() else None  # noqa: E731
    host = json.loads(read("host.json") or "{}")
    facts = HostFacts(**{k: v for k, v in host.items() if k in HostFacts.__dataclass_fields__ and k != "gpus"})
    for key in ("memlock", "nofile"):
        if isinstance(getattr(facts, key), list):
            setattr(facts, key, tuple(getattr(facts, key)))
    if (text := read("os-release")) is not None:
        set_os(facts, text)
    if (text := read("proc-driver-nvidia-version")) is not None:
        facts.kernel_module = parse_proc_version(text)
    table = read("nvidia-smi.txt")
    if (text := read("nvml.json")) is not None:
        nvml = json.loads(text)
        facts.driver, facts.driver_cuda = nvml["driver"], cuda_from_int(nvml["cuda_driver_version"])
        facts.gpus = [Gpu(g["name"], g.get("memory_mib"), g.get("compute_capability"), g.get("mig"))
                      for g in nvml.get("gpus", [])]
        facts.gpu_source = "nvml"
    elif (text := read("nvidia-smi.csv")) is not None and parse_smi_csv(text)[1]:
        facts.driver, facts.gpus = parse_smi_csv(text)
        facts.driver_cuda = parse_smi_table(table)[1] if table else None
        facts.gpu_source = "nvidia-smi"
    elif (text := read("nvidia-smi.xml")) is not None and parse_smi_xml(text)[2]:
        facts.driver, facts.driver_cuda, facts.gpus = parse_smi_xml(text)
        facts.gpu_source = "nvidia-smi"
    elif table is not None and parse_smi_table(table)[0]:
        facts.driver, facts.driver_cuda, facts.gpus = parse_smi_table(table)
        facts.gpu_source = "nvidia-smi"
    else:
        said = (table or read("nvidia-smi.csv") or "").replace("\x00", "").strip().splitlines()
        facts.gpu_error = f"nvidia-smi: {said[0]}" if said else facts.gpu_error
        if facts.kernel_module:
            facts.driver, facts.gpu_source = facts.kernel_module, "proc"
    return facts
