"""The check for a lent GPU machine: the doctor on a real GPU host, llama-cpp-python compiled with CUDA
for that GPU's architecture alone, and the tiny GGUF (tests/tiny_gguf.py) served on the GPU through
the frontend and the llama.cpp worker, with the tokens/s, time to first token and proof that the GPU
did the work. The GPU machine has no network: `prepare` fills .gpu/ here with what it lacks.

Here (with network):  python benchmarks/gpu_check.py prepare
On the GPU machine, the device tool's `run` with
    command:   set -o pipefail; PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py run --out "$OUT" 2>&1 | tee "$OUT/gpu_check.log"
    carry:     [".gpu"]
    timeout_s: 540
`run` stops itself within --budget seconds (default 450; the machine's start is not counted); what
comes back in $OUT: gpu_check.log, doctor.json, doctor-record.tar.gz, build.log, frontend.log, worker.log.
On a machine without a GPU (no nvidia-smi, or --cpu), `run` builds for the CPU and measures the same.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

FOLDER = REPO / ".gpu"
WORK = Path(tempfile.gettempdir()) / "dynamo-gpu-check"
TRAVEL_LIMIT = 64 * 2**20  # the device tool's limit on the working tree plus what is carried
# What the GPU machine's python3 (3.12, x86-64) lacks of the runtime's and the test model's needs
# (the device README's KINDS.md lists what it has), at the versions installed where `prepare` runs;
# typing-extensions too, as pydantic-core needs a newer one than such a machine may have.
CARRIED = ("pydantic", "pydantic-core", "annotated-types", "typing-inspection", "typing-extensions", "gguf",
           "diskcache")
DEVICE_PYTHON = ("--python-version", "3.12", "--implementation", "cp", "--platform", "manylinux_2_28_x86_64",
                 "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64")
# What llama.cpp's CMake build does not read with the options we build with (LLAVA_BUILD=OFF, and
# llama.cpp as a subproject: no tests, tools, examples): paths under the sdist's top folder.
SDIST_UNUSED = (".git/", ".github/", "docker/", "docs/", "examples/", "tests/", "scripts/") + tuple(
    f"vendor/llama.cpp/{part}/" for part in (
        "models", "docs", "media", "examples", "tests", "tools", "gguf-py", "scripts", ".github", ".devops",
        "ci", "pocs", "prompts", "grammars", "requirements", "vendor/miniaudio", "vendor/stb"))
# As templates/Dockerfile.j2 builds llama-cpp-python: no multimodal library, no OpenMP.
LLAMA_CPP_CMAKE = "-DLLAVA_BUILD=OFF -DGGML_OPENMP=OFF"
MODEL = "tiny-llama"


class OutOfTime(Exception):
    pass


class Clock:
    """Elapsed time of the whole run and of each step, against the run's budget."""

    def __init__(self, budget: float) -> None:
        self.start, self.budget = time.monotonic(), budget

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.start)

    def limit(self, reserve: float = 0) -> float:
        """Seconds a step may take and still leave `reserve` for the rest; OutOfTime when none."""
        seconds = self.left() - reserve
        if seconds <= 0:
            raise OutOfTime(f"the budget of {self.budget:.0f} s is spent")
        return seconds

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        began = time.monotonic()
        print(f"[{began - self.start:6.1f} s] {name} ...", flush=True)
        try:
            yield
        finally:
            print(f"[{time.monotonic() - self.start:6.1f} s] {name}: {time.monotonic() - began:.1f} s", flush=True)


def sdist_member_kept(name: str) -> bool:
    """Whether a file of llama-cpp-python's sdist (its path under the top folder) goes to the GPU machine."""
    return not any(name.startswith(prefix) for prefix in SDIST_UNUSED)


def wheel_name_version(path: Path) -> tuple[str, str]:
    from packaging.utils import canonicalize_name, parse_wheel_filename

    name, version, _, _ = parse_wheel_filename(path.name)
    return canonicalize_name(name), str(version)


def llama_cpp_version() -> str:
    """llama-cpp-python's pin in the package's llama_cpp extra (rendered from the support matrix)."""
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["llama_cpp"]
    return next(pin.split("==", 1)[1] for pin in extra if pin.startswith("llama-cpp-python=="))


def size(path: Path) -> int:
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file() and not file.is_symlink())


def mib(count: int) -> str:
    return f"{count / 2**20:.1f} MiB"


def run_quietly(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if done.returncode:
        raise SystemExit(f"error: {' '.join(argv[:4])} ... exited with {done.returncode}:\n{done.stderr[-2000:]}")
    return done


# ----------------------------------------------------------------------------------------------
# prepare: here, with network
# ----------------------------------------------------------------------------------------------

def prepare(folder: Path) -> None:
    clock = Clock(float("inf"))
    wheels = folder / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir(parents=True)
    try:
        pins = [f"{name}=={importlib.metadata.version(name)}" for name in CARRIED]
    except importlib.metadata.PackageNotFoundError as missing:
        raise SystemExit(f"error: {missing} is not installed here, and prepare carries the versions installed where"
                         f" it runs: pip install -e '.[test,llama_cpp]'") from None
    with clock.step(f"wheels for Python 3.12 x86-64: {' '.join(pins)}"):
        run_quietly([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                     *DEVICE_PYTHON, "-d", str(wheels), *pins])
    version = llama_cpp_version()
    original = WORK / "sdist" / f"llama_cpp_python-{version}.tar.gz"
    if not original.exists():
        with clock.step(f"llama-cpp-python {version}'s sdist"):
            run_quietly([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary=:all:",
                         "-d", str(original.parent), f"llama-cpp-python=={version}"])
    for old in folder.glob("llama_cpp_python-*.tar.gz"):
        old.unlink()
    slim = folder / original.name
    with clock.step(f"slimming {original.name}"):
        kept, dropped = slim_sdist(original, slim)
    print(f"  sdist: {mib(original.stat().st_size)} -> {mib(slim.stat().st_size)}"
          f" ({kept} files kept, {dropped} left out)")
    tracked = sum((REPO / name).stat().st_size for name in
                  run_quietly(["git", "ls-files", "-z"], cwd=REPO).stdout.split("\0") if (REPO / name).is_file())
    carried = size(folder)
    print(f"  {folder.relative_to(REPO)}/: {mib(carried)}; the repository's tracked files: {mib(tracked)};"
          f" together {mib(carried + tracked)} of the device tool's {mib(TRAVEL_LIMIT)}")
    if carried + tracked > TRAVEL_LIMIT * 0.75:
        raise SystemExit(f"error: {mib(carried + tracked)} would travel, too close to {mib(TRAVEL_LIMIT)};"
                         f" leave more out of the sdist (SDIST_UNUSED)")


def slim_sdist(original: Path, slim: Path) -> tuple[int, int]:
    """`original` without the files llama.cpp's build does not read; (files kept, files left out)."""
    kept = dropped = 0
    with tarfile.open(original) as source, tarfile.open(slim, "w:gz", compresslevel=9) as target:
        for member in source:
            relative = member.name.partition("/")[2]
            if not sdist_member_kept(relative + ("/" if member.isdir() else "")):
                dropped += member.isfile()
                continue
            kept += member.isfile()
            target.addfile(member, source.extractfile(member) if member.isfile() else None)
    return kept, dropped


# ----------------------------------------------------------------------------------------------
# run: on the GPU machine (or here, on the CPU)
# ----------------------------------------------------------------------------------------------

def run(folder: Path, out: Path, cpu: bool, budget: float, requests: int, tokens: int) -> int:
    clock = Clock(budget)
    out.mkdir(parents=True, exist_ok=True)
    site = WORK / "site"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)]), "PYTHONUNBUFFERED": "1"}
    processes: list[subprocess.Popen] = []
    try:
        with clock.step("installing the carried wheels this Python lacks"):
            install_wheels(folder / "wheels", site, clock)
        with clock.step("dynamo doctor --json and --record"):
            doctor(out, env, clock)
        with clock.step("the worker preflight's own time on this host (it asks the driver every start)"):
            preflight_time(env)
        gpu = None if cpu else gpu_facts()
        arch = None
        if gpu:
            arch = gpu["cmake_arch"]
            print(f"  GPU: {gpu['name']}, compute capability {gpu['compute_cap']} -> CMAKE_CUDA_ARCHITECTURES={arch},"
                  f" driver {gpu['driver_version']}")
        else:
            print("  no GPU asked for (--cpu) or found (no nvidia-smi): building and serving on the CPU")
        with clock.step(f"building llama-cpp-python {llama_cpp_version()} for {'sm_' + arch if arch else 'the CPU'}"):
            build(folder, site, arch, out / "build.log", env, clock)
        with clock.step("writing the tiny GGUF"):
            model = write_model()
        with clock.step("loading it in llama.cpp with every layer offloaded"):
            offload = offload_lines(model, env, clock)
        with clock.step("starting the frontend and the llama.cpp worker"):
            url, worker = serve(model, out, env, processes, clock)
        used = gpu_processes(worker.pid) if gpu else None
        with clock.step(f"{requests} chat completions of up to {tokens} tokens, unstreamed, then streamed"):
            measure(url, requests, tokens, clock)
        if gpu:
            confirmed = all_layers_offloaded(offload) or bool(used)
            print(f"GPU used: {'yes' if confirmed else 'NOT SHOWN'}: llama.cpp's offload lines: "
                  f"{'; '.join(offload) or 'none'}; nvidia-smi's process of the worker: {used or 'not listed'}")
        return 0
    except (OutOfTime, subprocess.TimeoutExpired, TimeoutError) as error:
        print(f"stopped: {error}", flush=True)
        return 1
    except urllib.error.HTTPError as error:
        print(f"error: {error.url}: HTTP {error.code}: {error.read().decode(errors='replace')[:500]}", flush=True)
        return 1
    finally:
        for process in reversed(processes):
            stop(process)
        print(f"[{time.monotonic() - clock.start:6.1f} s] done", flush=True)


def install_wheels(wheels: Path, site: Path, clock: Clock) -> None:
    """pip install --target `site` the carried wheels whose distribution this Python does not have at
    that version and whose tags it can run; the rest are left out, with their reason."""
    from packaging.tags import sys_tags
    from packaging.utils import parse_wheel_filename

    shutil.rmtree(site, ignore_errors=True)
    site.mkdir(parents=True)
    supported = set(sys_tags())
    wanted = []
    for wheel in sorted(wheels.glob("*.whl")):
        name, version = wheel_name_version(wheel)
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed == version:
            print(f"  {name} {version}: installed already")
        elif not supported & set(parse_wheel_filename(wheel.name)[3]):
            print(f"  {name} {version}: not for this Python (installed: {installed})")
        else:
            wanted.append(wheel)
    if wanted:
        run_quietly([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                     "--target", str(site), *map(str, wanted)], timeout=clock.limit())
        print(f"  installed into {site}: {', '.join(' '.join(wheel_name_version(w)) for w in wanted)}")
    sys.path.insert(0, str(site))


def doctor(out: Path, env: dict[str, str], clock: Clock) -> None:
    command = [sys.executable, "-c", "import sys; from dynamo.cli import main; sys.exit(main())", "doctor"]
    done = subprocess.run([*command, "--json"], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=clock.limit())
    (out / "doctor.json").write_text(done.stdout + done.stderr)
    print(f"  doctor --json: exit {done.returncode}, {out / 'doctor.json'}")
    with tempfile.TemporaryDirectory() as scratch:
        recording = Path(scratch) / "doctor-record"
        done = subprocess.run([*command, "--record", str(recording)], capture_output=True, text=True, env=env,
                              cwd=REPO, timeout=clock.limit())
        print("\n".join("  | " + line for line in (done.stdout + done.stderr).splitlines()))
        if not recording.is_dir():
            print(f"  doctor --record: exit {done.returncode}, nothing recorded")
            return
        with tarfile.open(out / "doctor-record.tar.gz", "w:gz") as archive:
            archive.add(recording, "doctor-record")
        print(f"  doctor --record: exit {done.returncode}, {sorted(p.name for p in recording.iterdir())}"
              f" in {out / 'doctor-record.tar.gz'}")


def preflight_time(env: dict[str, str], runs: int = 7) -> None:
    """The mocker worker's preflight in fresh processes: the first judges and writes its plan, the rest read it
    (benchmarks/preflight_speed.py measures it on a machine without a GPU, where nothing asks a driver)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from preflight_speed import in_process_ms

    times = [in_process_ms("dynamo.mocker", {**env, "DYN_SKIP_PREFLIGHT": "0"}) for _ in range(runs)]
    print(f"  preflight: {times[0]:.1f} ms the first time, {statistics.median(times[1:]):.1f} ms with its plan"
          f" (median of {runs - 1})")


def gpu_facts() -> dict[str, str] | None:
    """The first GPU's name, compute capability, CMake architecture and driver; None without nvidia-smi."""
    from dynamo.images import cmake_cuda_architecture

    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    fields = ("name", "compute_cap", "driver_version")
    line = run_quietly([smi, f"--query-gpu={','.join(fields)}", "--format=csv,noheader"]).stdout.splitlines()[0]
    facts = dict(zip(fields, (value.strip() for value in line.split(","))))
    return {**facts, "cmake_arch": cmake_cuda_architecture(facts["compute_cap"])}


def cmake_args(arch: str | None) -> str:
    """llama.cpp's CMake options as our images use them, for the CPU baseline of this machine's
    architecture and, given a CUDA architecture, for that one alone."""
    from dynamo.images import CPU_BASELINES

    machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    if machine not in CPU_BASELINES:
        raise SystemExit(f"error: no CPU baseline for {machine} (dynamo.images.CPU_BASELINES)")
    cuda = f" -DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES={arch}" if arch else ""
    return f"{CPU_BASELINES[machine][1]} {LLAMA_CPP_CMAKE}{cuda}"


def build(folder: Path, site: Path, arch: str | None, log: Path, env: dict[str, str], clock: Clock) -> None:
    """pip install the carried sdist into `site`, compiled with cmake_args(arch). With the machine's
    own scikit-build-core, CMake and ninja where it has them (the GPU machine has no network). From
    fixed directories, not pip's random ones, as the images do: a second run reuses the build."""
    sdist = next(folder.glob("llama_cpp_python-*.tar.gz"), None)
    if sdist is None:
        raise SystemExit(f"error: no llama-cpp-python sdist in {folder}: run `python benchmarks/gpu_check.py prepare`")
    source = WORK / sdist.name.removesuffix(".tar.gz")
    shutil.rmtree(source, ignore_errors=True)
    with tarfile.open(sdist) as archive:
        archive.extractall(WORK, filter="data")  # its one top folder is source.name
    build_env = {**env, "CMAKE_ARGS": cmake_args(arch), "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 1),
                 "SKBUILD_BUILD_DIR": str(WORK / f"build-{arch or 'cpu'}")}
    nvcc = shutil.which("nvcc") or next((str(p) for p in [Path("/usr/local/cuda/bin/nvcc")] if p.exists()), None)
    if arch:
        if nvcc is None:
            raise SystemExit("error: no nvcc on PATH or in /usr/local/cuda/bin: CUDA's compiler is needed")
        build_env["CUDACXX"] = nvcc
        print("  " + run_quietly([nvcc, "--version"]).stdout.strip().splitlines()[-1])
    offline = bool(importlib.util.find_spec("scikit_build_core"))
    if not offline:
        print("  no scikit-build-core here: pip fetches the build's requirements from its index")
    argv = [sys.executable, "-m", "pip", "install", "-v", "--no-deps", "--no-compile", "--target", str(site),
            *(["--no-index", "--no-build-isolation"] if offline else []), str(source)]
    print(f"  CMAKE_ARGS={build_env['CMAKE_ARGS']}")
    with log.open("w") as handle:
        # In a session of its own, so that the compilers go too when the budget runs out.
        build = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, env=build_env, start_new_session=True)
        try:
            returncode = build.wait(clock.limit(reserve=90))
        except subprocess.TimeoutExpired:
            os.killpg(build.pid, signal.SIGKILL)
            build.wait()
            raise OutOfTime("the build did not finish within the budget (90 s kept for serving)") from None
    if returncode:
        tail = log.read_text(errors="replace").splitlines()[-40:]
        raise SystemExit("\n".join([f"error: the build failed (exit {returncode}); the end of {log}:", *tail]))
    print(f"  built; log in {log}")


def write_model() -> Path:
    importlib.invalidate_caches()  # the carried gguf, installed after this started
    import tiny_gguf

    return tiny_gguf.write(WORK / f"{MODEL}.gguf")


def offload_lines(model: Path, env: dict[str, str], clock: Clock) -> list[str]:
    """llama.cpp's own lines about devices and offloaded layers, from loading `model` verbosely."""
    script = ("import sys, llama_cpp; print('llama_supports_gpu_offload:', llama_cpp.llama_supports_gpu_offload());"
              " llama_cpp.Llama(model_path=sys.argv[1], n_gpu_layers=-1, verbose=True)")
    done = subprocess.run([sys.executable, "-c", script, str(model)], capture_output=True, text=True, env=env,
                          timeout=clock.limit())
    lines = [line.strip() for line in (done.stdout + done.stderr).splitlines()
             if re.search(r"offload|assigned to device|using device|ggml_cuda_init|Device 0", line)]
    print("\n".join("  | " + line for line in lines) or "  (llama.cpp printed nothing about offloading)")
    if done.returncode:
        raise SystemExit(f"error: llama.cpp could not load {model} (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return lines


def all_layers_offloaded(lines: list[str]) -> bool:
    """Whether llama.cpp's load said it put every layer on the GPU: "offloaded 3/3 layers to GPU",
    else each "layer N assigned to device D" naming a device other than the CPU."""
    counts = [match.groups() for line in lines if (match := re.search(r"offloaded (\d+)/(\d+) layers to GPU", line))]
    if counts:
        return all(done == total != "0" for done, total in counts)
    devices = [match[1] for line in lines if (match := re.search(r"layer +\d+ assigned to device (\w+)", line))]
    return bool(devices) and "CPU" not in devices


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(module: str, args: list[str], log: Path, ready: str, env: dict[str, str], clock: Clock,
          processes: list[subprocess.Popen]) -> subprocess.Popen:
    """`python -m module args`, ready once its log says `ready`. A host its preflight refuses is
    reported, and the process started again with --skip-preflight, so that the rest is still measured."""
    for extra in ([], ["--skip-preflight"]):
        with log.open("wb") as handle:
            process = subprocess.Popen([sys.executable, "-m", module, *args, *extra], cwd=REPO, env=env,
                                       stdout=handle, stderr=subprocess.STDOUT)
        processes.append(process)
        deadline = time.monotonic() + min(120, clock.limit())
        while ready not in log.read_text(errors="replace"):
            if process.poll() is not None:
                break
            if time.monotonic() > deadline:
                raise OutOfTime(f"{module} did not print {ready!r} in time; see {log}")
            time.sleep(0.1)
        else:
            return process
        output = log.read_text(errors="replace")
        if "preflight" not in output or extra:
            raise SystemExit(f"error: {module} exited with {process.returncode}:\n{output[-3000:]}")
        print(f"  {module}'s preflight refused this host:")
        print("\n".join("  | " + line for line in output.splitlines()))
    raise AssertionError("unreachable")


def serve(model: Path, out: Path, env: dict[str, str], processes: list[subprocess.Popen],
          clock: Clock) -> tuple[str, subprocess.Popen]:
    discovery = WORK / "discovery"
    shutil.rmtree(discovery, ignore_errors=True)
    env = {**env, "DYN_DISCOVERY_DIR": str(discovery), "DYN_NAMESPACE": "gpu-check"}
    port = free_port()
    start("dynamo.frontend", ["--http-host", "127.0.0.1", "--http-port", str(port)], out / "frontend.log",
          "frontend ready", env, clock, processes)
    worker = start("dynamo.llama_cpp", ["--model-path", str(model), "--context-length", "1024", "--n-gpu-layers",
                                        "-1"], out / "worker.log", "worker ready", env, clock, processes)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + min(60, clock.limit())
    while MODEL not in [entry["id"] for entry in get_json(url + "/v1/models")["data"]]:
        if time.monotonic() > deadline:
            raise OutOfTime(f"the frontend did not list {MODEL} in time; see {out / 'frontend.log'}")
        time.sleep(0.1)
    print(f"  serving {MODEL} at {url}")
    return url, worker


def gpu_processes(pid: int) -> str:
    """nvidia-smi's line for process `pid` (its GPU memory), or '' when it does not list it."""
    done = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,process_name,used_memory", "--format=csv,noheader"],
                          capture_output=True, text=True)
    print(f"  nvidia-smi's compute processes: {done.stdout.strip() or done.stderr.strip() or 'none'}")
    return next((line for line in done.stdout.splitlines() if line.split(",")[0].strip() == str(pid)), "")


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def chat(url: str, seed: int, tokens: int, stream: bool, timeout: float) -> tuple[float, float | None, int]:
    """One chat completion: (seconds, seconds to the first token or None, tokens in the answer)."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": f"count to {seed}"}], "max_tokens": tokens,
            "seed": seed, "stream": stream, **({"stream_options": {"include_usage": True}} if stream else {})}
    request = urllib.request.Request(url + "/v1/chat/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    began, first, usage = time.perf_counter(), None, None
    with urllib.request.urlopen(request, timeout=timeout) as response:
        if not stream:
            return time.perf_counter() - began, None, json.load(response)["usage"]["completion_tokens"]
        for line in response:
            if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                continue
            event = json.loads(line[6:])
            if first is None and any(choice["delta"].get("content") for choice in event["choices"]):
                first = time.perf_counter() - began
            usage = event.get("usage") or usage
    return time.perf_counter() - began, first, usage["completion_tokens"]


def measure(url: str, requests: int, tokens: int, clock: Clock) -> None:
    """Answers one at a time, each seed once: tokens/s overall and per answer; streamed, also the time
    to the first token and the rate after it (decoding alone)."""
    chat(url, 0, tokens, False, clock.limit())  # warm-up, not counted
    for stream in (False, True):
        answers = [chat(url, seed, tokens, stream, clock.limit()) for seed in range(1, requests + 1)]
        seconds = sum(spent for spent, _, _ in answers)
        produced = sum(count for _, _, count in answers)
        rates = [count / spent for spent, _, count in answers]
        line = (f"  {'streamed' if stream else 'unstreamed'}: {requests} answers, {produced} tokens in {seconds:.2f} s:"
                f" {produced / seconds:.0f} tokens/s; an answer's median {statistics.median(rates):.0f} tokens/s")
        if stream:
            firsts = [first for _, first, _ in answers if first is not None]
            decoding = [(count - 1) / (spent - first) for spent, first, count in answers if first and count > 1]
            line += (f"; first token after median {statistics.median(firsts) * 1000:.1f} ms"
                     f" (max {max(firsts) * 1000:.1f} ms), then median {statistics.median(decoding):.0f} tokens/s")
        print(line, flush=True)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("prepare", help="fill .gpu/ with what the GPU machine lacks (here, with network)")
    runner = commands.add_parser("run", help="on the GPU machine: doctor, build, serve, measure")
    runner.add_argument("--out", type=Path, default=WORK / "out", help="where the logs and the doctor's files go")
    runner.add_argument("--cpu", action="store_true", help="build and serve on the CPU, even with a GPU")
    runner.add_argument("--budget", type=float, default=450, help="seconds the whole run may take (%(default)s)")
    runner.add_argument("--requests", type=int, default=20, help="chat completions of each kind (%(default)s)")
    runner.add_argument("--tokens", type=int, default=128, help="max_tokens of each (%(default)s)")
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(FOLDER)
    else:
        sys.exit(run(FOLDER, args.out, args.cpu, args.budget, args.requests, args.tokens))


if __name__ == "__main__":
    main()
