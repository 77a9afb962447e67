"""The compatibility model: NVIDIA_REQUIRE_CUDA as the container toolkit evaluates it, the strings our
images carry, and GPU identity from an exact table (never a substring guess)."""

from __future__ import annotations

import json

import pytest
from conftest import REPO, run_cli

from dynamo import images
from dynamo.doctor.facts import Gpu, HostFacts, RecordingInvalid, from_recording
from dynamo.doctor.judge import Subject, identify, judge, predict_start
from dynamo.matrix import targets
from dynamo.nvidia_require import Device, InvalidRequirement, refusal, satisfied, validate

# NVIDIA_REQUIRE_CUDA of nvcr.io/nvidia/cuda:12.9.1 (shared/notes/host-compat.md), built here from its parts.
NVIDIA_BRANDS = "unknown grid tesla nvidia quadro quadrortx nvidiartx vapps vpc vcs vws cloudgaming".split()
CUDA_12_9 = " ".join(["cuda>=12.9"] + [f"brand={b},driver>={n},driver<{n + 1}"
                                       for n in (535, 550, 560, 565, 570) for b in NVIDIA_BRANDS])
H100 = dict(present=True, arch="9.0", brand="nvidia")
RTX4090 = dict(present=True, arch="8.9", brand="geforce")


@pytest.mark.parametrize("text, device, expected", [
    # The toolkit's documentation: "cuda>=11.0 driver>=450" (space: OR).
    ("cuda>=11.0 driver>=450", Device(cuda="10.2", driver="440.33.01"), False),
    ("cuda>=11.0 driver>=450", Device(cuda="10.2", driver="450.51.06"), True),
    ("cuda>=11.0 driver>=450", Device(cuda="11.0", driver="440.33.01"), True),
    ("cuda>=8.0", Device(cuda="7.5", driver="367.48"), False),
    ("cuda>=7.5", Device(cuda="7.5", driver="352.39"), True),
    # comma: AND
    ("brand=tesla,driver>=535,driver<536", Device(cuda="12.2", driver="535.129.03", present=True, brand="tesla"), True),
    ("brand=tesla,driver>=535,driver<536", Device(cuda="12.2", driver="536.1", present=True, brand="tesla"), False),
    ("brand=tesla,driver>=535,driver<536", Device(cuda="12.2", driver="535.129.03", present=True, brand="geforce"), False),
    # brands compare without case; no visible GPU or no brand: brand and arch conditions hold
    ("brand=Tesla", Device(present=True, brand="tesla"), True),
    ("brand=tesla", Device(), True),
    ("brand!=geforce", Device(present=True, brand=None), True),
    ("arch>=8.0", Device(), True),
    ("arch>=8.0", Device(present=True, arch="7.5"), False),
    ("arch>=8.0", Device(present=True, arch="9.0"), True),
    # versions compare numerically, part by part, trailing zeros ignored
    ("cuda>=12.10", Device(cuda="12.9"), False),
    ("cuda=12.0", Device(cuda="12"), True),
    ("driver<536", Device(driver="535.261.03"), True),
    ("driver!=570.86.15", Device(driver="570.86.15"), False),
    ("driver>570", Device(driver="570"), False),
    ("driver<=570.0.0", Device(driver="570"), True),
    # a fact the toolkit does not know satisfies its condition
    ("cuda>=12.9", Device(cuda=None, driver="575.51.03"), True),
    # NVIDIA's 12.9 image: GeForce refused below the floor, data-center started on a listed branch
    (CUDA_12_9, Device(cuda="12.8", driver="570.86.15", **RTX4090), False),
    (CUDA_12_9, Device(cuda="12.8", driver="570.86.15", **H100), True),
    (CUDA_12_9, Device(cuda="12.4", driver="550.54.15", **H100), True),
    (CUDA_12_9, Device(cuda="12.5", driver="555.42.06", **H100), False),  # R555 is not listed
    (CUDA_12_9, Device(cuda="12.9", driver="575.51.03", **RTX4090), True),
    ("", Device(cuda="11.0"), True),
    ("  cuda>=12.9  ", Device(cuda="12.9"), True),
])
def test_requirement_semantics(text, device, expected):
    assert satisfied(text, device) is expected


@pytest.mark.parametrize("text", ["cuda=>12.9", "cuda>=", "cuda", "foo>=1", "brand>=tesla", "cuda>=12.x",
                                  "cuda>=12.9,drivr<3"])
def test_invalid_requirements_are_refused_like_the_toolkit(text):
    with pytest.raises(InvalidRequirement):
        validate(text)
    device = Device(cuda="12.9", driver="575.51.03", **H100)
    with pytest.raises(InvalidRequirement):
        satisfied(text, device)


def test_a_satisfied_group_stops_evaluation_as_the_toolkit_does():
    assert satisfied("cuda>=12.0 bogus", Device(cuda="12.9"))
    with pytest.raises(InvalidRequirement):
        satisfied("cuda>=13.0 bogus", Device(cuda="12.9"))


def test_refusal_message_is_the_toolkits():
    assert refusal(CUDA_12_9) == ("requirement error: unsatisfied condition: cuda>=12.9, please update your driver to a"
                                  " newer version, or use an earlier cuda container")
    assert refusal("brand=tesla") == "requirement error: unsatisfied condition: brand=tesla"


def test_our_images_carry_nvidias_forward_compatibility_clauses(matrix):
    by_cuda = {t.cuda: images.nvidia_require_cuda(t) for t in targets(matrix) if t.cuda}
    assert by_cuda["12.9"] == CUDA_12_9  # exactly NVIDIA's 12.9.1 image
    assert by_cuda["13.0"].startswith("cuda>=13.0 brand=unknown,driver>=535,driver<536 ")
    assert "driver>=575,driver<576" in by_cuda["13.0"] and "driver>=560" not in by_cuda["13.0"]
    for target in targets(matrix):
        text = images.nvidia_require_cuda(target)
        assert images.build_args(target)["NVIDIA_REQUIRE_CUDA"] == text
        if target.cuda is None:
            assert text == ""
            continue
        validate(text)
        floor = target.driver_linux
        # the floor starts it for any brand; one branch below the floor only data-center brands
        assert satisfied(text, Device(cuda=target.cuda, driver=floor, **RTX4090))
        assert not satisfied(text, Device(cuda="12.0", driver="525.60.13", **RTX4090))
        assert not satisfied(text, Device(cuda="12.0", driver="525.60.13", **H100))  # R525 is never listed
        assert satisfied(text, Device(cuda="12.2", driver="535.54.03", **H100))


def test_rendered_dockerfiles_carry_the_requirement(matrix):
    text = (REPO / "container" / "Dockerfile.vllm").read_text()
    # the default cell of the latest release is CUDA 13.0; its clauses are NVIDIA's 13.0 branches
    assert '    NVIDIA_REQUIRE_CUDA="cuda>=13.0 brand=unknown,driver>=535,driver<536 ' in text
    assert 'brand=cloudgaming,driver>=575,driver<576" \\\n' in text and "driver>=560" not in text
    assert 'ENV NVIDIA_REQUIRE_CUDA="${NVIDIA_REQUIRE_CUDA}"' in text


@pytest.mark.parametrize("name, cc, brand", [
    # each a wrong guess of the old substring matching
    ("Quadro RTX 5000", "7.5", "quadrortx"),
    ("Quadro RTX 4000", "7.5", "quadrortx"),
    ("NVIDIA RTX 5000 Ada Generation", "8.9", "nvidiartx"),
    ("NVIDIA RTX 2000 Ada Generation", "8.9", "nvidiartx"),
    ("NVIDIA RTX A6000", "8.6", "nvidiartx"),
    ("NVIDIA RTX 6000 Ada Generation", "8.9", "nvidiartx"),
    ("NVIDIA RTX PRO 6000 Blackwell Workstation Edition", "12.0", "nvidiartx"),
    ("NVIDIA A800 80GB PCIe", "8.0", "nvidia"),
    ("NVIDIA H800", "9.0", "nvidia"),
    ("Tesla P4", "6.1", "tesla"),
    ("NVIDIA RTX A2000 12GB", "8.6", "nvidiartx"),  # not the data-center A2
    ("NVIDIA A2", "8.6", "nvidia"),
    ("NVIDIA GeForce RTX 5090", "12.0", "geforce"),
    ("NVIDIA H100 80GB HBM3", "9.0", "nvidia"),
    ("NVIDIA A100-SXM4-80GB", "8.0", "nvidia"),
    ("Tesla V100-SXM2-16GB", "7.0", "tesla"),
    ("NVIDIA GeForce RTX 3080 Laptop GPU", "8.6", "geforce"),
])
def test_gpu_identity_from_the_exact_table(matrix, name, cc, brand):
    identity = identify(matrix, Gpu(name))
    assert (identity.compute_capability, identity.brand) == (cc, brand)


@pytest.mark.parametrize("name", ["NVIDIA RTX 5000", "NVIDIA GeForce RTX 9090", "NVIDIA A2000", "H100 clone",
                                  "NVIDIA Graphics Device"])
def test_an_unknown_gpu_is_unknown_never_a_guess(matrix, name):
    facts = HostFacts(arch="x86_64", python="3.12.3", driver="580.95.05", driver_cuda="13.0", gpus=[Gpu(name)],
                      gpu_source="nvidia-smi")
    assert identify(matrix, Gpu(name)).compute_capability is None
    (gpu,) = [f for f in judge(matrix, facts, Subject("0.8.1", "vllm", "13.0")) if f.check == "gpu"]
    assert gpu.status == "warn" and "unknown GPU" in gpu.message


def test_source_beats_table(matrix):
    assert identify(matrix, Gpu("Quadro RTX 5000", compute_capability="7.5", brand="quadro")).brand == "quadro"


def test_unknown_brand_below_the_floor_is_not_a_certain_start(matrix):
    facts = HostFacts(arch="x86_64", driver="570.86.15", driver_cuda="12.8", gpus=[Gpu("NVIDIA Mystery GPU")])
    assert predict_start(matrix, facts, CUDA_12_9).verdict == "unknown"
    facts.driver, facts.driver_cuda = "575.57.08", "12.9"
    assert predict_start(matrix, facts, CUDA_12_9).verdict == "start"


def test_mixed_gpus_are_refused_when_one_gpu_is(matrix):
    facts = HostFacts(arch="x86_64", driver="570.86.15", driver_cuda="12.8",
                      gpus=[Gpu("NVIDIA H100 80GB HBM3"), Gpu("NVIDIA GeForce RTX 4090")])
    start = predict_start(matrix, facts, CUDA_12_9)
    assert (start.verdict, start.gpu) == ("refuse", "GPU 1 NVIDIA GeForce RTX 4090")


def test_doctor_after_setup_without_gpu_judges_the_cpu_build():
    """Issue 11: llama-cpp-python installed, no GPU here: the doctor picks llama.cpp's CPU build."""
    result = run_cli("doctor", "--json")
    report = json.loads(result.stdout)
    assert report["facts"]["packages"]["llama-cpp-python"], "the test environment installs llama-cpp-python"
    assert not report["facts"]["gpus"]
    assert report["subject"]["framework"] == "llama_cpp" and report["subject"]["device"] == "cpu"
    assert not [f for f in report["findings"] if f["check"] == "driver" and f["status"] == "fail"]


MALFORMED = {
    "host.json": ["[]", '{"arch": null}', '{"python": 3.12}', '{"memlock": "unlimited"}', '{"memlock": [1]}',
                  '{"nofile": [1, "x"]}', '{"packages": []}', '{"packages": {"vllm": 1}}', '{"shm_bytes": "64M"}',
                  '{"in_container": "yes"}', '{"container_cuda": "twelve"}', '{"arch": "x86_64", "gpus": []}',
                  "not json", '"x86_64"', "{\"arch\": true}"],
    "nvml.json": ["[]", "{}", '{"driver": "580.95.05"}', '{"driver": 580, "cuda_driver_version": 13000}',
                  '{"driver": "580.95.05", "cuda_driver_version": "13.0"}',
                  '{"driver": "580.95.05", "cuda_driver_version": 13000, "gpus": {}}',
                  '{"driver": "580.95.05", "cuda_driver_version": 13000, "gpus": [1]}',
                  '{"driver": "580.95.05", "cuda_driver_version": 13000, "gpus": [{"name": "H100", '
                  '"compute_capability": "9"}]}',
                  '{"driver": "580.95.05", "cuda_driver_version": 13000, "gpus": [{"name": "H100", "memory_mib": "80G"}]}',
                  '{"driver": "580.95.05", "cuda_driver_version": 13000, "gpus": [{"name": "H100", "mig": "on"}]}'],
}


@pytest.mark.parametrize("name, text", [(n, t) for n, texts in MALFORMED.items() for t in texts])
def test_malformed_recordings_name_the_file_and_field(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    with pytest.raises(RecordingInvalid) as caught:
        from_recording(tmp_path)
    assert all(line.startswith(f"{tmp_path}/{name}") for line in caught.value.problems), caught.value.problems
    result = run_cli("doctor", "--facts", str(tmp_path), "--release", "0.8.1", "--framework", "vllm")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: {tmp_path}/{name}")


@pytest.mark.parametrize("name", ["nvidia-smi.txt", "nvidia-smi.csv", "host.json", "os-release"])
def test_binary_recordings_are_named(tmp_path, name):
    (tmp_path / name).write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x00")
    result = run_cli("doctor", "--facts", str(tmp_path), "--release", "0.8.1")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr == f"error: {tmp_path}/{name}: not UTF-8 text (byte 0); record the tool's output as text\n"


def test_a_recording_of_this_host_reads_back_as_the_live_facts(tmp_path):
    """One interpreter: `--record` writes what the sources printed; `--facts` on it judges the same."""
    live = run_cli("doctor", "--json", "--record", str(tmp_path))
    replayed = run_cli("doctor", "--json", "--facts", str(tmp_path))
    assert live.returncode == replayed.returncode and "Traceback" not in live.stderr + replayed.stderr
    assert (tmp_path / "host.json").is_file()
    assert json.loads(live.stdout) == json.loads(replayed.stdout)


def test_the_live_probe_retries_without_compute_cap(tmp_path, monkeypatch):
    """R470 and older (and some sandboxes) refuse the whole query for one unknown field; the probe asks
    again without it. The stand-in nvidia-smi prints what a real one printed (tests/data/hosts/
    titan-xp-r450 and the corpus' compute-cap-invalid-snap-r570: 'Field "compute_cap" is not a valid
    field to query.'), since no GPU exists here."""
    from dynamo.doctor.facts import _smi_recording, interpret

    smi = tmp_path / "nvidia-smi"
    smi.write_text('#!/bin/sh\ncase "$*" in\n'
                   '  *compute_cap*) echo \'Field "compute_cap" is not a valid field to query.\'; exit 2;;\n'
                   '  *--query-gpu*) echo "name, driver_version, memory.total [MiB], mig.mode.current"; '
                   'echo "TITAN Xp, 450.57, 12196 MiB, [N/A]";;\n'
                   '  *) cat "$TABLE";;\nesac\n')
    smi.chmod(0o755)
    monkeypatch.setenv("TABLE", str(REPO / "tests/data/hosts/titan-xp-r450/nvidia-smi.txt"))
    files = _smi_recording(str(smi))
    facts = interpret(files, "probe")
    assert (facts.driver, [g.name for g in facts.gpus], facts.gpus[0].memory_mib) == ("450.57", ["TITAN Xp"], 12196)


def test_a_driver_without_visible_gpus_fails_a_cuda_target(matrix):
    facts = HostFacts(arch="x86_64", python="3.12.3", driver="580.95.05", driver_cuda="13.0", gpus=[],
                      gpu_source="nvml")
    (gpu,) = [f for f in judge(matrix, facts, Subject("0.8.1", "llama_cpp", "12.9")) if f.check == "gpu"]
    assert gpu.status == "fail" and gpu.message.startswith("no GPU is visible, though driver 580.95.05 is")
    assert "--cuda cpu" in gpu.fix


def test_a_failing_query_records_every_line_nvidia_smi_printed(matrix, tmp_path):
    """The stand-in prints what a real nvidia-smi printed on a driver/library mismatch
    (tests/data/hosts/mismatch-r550-intel-llvm-ci, from intel/llvm#17614) and exits 18 as it does."""
    from dynamo.doctor.facts import _smi_recording, interpret

    said = (REPO / "tests/data/hosts/mismatch-r550-intel-llvm-ci/nvidia-smi.txt").read_text()
    (tmp_path / "said.txt").write_text(said)
    smi = tmp_path / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\ncat {tmp_path / 'said.txt'}\nexit 18\n")
    smi.chmod(0o755)
    facts = interpret(_smi_recording(str(smi)), "probe")
    assert "Driver/library version mismatch" in facts.gpu_error and "NVML library version: 550.144" in facts.gpu_error
    (driver,) = [f for f in judge(matrix, facts, Subject("0.8.1", "vllm", "12.9")) if f.check == "driver"]
    assert driver.status == "fail" and "no NVIDIA driver found" not in driver.message


def test_the_toolkit_is_judged_for_images_not_for_an_engine_installed_here(matrix):
    """A GeForce on R570 refuses our CUDA 12.9 image, but vLLM installed with pip on that host runs
    through minor-version compatibility: the preflight of that install must not refuse it."""
    facts = HostFacts(arch="x86_64", python="3.12.3", driver="570.86.15", driver_cuda="12.8",
                      gpus=[Gpu("NVIDIA GeForce RTX 4090")], gpu_source="nvml", packages={"vllm": "0.12.0"})
    bare = judge(matrix, facts, Subject("0.8.1", "vllm", "12.9"))
    assert not [f for f in bare if f.check == "toolkit"]
    assert [f.status for f in bare if f.check == "driver"] == ["warn"]
    for_run_sh = judge(matrix, facts, Subject("0.8.1", "vllm", "12.9"), scope="host")
    assert [f.status for f in for_run_sh if f.check == "toolkit"] == ["fail"]
    facts.packages = {}
    assert [f.status for f in judge(matrix, facts, Subject("0.8.1", "vllm", "12.9")) if f.check == "toolkit"] == ["fail"]


# What the toolkit reads from a container's environment: its internal/config/image/cuda_image.go
# (GetRequirements, HasDisableRequire with Go's strconv.ParseBool, IsLegacy).
@pytest.mark.parametrize("env, expected", [
    ({"NVIDIA_REQUIRE_CUDA": "cuda>=12.9"}, ("cuda>=12.9",)),
    ({"NVIDIA_REQUIRE_CUDA": "cuda>=12.9", "NVIDIA_REQUIRE_ARCH": "arch>=8.0"}, ("arch>=8.0", "cuda>=12.9")),
    ({"NVIDIA_REQUIRE_CUDA": "cuda>=12.9", "NVIDIA_REQUIRE_JETPACK": "csv-mounts=all"}, ("cuda>=12.9",)),
    ({"NVIDIA_REQUIRE_CUDA": "cuda>=12.9", "NVIDIA_DISABLE_REQUIRE": "true"}, ()),
    ({"NVIDIA_REQUIRE_CUDA": "cuda>=12.9", "NVIDIA_DISABLE_REQUIRE": "1"}, ()),
    ({"NVIDIA_REQUIRE_CUDA": "cuda>=12.9", "NVIDIA_DISABLE_REQUIRE": "yes"}, ("cuda>=12.9",)),  # not a Go bool
    ({"NVIDIA_REQUIRE_CUDA": "cuda>=12.9", "NVIDIA_DISABLE_REQUIRE": "false"}, ("cuda>=12.9",)),
    ({"CUDA_VERSION": "12.9.1"}, ("cuda>=12.9",)),  # a legacy image
    ({"CUDA_VERSION": "11.0"}, ("cuda>=11.0",)),
    ({"CUDA_VERSION": "12.9.1", "NVIDIA_REQUIRE_CUDA": "cuda>=12.4"}, ("cuda>=12.4",)),
    ({"CUDA_VERSION": "12.x"}, ("cuda>=12.x",)),  # unreadable: the toolkit stops, and so does the check
    ({"PATH": "/usr/bin"}, ()),
])
def test_requirements_come_from_the_environment_as_the_toolkit_reads_it(env, expected):
    from dynamo.nvidia_require import from_env

    assert from_env(env) == expected


def test_an_image_without_forward_compatibility_clauses_is_refused_where_ours_starts():
    """The H200 on R570 (CUDA 12.8) from tests/data/hosts: NVIDIA's 12.9 clauses start a data-center GPU on
    R570; `cuda>=12.9` alone, as our images carried before, is refused; no requirement at all starts."""
    host = str(REPO / "tests" / "data" / "hosts" / "h200-r570-ollama")
    args = ["doctor", "--facts", host, "--release", "0.8.1", "--framework", "vllm", "--cuda", "12.9", "--scope", "host",
            "--json"]

    def toolkit(*extra: str) -> tuple[int, dict]:
        result = run_cli(*args, *extra)
        (finding,) = [f for f in json.loads(result.stdout)["findings"] if f["check"] == "toolkit"]
        return result.returncode, finding

    code, ours = toolkit()
    assert (code, ours["status"]) == (0, "ok") and "forward-compatibility clause" in ours["message"]
    code, old = toolkit("--require", "cuda>=12.9")
    assert (code, old["status"]) == (1, "fail")
    assert old["message"].endswith('"requirement error: unsatisfied condition: cuda>=12.9, please update your driver'
                                   ' to a newer version, or use an earlier cuda container"')
    code, none = toolkit("--require", "")
    assert (code, none["status"]) == (0, "ok") and "requires nothing" in none["message"]
    code, anded = toolkit("--require", CUDA_12_9, "--require", "arch>=10.0")  # the H200 is 9.0
    assert (code, anded["status"]) == (1, "fail") and "unsatisfied condition: arch>=10.0" in anded["message"]
    code, invalid = toolkit("--require", "cuda=>12.9")
    assert (code, invalid["status"]) == (1, "fail")
    assert "requirement error: invalid expression 'cuda=>12.9'" in invalid["message"]


def test_the_install_hint_is_the_requirement_the_image_installs(matrix):
    """vLLM on CUDA 13.0 in the latest release: its extras, and NIXL's CUDA 13 build (nixl[cu13])."""
    facts = HostFacts(arch="x86_64", python="3.12.3", packages={"vllm": "0.0.1"})
    target = next(t for t in targets(matrix, release=matrix.latest, framework="vllm") if t.cuda == "13.0")
    fixes = {f.message.split()[0]: f.fix for f in judge(matrix, facts, Subject(matrix.latest, "vllm", "13.0"))
             if f.check == "package"}
    assert fixes["vllm"] == f"pip install '{target.engine_requirement}'" and "[" in target.engine_requirement
    assert fixes["nixl"] == f"pip install '{target.nixl_requirement}' (or run the image)"
    assert target.nixl_requirement.startswith("nixl[cu13]==")
