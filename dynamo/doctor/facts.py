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
    brand: str | None = None  # NVML's brand as the container toolkit spells it: "tesla", "geforce"


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
    kernel_release: str = ""  # uname -r
    wsl: bool = False  # Windows Subsystem for Linux 2: the GPU is the Windows driver's, through /dev/dxg

    @property
    def jetson(self) -> bool:
        """An integrated Jetson GPU (L4T): nvidia-smi names it "Orin (nvgpu)"."""
        return any("(nvgpu)" in gpu.name for gpu in self.gpus)

    def to_json(self) -> dict:
        return asdict(self) | {"jetson": self.jetson}


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


# Compiled on first use (re keeps them): a host without nvidia-smi never needs them.
_SMI_DRIVER = r"(?:Driver Version|KMD Version):\s*(?P<driver>\d+(?:\.\d+)+)"
_SMI_CUDA = r"CUDA (?:UMD )?Version:\s*(?P<cuda>\S+)"
# "|   0  NVIDIA H100 80GB HBM3          On  |", Jetson's "|   0  Orin (nvgpu)   N/A  |", or on an older
# table "|   0  Tesla P4            Off  |".
_SMI_GPU = r"^\|\s+(?P<index>\d+)\s+(?P<name>.+?)\s{2,}(?:On|Off|N/A)\s+\|"
_SMI_MEMORY = r"(?P<used>\d+)MiB\s*/\s*(?P<total>\d+)MiB"


def _cuda_version(text: str | None) -> str | None:
    """"12.8"; None for "N/A", "ERR!" or "Not Found"."""
    return text if text and re.fullmatch(r"\d+\.\d+", text) else None


def parse_smi_table(text: str) -> tuple[str | None, str | None, list[Gpu]]:
    """The plain `nvidia-smi` table: driver, the driver's CUDA version, and the GPUs (names and
    memory; the table has no compute capability). R610+ calls them KMD and CUDA UMD Version; tables
    before R410 print no CUDA version; a table pasted inside a log may be indented."""
    driver = re.search(_SMI_DRIVER, text)
    cuda = re.search(_SMI_CUDA, text)
    gpus: list[Gpu] = []
    lines = [line.strip() for line in text.splitlines()]
    for i, line in enumerate(lines):
        match = re.match(_SMI_GPU, line)
        if match:
            memory = re.search(_SMI_MEMORY, lines[i + 1]) if i + 1 < len(lines) else None
            # The block's third line ends with the MIG mode: Enabled, Disabled or N/A.
            last_cell = lines[i + 2].strip("|").split("|")[-1].strip() if i + 2 < len(lines) else ""
            mig = {"Enabled": True, "Disabled": False}.get(last_cell)
            gpus.append(Gpu(match.group("name").strip(), int(memory.group("total")) if memory else None, None, mig))
    return (driver.group("driver") if driver else None), _cuda_version(cuda.group("cuda") if cuda else None), gpus


def parse_smi_query(text: str) -> tuple[str | None, str | None, list[Gpu]]:
    """`nvidia-smi -q`: driver, CUDA version (R410+), and per GPU name, brand, memory, MIG mode."""
    driver = re.search(r"^Driver Version\s*:\s*(\d+(?:\.\d+)+)", text, re.MULTILINE)
    cuda = re.search(r"^CUDA Version\s*:\s*(\S+)", text, re.MULTILINE)
    gpus: list[Gpu] = []
    section = ""
    for raw in text.splitlines():
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
            gpus[-1].mig = {"Enabled": True, "Disabled": False}.get(value)
    return (driver.group(1) if driver else None), _cuda_version(cuda.group(1) if cuda else None), gpus


def parse_smi_xml(text: str) -> tuple[str | None, str | None, list[Gpu]]:
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
                        {"Enabled": True, "Disabled": False}.get(mig or ""), brand or None))
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
        import pynvml  # nvidia-ml-py; optional
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return json.dumps({"error": str(exc)})
    text = lambda value: value.decode() if isinstance(value, bytes) else value  # noqa: E731 (old bindings)
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
    """Facts recorded on another machine: the files its sources printed (see `record`)."""
    files, problems = {}, []
    for path in sorted(directory.iterdir()) if directory.is_dir() else []:
        if path.name in RECORDING_FILES and path.is_file():
            try:
                files[path.name] = path.read_bytes().decode("utf-8")
            except UnicodeDecodeError as exc:
                problems.append(f"{directory / path.name}: not UTF-8 text (byte {exc.start}); record the tool's output"
                                f" as text")
            except OSError as exc:
                problems.append(f"{directory / path.name}: cannot be read ({exc.strerror})")
    if problems:
        raise RecordingInvalid(problems)
    return interpret(files, str(directory))


# -- the interpreter -------------------------------------------------------------------------------

RECORDING_FILES = ("host.json", "os-release", "proc-driver-nvidia-version", "nvml.json", "nvidia-smi.csv",
                   "nvidia-smi.xml", "nvidia-smi-q.txt", "nvidia-smi.txt")
_LIMIT = "[soft, hard] whole numbers (-1 for unlimited)"
HOST_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "arch": ((str,), "a string such as \"x86_64\""), "os_id": ((str,), "a string"), "os_version": ((str,), "a string"),
    "os_name": ((str,), "a string"), "in_container": ((bool,), "true or false"),
    "python": ((str,), "a version string such as \"3.12.3\""), "glibc": ((str,), "a string"),
    "container_cuda": ((str, type(None)), "a CUDA version such as \"12.9\" or null"),
    "packages": ((dict,), "a table of package name -> version string or null"),
    "shm_bytes": ((int, type(None)), "a whole number of bytes or null"),
    "memlock": ((list, type(None)), _LIMIT), "nofile": ((list, type(None)), _LIMIT),
    "kernel_release": ((str,), "a string such as \"6.8.0-45-generic\""),
    "wsl": ((bool,), "true or false"),
}


def _json(files: dict[str, str], name: str, source: str, problems: list[str]) -> dict | None:
    if name not in files:
        return None
    try:
        data = json.loads(files[name])
    except ValueError as exc:
        problems.append(f"{source}/{name}: not JSON ({exc})")
        return None
    if not isinstance(data, dict):
        problems.append(f"{source}/{name}: expected a JSON object, got {type(data).__name__}")
        return None
    return data


def _host_fields(host: dict, where: str, problems: list[str]) -> dict:
    values = {}
    for key, value in host.items():
        if key not in HOST_FIELDS:
            problems.append(f"{where}: {key}: unknown field; expected one of {', '.join(HOST_FIELDS)}")
            continue
        types_, expected = HOST_FIELDS[key]
        ok = isinstance(value, types_) and not (isinstance(value, bool) and bool not in types_)
        if ok and key in ("memlock", "nofile") and value is not None:
            ok = len(value) == 2 and all(type(v) is int for v in value)
            value = tuple(value) if ok else value
        if ok and key == "packages":
            ok = all(isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in value.items())
        if ok and key == "container_cuda" and value is not None:
            ok = re.fullmatch(r"\d+\.\d+", value) is not None
        if ok:
            values[key] = value
        else:
            problems.append(f"{where}: {key}: expected {expected}, got {json.dumps(value)[:60]}")
    return values


def _nvml(nvml: dict, where: str, problems: list[str]) -> tuple[str, str, list[Gpu]] | None:
    """nvml.json's driver, CUDA version and GPUs; None when NVML failed (its "error")."""
    if "error" in nvml:
        return None
    before = len(problems)
    driver, cuda = nvml.get("driver"), nvml.get("cuda_driver_version")
    if not isinstance(driver, str) or not re.fullmatch(r"\d+(\.\d+)+", driver):
        problems.append(f"{where}: driver: expected a driver version such as \"580.95.05\", got {json.dumps(driver)}")
    if type(cuda) is not int or cuda <= 0:
        problems.append(f"{where}: cuda_driver_version: expected NVML's number such as 12080, got {json.dumps(cuda)}")
    gpus = []
    items = nvml.get("gpus", [])
    if not isinstance(items, list):
        problems.append(f"{where}: gpus: expected a list, got {json.dumps(items)[:60]}")
        items = []
    for i, item in enumerate(items):
        field = f"{where}: gpus[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            problems.append(f"{field}: expected an object with a \"name\" string")
            continue
        cc, memory, mig, brand = (item.get(k) for k in ("compute_capability", "memory_mib", "mig", "brand"))
        if cc is not None and not (isinstance(cc, str) and re.fullmatch(r"\d+\.\d+", cc)):
            problems.append(f"{field}.compute_capability: expected MAJOR.MINOR such as \"9.0\", got {json.dumps(cc)}")
        if memory is not None and type(memory) is not int:
            problems.append(f"{field}.memory_mib: expected a whole number, got {json.dumps(memory)}")
        if mig is not None and not isinstance(mig, bool):
            problems.append(f"{field}.mig: expected true, false or null, got {json.dumps(mig)}")
        if brand is not None and not isinstance(brand, str):
            problems.append(f"{field}.brand: expected a string such as \"tesla\", got {json.dumps(brand)}")
        gpus.append(Gpu(item["name"], memory, cc, mig, brand.lower() if isinstance(brand, str) else None))
    if len(problems) > before:
        return None
    return driver, cuda_from_int(cuda), gpus


def _said(text: str) -> str:
    """What a failing tool printed, every line (a driver/library mismatch spans two)."""
    lines = [line.strip() for line in text.replace("\x00", "").splitlines() if line.strip()]
    return " / ".join(lines[:4])


def interpret(files: dict[str, str], source: str) -> HostFacts:
    """The one judge of what the sources printed, live or recorded. Raises RecordingInvalid."""
    problems: list[str] = []
    host = _json(files, "host.json", source, problems) or {}
    facts = HostFacts(**_host_fields(host, f"{source}/host.json", problems))
    nvml = _json(files, "nvml.json", source, problems)
    nvml_facts = _nvml(nvml, f"{source}/nvml.json", problems) if nvml is not None else None
    if problems:
        raise RecordingInvalid(problems)
    if "os-release" in files:
        set_os(facts, files["os-release"])
    if "proc-driver-nvidia-version" in files:
        facts.kernel_module = parse_proc_version(files["proc-driver-nvidia-version"])
    table, csv = files.get("nvidia-smi.txt"), files.get("nvidia-smi.csv")
    reports = [parse_smi_xml(files["nvidia-smi.xml"]) if "nvidia-smi.xml" in files else (None, None, []),
               parse_smi_query(files["nvidia-smi-q.txt"]) if "nvidia-smi-q.txt" in files else (None, None, []),
               parse_smi_table(table) if table else (None, None, [])]  # in the order they are trusted
    csv_facts = parse_smi_csv(csv) if csv else (None, [])
    errors = []
    if nvml is not None and nvml_facts is None:
        errors.append(f"NVML: {nvml.get('error')}")
    if nvml_facts is not None:
        facts.driver, facts.driver_cuda, facts.gpus = nvml_facts
        facts.gpu_source = "nvml"
    elif csv_facts[0]:
        facts.driver, facts.gpus = csv_facts
        facts.driver_cuda = next((cuda for _, cuda, _ in reports if cuda), None)
        facts.gpu_source = "nvidia-smi"
    elif report := next((r for r in reports if r[0]), None):
        facts.driver, facts.driver_cuda, facts.gpus = report
        facts.gpu_source = "nvidia-smi"
    else:
        errors += [f"nvidia-smi: {_said(text)}" for text in (csv, table) if text and _said(text)]
        if facts.kernel_module:
            facts.driver, facts.gpu_source = facts.kernel_module, "proc"
    for _, _, others in reports:  # the brand, where only another report of the same GPUs says it
        if len(others) == len(facts.gpus):
            for gpu, other in zip(facts.gpus, others):
                gpu.brand = gpu.brand or other.brand
    if facts.gpu_source in ("nvidia-smi", "nvml") and not facts.gpus:
        errors.append(f"{facts.gpu_source}: no GPU listed")
    facts.gpu_error = "; ".join(errors) or None
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


