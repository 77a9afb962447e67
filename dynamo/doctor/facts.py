"""Host facts for the doctor: what this machine (or container) is, read without importing torch or
an engine.

One interpreter: `gather` runs the sources on this machine and captures what each printed into a
recording (file name -> text: host.json, nvml.json, nvidia-smi.csv, nvidia-smi.xml, nvidia-smi.txt,
proc-driver-nvidia-version, os-release); `from_recording` reads such a recording from a directory;
both hand it to `interpret`, so tests on recordings from real machines run the code a live host
runs. GPU sources in fallback order: NVML (nvidia-ml-py), `nvidia-smi` (CSV query, then its XML,
then its plain table), /proc/driver/nvidia/version.
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import stat
import sys
from collections.abc import Callable
from dataclasses import asdict, field
from pathlib import Path
from typing import Any

from dynamo.cuda_builds import built_for_major
from dynamo.frozen import Record

PACKAGES = ("dynamo", "vllm", "sglang", "tensorrt-llm", "llama-cpp-python", "nixl", "torch",
            "cupy-cuda12x", "cupy-cuda13x")


def cuda_suffix_mismatches(packages: dict[str, str | None], cuda: str | None) -> list[str]:
    """Installed packages built for another CUDA major than `cuda` (cupy-cuda12x in a CUDA 13 image)."""
    if not cuda:
        return []
    major = cuda.split(".")[0]
    return [name for name in PACKAGES if packages.get(name) and built_for_major(name) not in (None, major)]


class Gpu(Record):
    name: str
    memory_mib: int | None = None
    compute_capability: str | None = None  # "9.0"
    mig: bool | None = None
    brand: str | None = None  # NVML's brand as the container toolkit spells it: "tesla", "geforce"


# what one nvidia-smi report says: the driver, the newest CUDA it supports, the GPUs
SmiReport = tuple[str | None, str | None, list[Gpu]]


class HostFacts(Record):
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
    gpu_file: str | None = None  # the recording's file the driver and GPUs were read from
    gpu_error: str | None = None  # what the GPU sources said when they failed
    container_cuda: str | None = None
    packages: dict[str, str | None] = field(default_factory=dict)
    shm_bytes: int | None = None
    memlock: tuple[int, int] | None = None  # soft, hard; -1 is unlimited
    nofile: tuple[int, int] | None = None
    kernel_release: str = ""  # uname -r
    wsl: bool = False  # Windows Subsystem for Linux 2: the GPU is the Windows driver's, through /dev/dxg

    @property
    def jetson(self) -> bool:
        """An integrated Jetson GPU (L4T): nvidia-smi names it "Orin (nvgpu)"."""
        return any("(nvgpu)" in gpu.name for gpu in self.gpus)

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"jetson": self.jetson}


# -- parsers ------------------------------------------------------------------------------------

# No tool prints a longer line (nvidia-smi's widest table is about 120 characters): the parsers skip
# longer ones, so that each reads its text in time linear in its length.
MAX_LINE = 512


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if len(line) <= MAX_LINE]


def parse_os_release(text: str) -> dict[str, str]:
    values = {}
    for line in _lines(text):
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip().strip('"').strip("'")
    return values


def set_os(facts: HostFacts, os_release: str) -> None:
    release = parse_os_release(os_release)
    facts.os_id, facts.os_version = release.get("ID", ""), release.get("VERSION_ID", "")
    facts.os_name = release.get("PRETTY_NAME", "")


CSV_COLUMNS = ("name", "driver_version", "memory.total", "compute_cap", "mig.mode.current")
MIG_MODES = {"Enabled": True, "Disabled": False}


def parse_smi_csv(text: str) -> tuple[str | None, list[Gpu]]:
    """`nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap[,mig.mode.current]
    --format=csv,noheader`: the driver and the GPUs. With a header line (`--format=csv`), the
    columns are found by name, in any order and among others."""
    driver, gpus = None, []
    positions = {column: index for index, column in enumerate(CSV_COLUMNS)}
    for line in _lines(text):
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
        gpus.append(Gpu(row["name"], int(memory.group(1)) if memory else None, cc,
                        MIG_MODES.get(row.get("mig.mode.current", ""))))
    return driver, gpus


_SMI_DRIVER = r"(?:Driver Version|KMD Version):\s*(?P<driver>\d+(?:\.\d+)+)"
_SMI_CUDA = r"CUDA (?:UMD )?Version:\s*(?P<cuda>\S+)"
_SMI_MEMORY = r"(?P<used>\d+)MiB\s*/\s*(?P<total>\d+)MiB"
PERSISTENCE_MODES = ("On", "Off", "N/A")


def _cuda_version(text: str | None) -> str | None:
    """"12.8"; None for "N/A", "ERR!" or "Not Found"."""
    return text if text and re.fullmatch(r"\d+\.\d+", text) else None


def _table_gpu_name(line: str) -> str | None:
    """The GPU's name on the first line of its block: "|   0  NVIDIA H100 80GB HBM3          On  |",
    Jetson's "|   0  Orin (nvgpu)   N/A  |", an older table's "|   0  Tesla P4            Off  |": the
    first cell is an index, the name and the persistence mode, two or more spaces before the mode."""
    first, bar, _ = line.removeprefix("|").partition("|")
    if not line.startswith("|") or not bar:
        return None
    index, _, rest = first.strip().partition(" ")
    name, gap, mode = rest.strip().rpartition("  ")
    if not (index.isascii() and index.isdigit()) or not gap or mode not in PERSISTENCE_MODES or not name.strip():
        return None
    return name.strip()


def parse_smi_table(text: str) -> SmiReport:
    """The plain `nvidia-smi` table: driver, the driver's CUDA version, and the GPUs (names and
    memory; the table has no compute capability). R610+ calls them KMD and CUDA UMD Version; tables
    before R410 print no CUDA version; a table pasted inside a log may be indented."""
    lines = [line.strip() for line in _lines(text)]
    text = "\n".join(lines)
    driver = re.search(_SMI_DRIVER, text)
    cuda = re.search(_SMI_CUDA, text)
    gpus: list[Gpu] = []
    for i, line in enumerate(lines):
        name = _table_gpu_name(line)
        if name:
            memory = re.search(_SMI_MEMORY, lines[i + 1]) if i + 1 < len(lines) else None
            # The block's third line ends with the MIG mode: Enabled, Disabled or N/A.
            last_cell = lines[i + 2].strip("|").split("|")[-1].strip() if i + 2 < len(lines) else ""
            gpus.append(Gpu(name, int(memory.group("total")) if memory else None, None, MIG_MODES.get(last_cell)))
    return (driver.group("driver") if driver else None), _cuda_version(cuda.group("cuda") if cuda else None), gpus


def parse_smi_query(text: str) -> SmiReport:
    """`nvidia-smi -q`: driver, CUDA version (R410+), and per GPU name, brand, memory, MIG mode."""
    lines = _lines(text)
    text = "\n".join(lines)
    driver = re.search(r"^Driver Version\s*:\s*(\d+(?:\.\d+)+)", text, re.MULTILINE)
    cuda = re.search(r"^CUDA Version\s*:\s*(\S+)", text, re.MULTILINE)
    gpus: list[Gpu] = []
    section = ""
    for raw in lines:
        key, sep, value = (part.strip() for part in raw.partition(":"))
        if not sep:
            section = key
            continue
        if key == "Product Name":
            gpus.append(Gpu(value))
        elif not gpus:
            continue
        elif key == "Product Brand":
            gpus[-1].brand = value.replace(" ", "").lower() or None
        elif key == "Total" and section == "FB Memory Usage" and (memory := re.match(r"(\d+)\s*MiB", value)):
            gpus[-1].memory_mib = int(memory.group(1))
        elif key == "Current" and section == "MIG Mode":
            gpus[-1].mig = MIG_MODES.get(value)
    return (driver.group(1) if driver else None), _cuda_version(cuda.group(1) if cuda else None), gpus


def parse_smi_xml(text: str) -> SmiReport:
    """`nvidia-smi -q -x`: driver, CUDA version, and per GPU name, memory, MIG mode."""
    import xml.etree.ElementTree as ElementTree  # only for this rarely used source

    try:
        root = ElementTree.fromstring(text)
    except (ElementTree.ParseError, ValueError):
        return None, None, []
    driver = root.findtext("driver_version")
    cuda = root.findtext("cuda_version")
    gpus = []
    for gpu in root.findall("gpu"):
        total = re.match(r"(\d+)", gpu.findtext("fb_memory_usage/total") or "")
        mig = gpu.findtext("mig_mode/current_mig")
        brand = (gpu.findtext("product_brand") or "").replace(" ", "").lower()
        gpus.append(Gpu(gpu.findtext("product_name") or "unknown", int(total.group(1)) if total else None, None,
                        MIG_MODES.get(mig or ""), brand or None))
    return driver, _cuda_version(cuda), gpus


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




# -- recordings: what each source printed ---------------------------------------------------------

SMI_FIELDS = ("name", "driver_version", "memory.total", "compute_cap", "mig.mode.current")
WSL_SMI = "/usr/lib/wsl/lib/nvidia-smi"  # WSL2 puts the Windows driver's tools here, often off PATH


class RecordingInvalid(ValueError):
    """A recording that cannot be judged; one line per problem, each naming the file and field."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def _nvml_recording() -> str | None:
    """NVML's answers as nvml.json, or None without nvidia-ml-py."""
    try:
        import pynvml  # type: ignore[import-untyped]  # nvidia-ml-py (no type information); optional
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return json.dumps({"error": str(exc)})
    def text(value: Any) -> Any:  # old bindings answer bytes
        return value.decode() if isinstance(value, bytes) else value

    brands = {getattr(pynvml, name): name.removeprefix("NVML_BRAND_").replace("NVIDIA_", "").replace("_", "").lower()
              for name in dir(pynvml) if name.startswith("NVML_BRAND_") and name != "NVML_BRAND_COUNT"}
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            try:
                mig = pynvml.nvmlDeviceGetMigMode(handle)[0] == 1
            except pynvml.NVMLError:
                mig = None
            gpus.append({"name": text(pynvml.nvmlDeviceGetName(handle)),
                         "memory_mib": pynvml.nvmlDeviceGetMemoryInfo(handle).total // 2**20,
                         "compute_capability": f"{major}.{minor}", "mig": mig,
                         "brand": brands.get(pynvml.nvmlDeviceGetBrand(handle))})
        return json.dumps({"driver": text(pynvml.nvmlSystemGetDriverVersion()),
                           "cuda_driver_version": pynvml.nvmlSystemGetCudaDriverVersion_v2(), "gpus": gpus})
    except pynvml.NVMLError as exc:
        return json.dumps({"error": str(exc)})
    finally:
        pynvml.nvmlShutdown()


def _smi_recording(smi: str) -> dict[str, str]:
    """nvidia-smi's CSV query (retried without compute_cap, which R470 and older do not know) and
    its XML report, each as printed (stdout and stderr)."""
    import subprocess

    def run(*args: str) -> tuple[int, str]:
        try:
            done = subprocess.run([smi, *args], capture_output=True, text=True, errors="replace", timeout=10)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return -1, f"{smi}: {exc}"
        return done.returncode, done.stdout + done.stderr

    fields = list(SMI_FIELDS)
    status, csv = run(f"--query-gpu={','.join(fields)}", "--format=csv")
    if status != 0 and "compute_cap" in csv:
        fields.remove("compute_cap")
        status, csv = run(f"--query-gpu={','.join(fields)}", "--format=csv")
    files = {"nvidia-smi.csv": csv}
    if status == 0:
        files["nvidia-smi.xml"] = run("-q", "-x")[1]
    else:  # the plain table, or every line of the error (a driver/library mismatch spans two)
        files["nvidia-smi.txt"] = run()[1]
    return files


def record(root: Path = Path("/")) -> dict[str, str]:
    """Run every source on this machine; what each printed, under its recording's file name."""
    host = {"arch": platform.machine(), "python": platform.python_version(),
            "glibc": " ".join(platform.libc_ver()).strip(), "kernel_release": platform.release(),
            "in_container": (root / ".dockerenv").exists() or (root / "run/.containerenv").exists()
            or bool(os.environ.get("container")),
            "wsl": (root / "dev/dxg").exists() or "microsoft-standard-wsl" in platform.release().lower(),
            "container_cuda": _container_cuda(root), "packages": installed_versions(PACKAGES),
            "memlock": list(_limit(resource.RLIMIT_MEMLOCK)), "nofile": list(_limit(resource.RLIMIT_NOFILE))}
    try:
        stat = os.statvfs(root / "dev/shm")
        host["shm_bytes"] = stat.f_frsize * stat.f_blocks
    except OSError:
        pass
    files = {"host.json": json.dumps(host)}
    for name, path in (("os-release", "etc/os-release"), ("proc-driver-nvidia-version", "proc/driver/nvidia/version")):
        try:
            files[name] = (root / path).read_text(errors="replace")
        except OSError:
            pass
    linux_driver = (root / "dev/nvidiactl").exists() or (root / "proc/driver/nvidia").exists()
    if not linux_driver and not (root / "dev/dxg").exists():
        return files  # no driver loaded: NVML and nvidia-smi could only fail, slowly
    nvml = _nvml_recording()
    if nvml is not None:
        files["nvml.json"] = nvml
    if nvml is None or "error" in json.loads(nvml):
        import shutil

        wsl_smi = root / WSL_SMI.lstrip("/")
        smi = shutil.which("nvidia-smi") or (str(wsl_smi) if wsl_smi.exists() else None)
        if smi:
            files.update(_smi_recording(smi))
    return files


def gather(root: Path = Path("/")) -> HostFacts:
    """Everything the doctor judges, from this machine."""
    return interpret(record(root), "this host")


def from_recording(directory: Path) -> HostFacts:
    """Facts recorded on another machine: the files its sources printed (see `record`). Raises
    RecordingInvalid for a file that is not text a tool printed, or a folder with none."""
    files: dict[str, str] = {}
    problems: list[str] = []
    for name in RECORDING_FILES:
        path = directory / name
        if os.path.lexists(path):  # a dangling or looping link is there, and unreadable
            text = _recorded_text(path, problems)
            if text is not None:
                files[name] = text
    if not files and not problems:
        problems.append(f"{directory}: no recorded file (expected {', '.join(RECORDING_FILES)}); `dynamo doctor"
                        f" --record DIR` writes them")
    if problems:
        raise RecordingInvalid(problems)
    return interpret(files, str(directory))


def _recorded_text(path: Path, problems: list[str]) -> str | None:
    """One recorded file's text, or None with the reason in `problems`."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            problems.append(f"{path}: not a file; record the tool's output into a file of that name")
            return None
        with path.open("rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        problems.append(f"{path}: cannot be read ({exc.strerror})")
        return None
    if len(data) > MAX_FILE_BYTES:
        problems.append(f"{path}: larger than {MAX_FILE_BYTES // 2**20} MiB, more than any GPU tool prints")
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.append(f"{path}: not UTF-8 text (byte {exc.start}); record the tool's output as text")
        return None
    if "\x00" in text:
        problems.append(f"{path}: a NUL byte at byte {data.index(0)}: not text a tool printed; record the tool's"
                        f" output as text")
        return None
    return text


# -- the interpreter -------------------------------------------------------------------------------

RECORDING_FILES = ("host.json", "os-release", "proc-driver-nvidia-version", "nvml.json", "nvidia-smi.csv",
                   "nvidia-smi.xml", "nvidia-smi-q.txt", "nvidia-smi.txt")
# Bounds no real host exceeds: what lies beyond them is a corrupt or hostile recording, refused.
MAX_FILE_BYTES = 4 * 2**20  # an 8-GPU `nvidia-smi -q -x` report is about 100 KB
MAX_GPUS = 64  # the largest single hosts have 16 (DGX-2, HGX B300 has 8)
MAX_NAME = 96  # NVML_DEVICE_NAME_V2_BUFFER_SIZE: NVML's names fit in 96 bytes
MAX_MEMORY_MIB = 2**22  # 4 TiB, over ten times the largest GPU's memory (B300: 288 GB)
DRIVER_VERSION = r"\d{2,3}(?:\.\d{1,3}){1,2}"  # "580.95.05"; under WSL2 the Windows driver's "555.99"
CUDA_VERSION = r"\d{1,2}\.\d{1,2}"  # "12.8"
COMPUTE_CAPABILITY = r"\d{1,2}\.\d"  # "9.0", "12.1"


def _whole(low: int) -> Callable[[object], bool]:
    return lambda value: type(value) is int and value >= low


def _limit_pair(value: object) -> bool:
    return value is None or (isinstance(value, list) and len(value) == 2 and all(_whole(-1)(v) for v in value))


def _packages(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and (v is None or isinstance(v, str))
                                           for k, v in value.items())


_string = lambda value: isinstance(value, str)  # noqa: E731
_flag = lambda value: isinstance(value, bool)  # noqa: E731
_LIMIT = "[soft, hard] whole numbers (-1 for unlimited)"
HOST_FIELDS: dict[str, tuple[Callable[[Any], object], str]] = {
    "arch": (_string, "a string such as \"x86_64\""), "os_id": (_string, "a string"),
    "os_version": (_string, "a string"), "os_name": (_string, "a string"),
    "in_container": (_flag, "true or false"),
    "python": (_string, "a version string such as \"3.12.3\""), "glibc": (_string, "a string"),
    "container_cuda": (lambda value: value is None or (isinstance(value, str) and re.fullmatch(CUDA_VERSION, value)),
                       "a CUDA version such as \"12.9\" or null"),
    "packages": (_packages, "a table of package name -> version string or null"),
    "shm_bytes": (lambda value: value is None or _whole(0)(value), "a whole number of bytes (0 or more) or null"),
    "memlock": (_limit_pair, _LIMIT), "nofile": (_limit_pair, _LIMIT),
    "kernel_release": (_string, "a string such as \"6.8.0-45-generic\""),
    "wsl": (_flag, "true or false"),
}


def _shown(value: object) -> str:
    """A value for a one-line message: scalars as JSON, cut short; containers by their kind."""
    if isinstance(value, (list, dict)):
        return f"a JSON {'array' if isinstance(value, list) else 'object'}"
    return json.dumps(value)[:60]


def _json(files: dict[str, str], name: str, source: str, problems: list[str]) -> dict[str, Any] | None:
    if name not in files:
        return None
    try:
        data = json.loads(files[name])
    except ValueError as exc:
        problems.append(f"{source}/{name}: not JSON ({exc})")
        return None
    except RecursionError:
        problems.append(f"{source}/{name}: JSON nested too deep; a recording is a flat object")
        return None
    if not isinstance(data, dict):
        problems.append(f"{source}/{name}: expected a JSON object, got {type(data).__name__}")
        return None
    return data


def _host_fields(host: dict[str, Any], where: str, problems: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, value in host.items():
        if key not in HOST_FIELDS:
            problems.append(f"{where}: {_shown(key)}: unknown field; expected one of {', '.join(HOST_FIELDS)}")
            continue
        valid, expected = HOST_FIELDS[key]
        if not valid(value):
            problems.append(f"{where}: {key}: expected {expected}, got {_shown(value)}")
        else:
            values[key] = tuple(value) if key in ("memlock", "nofile") and value is not None else value
    return values


class GpuReading(Record):
    """What one GPU source said: the driver, the newest CUDA it supports, the GPUs."""

    file: str  # the recording's file name: nvml.json, nvidia-smi.csv, ...
    driver: str | None
    cuda: str | None
    gpus: list[Gpu]


def _nvml(nvml: dict[str, Any], where: str, problems: list[str]) -> GpuReading | None:
    """nvml.json's driver, CUDA version and GPUs; None when NVML failed (its "error"). Checks the
    shape; `_implausible` checks the values, as for every source."""
    if "error" in nvml:
        return None
    before = len(problems)
    driver, cuda = nvml.get("driver"), nvml.get("cuda_driver_version")
    if not isinstance(driver, str):
        problems.append(f"{where}: driver: expected a driver version such as \"580.95.05\", got {_shown(driver)}")
    if not (type(cuda) is int and 1000 <= cuda < 100_000):
        problems.append(f"{where}: cuda_driver_version: expected NVML's number such as 12080, got {_shown(cuda)}")
    items = nvml.get("gpus", [])
    if not isinstance(items, list) or len(items) > MAX_GPUS:
        problems.append(f"{where}: gpus: expected a list of at most {MAX_GPUS} GPUs, got {_shown(items)}"
                        + (f" of {len(items)}" if isinstance(items, list) else ""))
        items = []
    gpus = [gpu for i, item in enumerate(items) if (gpu := _nvml_gpu(item, f"{where}: gpus[{i}]", problems))]
    if len(problems) > before or not isinstance(cuda, int):  # (checked above: the int is for the type checker)
        return None
    return GpuReading("nvml.json", driver, cuda_from_int(cuda), gpus)


_NVML_GPU_FIELDS = {"compute_capability": (str, "a string such as \"9.0\""), "memory_mib": (int, "a whole number"),
                    "mig": (bool, "true, false or null"), "brand": (str, "a string such as \"tesla\"")}


def _nvml_gpu(item: object, field: str, problems: list[str]) -> Gpu | None:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        problems.append(f"{field}: expected an object with a \"name\" string")
        return None
    for key, (kind, expected) in _NVML_GPU_FIELDS.items():
        value = item.get(key)
        if value is not None and (type(value) is not kind):
            problems.append(f"{field}.{key}: expected {expected}, got {_shown(value)}")
            return None
    brand = item.get("brand")
    return Gpu(item["name"], item.get("memory_mib"), item.get("compute_capability"), item.get("mig"),
               brand.lower() if brand else None)


def _said(text: str) -> str:
    """What a failing tool printed, every line (a driver/library mismatch spans two)."""
    lines = [line.strip() for line in _lines(text) if line.strip()]
    return " / ".join(lines[:4])


# nvidia-smi's reports, in the order they are trusted, with their parsers
SMI_REPORTS: dict[str, Callable[[str], SmiReport]] = {
    "nvidia-smi.xml": parse_smi_xml, "nvidia-smi-q.txt": parse_smi_query, "nvidia-smi.txt": parse_smi_table}


def interpret(files: dict[str, str], source: str) -> HostFacts:
    """The one judge of what the sources printed, live or recorded. Raises RecordingInvalid for a
    recording that is malformed or absurd, each problem naming the file and field."""
    problems = _overlong(files, source)
    host = _json(files, "host.json", source, problems) or {}
    facts = HostFacts(**_host_fields(host, f"{source}/host.json", problems))
    nvml = _json(files, "nvml.json", source, problems)
    nvml_reading = _nvml(nvml, f"{source}/nvml.json", problems) if nvml is not None else None
    if problems:
        raise RecordingInvalid(problems)
    set_os(facts, files.get("os-release", ""))
    facts.kernel_module = parse_proc_version(files.get("proc-driver-nvidia-version", ""))
    reports = {name: parse(files[name]) for name, parse in SMI_REPORTS.items() if files.get(name)}
    errors = [f"NVML: {nvml.get('error')}"] if nvml is not None and nvml_reading is None else []
    reading = nvml_reading or _smi_reading(files.get("nvidia-smi.csv"), reports)
    if reading is not None:
        _take(facts, reading)
    else:
        errors += [f"nvidia-smi: {_said(text)}" for text in (files.get("nvidia-smi.csv"), files.get("nvidia-smi.txt"))
                   if text and _said(text)]
        if facts.kernel_module:
            facts.driver, facts.gpu_source, facts.gpu_file = facts.kernel_module, "proc", "proc-driver-nvidia-version"
    _fill_brands(facts.gpus, reports)
    if facts.gpu_source in ("nvidia-smi", "nvml") and not facts.gpus:
        errors.append(f"{facts.gpu_source}: no GPU listed")
    facts.gpu_error = "; ".join(errors) or None
    problems = _unread_table(files, reports, source) + _implausible(facts, source)
    if problems:
        raise RecordingInvalid(problems)
    return facts


LINE_FILES = ("os-release", "proc-driver-nvidia-version", "nvidia-smi.csv", "nvidia-smi-q.txt", "nvidia-smi.txt")


def _overlong(files: dict[str, str], source: str) -> list[str]:
    """A line longer than any tool prints, in a file read line by line."""
    problems = []
    for name in LINE_FILES:
        number, line = next(((n, line) for n, line in enumerate(files.get(name, "").splitlines(), 1)
                             if len(line) > MAX_LINE), (0, ""))
        if number:
            problems.append(f"{source}/{name}: line {number} has {len(line):,} characters; no tool prints a line over"
                            f" {MAX_LINE}")
    return problems


def _smi_reading(csv: str | None, reports: dict[str, tuple[str | None, str | None, list[Gpu]]]) -> GpuReading | None:
    """nvidia-smi's answer: its CSV query (with the CUDA version from a report, which alone says it),
    else the most trusted report that names a driver."""
    driver, gpus = parse_smi_csv(csv) if csv else (None, [])
    if driver:
        return GpuReading("nvidia-smi.csv", driver, next((cuda for _, cuda, _ in reports.values() if cuda), None), gpus)
    return next((GpuReading(name, *report) for name, report in reports.items() if report[0]), None)


def _take(facts: HostFacts, reading: GpuReading) -> None:
    facts.driver, facts.driver_cuda, facts.gpus = reading.driver, reading.cuda, reading.gpus
    facts.gpu_source = "nvml" if reading.file == "nvml.json" else "nvidia-smi"
    facts.gpu_file = reading.file


def _fill_brands(gpus: list[Gpu], reports: dict[str, tuple[str | None, str | None, list[Gpu]]]) -> None:
    """The brand, where only another report of the same GPUs says it."""
    for _, _, others in reports.values():
        if len(others) == len(gpus):
            for gpu, other in zip(gpus, others):
                gpu.brand = gpu.brand or other.brand


def _unread_table(files: dict[str, str], reports: dict[str, SmiReport], source: str) -> list[str]:
    """An nvidia-smi table (its borders are there) with no driver in it: translated or mangled, it would
    be judged as a host without a driver."""
    table = files.get("nvidia-smi.txt", "")
    bordered = any(line.strip().startswith(("+--", "|==")) for line in _lines(table))
    if bordered and not reports.get("nvidia-smi.txt", (None,))[0]:
        return [f"{source}/nvidia-smi.txt: a table with no \"Driver Version\": not nvidia-smi's own (English) table;"
                f" record `LC_ALL=C nvidia-smi` as printed"]
    return []


def gpu_field(file: str | None, index: int, key: str) -> str:
    """A GPU's field as its recording names it."""
    if file == "nvml.json":
        return f"gpus[{index}].{key}"
    return f"GPU {index} {key.replace('_', ' ').replace(' mib', '')}"


def _implausible(facts: HostFacts, source: str) -> list[str]:
    """Values no real host reports, each naming the file and field."""
    where = f"{source}/{facts.gpu_file}"
    problems = []
    if facts.driver and not re.fullmatch(DRIVER_VERSION, facts.driver):
        problems.append(f"{where}: driver: {_shown(facts.driver)} is not an NVIDIA driver version such as 580.95.05")
    if facts.driver_cuda and not re.fullmatch(CUDA_VERSION, facts.driver_cuda):
        problems.append(f"{where}: CUDA version: {_shown(facts.driver_cuda)} is not a CUDA version such as 12.8")
    if len(facts.gpus) > MAX_GPUS:
        return [*problems, f"{where}: {len(facts.gpus)} GPUs; no host has more than {MAX_GPUS}"]
    for index, gpu in enumerate(facts.gpus):
        problems += [f"{where}: {gpu_field(facts.gpu_file, index, key)}: {problem}"
                     for key, problem in _implausible_gpu(gpu)]
    return problems


def _implausible_gpu(gpu: Gpu) -> list[tuple[str, str]]:
    """(field, problem) for each value of one GPU that no real GPU reports."""
    problems = []
    if len(gpu.name) > MAX_NAME:
        problems.append(("name", f"{len(gpu.name)} characters; NVML's names are shorter than {MAX_NAME}"))
    if gpu.memory_mib is not None and not 0 <= gpu.memory_mib <= MAX_MEMORY_MIB:
        problems.append(("memory_mib", f"{gpu.memory_mib} MiB; a GPU has between 0 and 4 TiB"))
    if gpu.compute_capability is not None and not re.fullmatch(COMPUTE_CAPABILITY, gpu.compute_capability):
        problems.append(("compute_capability", f"expected MAJOR.MINOR such as \"9.0\", got"
                                               f" {_shown(gpu.compute_capability)}"))
    return problems


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


