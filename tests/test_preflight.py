"""The startup preflight: refuses on a failed check with the doctor's message, and can be skipped."""

from __future__ import annotations

import io

import pytest
from conftest import REPO

from dynamo.doctor.facts import from_recording
from dynamo.doctor.preflight import preflight

HOSTS = REPO / "tests" / "data" / "hosts"


def test_refuses_with_the_doctors_message_and_fix(monkeypatch):
    monkeypatch.delenv("DYN_SKIP_PREFLIGHT", raising=False)
    out = io.StringIO()
    with pytest.raises(SystemExit) as caught:
        preflight("trtllm", ["--model", "x"], facts=from_recording(HOSTS / "h100-csv-r580"), out=out)
    assert caught.value.code == 1
    text = out.getvalue()
    # no dynamo installed, an image of CUDA 13.0: the newest release with TensorRT-LLM on CUDA 13.0
    assert text.startswith("preflight: this host cannot run trtllm 0.9.1:")
    assert "✗ memlock: memlock is 8192 KiB; MPI needs unlimited\n  fix: docker run --ulimit memlock=-1" in text
    assert "--skip-preflight or DYN_SKIP_PREFLIGHT=1 starts anyway" in text


def test_passes_and_strips_nothing_else(monkeypatch):
    monkeypatch.delenv("DYN_SKIP_PREFLIGHT", raising=False)
    facts = from_recording(HOSTS / "b200x2-r610")
    assert preflight("sglang", ["--model", "x"], facts=facts, out=io.StringIO()) == ["--model", "x"]


def test_cpu_framework_on_a_host_without_gpu(monkeypatch):
    monkeypatch.delenv("DYN_SKIP_PREFLIGHT", raising=False)
    facts = from_recording(HOSTS / "no-gpu-debian")
    assert preflight("llama_cpp", [], facts=facts, out=io.StringIO()) == []


@pytest.mark.parametrize("argv, env", [(["--skip-preflight", "--x"], None), (["--x"], "1")])
def test_skip_warns(monkeypatch, argv, env):
    if env:
        monkeypatch.setenv("DYN_SKIP_PREFLIGHT", env)
    else:
        monkeypatch.delenv("DYN_SKIP_PREFLIGHT", raising=False)
    out = io.StringIO()
    assert preflight("trtllm", argv, facts=from_recording(HOSTS / "h100-csv-r580"), out=out) == ["--x"]
    assert out.getvalue().startswith("warning: preflight skipped")


def _mutations(raw: dict) -> list[tuple[str, dict]]:
    """Broken matrices of the kinds that killed every entry point with a traceback."""
    import copy

    out = []

    def mutate(name, change):
        broken = copy.deepcopy(raw)
        change(broken)
        out.append((name, broken))

    mutate("wrong type", lambda m: m["cuda"]["12.9"].update(driver_linux=575))
    mutate("patch_of nowhere", lambda m: m["release"]["0.8.1.post1"].update(patch_of="0.0.9"))
    mutate("framework missing from the base release",
           lambda m: m["release"]["0.8.1"]["engines"].pop("vllm"))
    mutate("latest nowhere", lambda m: m.update(latest="9.9.9"))
    mutate("gpu arch nowhere", lambda m: m["compute_capability"]["9.0"].update(arch="hoppr"))
    mutate("cuda table gone", lambda m: m.pop("cuda"))
    mutate("bad forward-compat branch", lambda m: m["forward_compat"]["branches"].update({"12.9": [999]}))
    mutate("bad gpu brand", lambda m: m["gpu"]["9.0"].update(gaming=["H100 Gamer"]))
    mutate("engine cuda nowhere", lambda m: m["release"]["0.8.1"]["engines"]["vllm"]["cuda"].update({"11.1": "supported"}))
    return out


def test_a_broken_matrix_stops_the_preflight_with_one_line_per_problem(raw, tmp_path, monkeypatch):
    """Each broken file is read from disk as a start-up reads it, so a validated matrix kept in the
    cache cannot stand in for it."""
    import tomlkit

    from dynamo.matrix import load

    monkeypatch.delenv("DYN_SKIP_PREFLIGHT", raising=False)
    monkeypatch.chdir(tmp_path)
    load(REPO / "matrix" / "support_matrix.toml")  # the shipped matrix is in the cache
    for name, broken in _mutations(raw):
        (tmp_path / "m.toml").write_text(tomlkit.dumps(broken))
        monkeypatch.setenv("DYNAMO_MATRIX", "m.toml")
        out = io.StringIO()
        with pytest.raises(SystemExit) as caught:
            preflight("vllm", [], facts=from_recording(HOSTS / "b200x2-r610"), out=out)
        lines = out.getvalue().splitlines()
        assert caught.value.code == 1, name
        assert lines[0] == "preflight: cannot check this host:", (name, lines)
        assert lines[1].startswith("m.toml: ") and "problem(s)" not in lines[1], (name, lines)
        assert lines[-1].endswith("--skip-preflight or DYN_SKIP_PREFLIGHT=1 starts anyway)"), (name, lines)


def test_in_an_image_the_preflight_judges_the_release_it_was_built_as(monkeypatch):
    """An image of release 1.2.1 built from a 1.6.1 checkout carries our 1.6.1 package beside vLLM 0.20.1:
    the worker's preflight judged release 1.6.1 (which pins vLLM 0.31.0) and refused to start."""
    monkeypatch.delenv("DYN_SKIP_PREFLIGHT", raising=False)
    facts = from_recording(HOSTS / "b200x2-r610")
    facts.packages = {"dynamo": "1.6.1", "vllm": "0.20.1", "nixl": "0.10.1"}
    out = io.StringIO()
    with pytest.raises(SystemExit):
        preflight("vllm", [], facts=facts, out=out)  # outside an image: our package's release
    assert "✗ package: vllm 0.20.1 is installed; release 1.6.1 pins 0.31.0" in out.getvalue()
    monkeypatch.setenv("DYN_IMAGE_RELEASE", "1.2.1")
    monkeypatch.setenv("DYN_IMAGE_FRAMEWORK", "vllm")
    monkeypatch.setenv("DYN_IMAGE_DEVICE", "cuda12.9")
    assert preflight("vllm", ["--model", "x"], facts=facts, out=io.StringIO()) == ["--model", "x"]
    # the frontend in the same image runs on the CPU: the image's device is its engine's, not the frontend's
    assert preflight("frontend", [], facts=facts, out=io.StringIO()) == []


def test_the_frontend_starts_under_dockers_default_shm_on_a_host_without_gpu(monkeypatch):
    monkeypatch.delenv("DYN_SKIP_PREFLIGHT", raising=False)
    facts = from_recording(HOSTS / "no-gpu-debian")
    facts.shm_bytes = 64 * 2**20 - 2 * 2**20  # Docker's default 64 MB, as df shows it in a container: 62 MiB
    assert preflight("frontend", [], facts=facts, out=io.StringIO()) == []
    assert preflight("llama_cpp", [], facts=facts, out=io.StringIO()) == []
