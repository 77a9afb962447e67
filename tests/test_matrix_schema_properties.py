"""Property-based tests over the schema of issue 14: NIXL and CUDA per engine, published dates,
wheel versions, the release a build without --release takes, and `matrix import`/`bump` edits."""

from __future__ import annotations

import copy
import datetime

import pytest
from conftest import MATRIX_FILE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from packaging.version import Version

from dynamo.matrix import InvalidCombination, MatrixInvalid, from_dict, loads, resolve, targets
from dynamo.matrix.query import buildable, engine_devices, engine_nixl
from dynamo.matrix.update import bump, import_release

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
versions = st.builds(lambda a, b, c: f"{a}.{b}.{c}", st.integers(0, 3), st.integers(0, 40), st.integers(0, 9))
# above every engine and NIXL of the shipped matrix: a newer release never goes back to an older engine,
# and NIXL has a build for CUDA 13 from 0.8.0 on
newer_versions = st.builds(lambda a, b, c: f"{a}.{b}.{c}", st.integers(4, 6), st.integers(0, 40), st.integers(0, 9))
TODAY = datetime.date.today()
VOLTA_FREE = {"vllm": ["7.5", "8.0", "8.6", "9.0", "10.0", "10.3", "12.0", "12.1"],
              "sglang": ["7.5", "8.0", "8.6", "9.0", "10.0", "12.0"]}


@st.composite
def new_release(draw) -> tuple[str, dict]:
    """A release newer than every one in the matrix, valid by construction."""
    name = f"2.{draw(st.integers(0, 30))}.{draw(st.integers(0, 9))}"
    release: dict = {}
    if draw(st.booleans()):
        release["nixl"] = draw(newer_versions)
    if draw(st.booleans()):  # published: between Dynamo's first release and today
        release["published"] = draw(st.dates(datetime.date(2026, 1, 1), TODAY)).isoformat()
    if draw(st.booleans()):
        release["wheel"] = f"{name}.post{draw(st.integers(1, 3))}"
    engines: dict = {"frontend": {}}
    for framework in ("vllm", "sglang", "trtllm"):
        if not draw(st.booleans()):
            continue
        engine: dict = {"version": draw(newer_versions)}
        if draw(st.booleans()):
            engine["nixl"] = draw(newer_versions)
        if framework == "trtllm":
            engine["cuda"] = {draw(st.sampled_from(["13.0", "13.1"])): "supported"}
            engine["base_image"] = "nvcr.io/nvidia/pytorch:25.12-py3"
        else:
            cudas = draw(st.lists(st.sampled_from(["12.9", "13.0"]), min_size=1, max_size=2, unique=True))
            engine["cuda"] = {c: draw(st.sampled_from(["supported", "experimental"])) for c in cudas}
            if cudas == ["13.0"]:
                engine["cuda_archs"] = VOLTA_FREE[framework]
        engines[framework] = engine
    release["engines"] = engines
    return name, release


@SETTINGS
@given(generated=new_release())
def test_engine_nixl_cuda_and_archs(raw_matrix, generated):
    name, release = generated
    raw = copy.deepcopy(raw_matrix)
    raw["release"][name] = release
    raw["latest"] = name  # the newest release
    matrix = from_dict(raw, "m.toml")
    loaded = matrix.release[name]
    assert (loaded.published, loaded.wheel) == (release.get("published"), release.get("wheel"))
    for target in targets(matrix, release=name):
        engine = release["engines"][target.framework]
        if matrix.framework[target.framework].nixl:
            # an engine's own NIXL wins over the release's; neither: unknown, and no NIXL pin
            assert target.nixl == engine.get("nixl", release.get("nixl"))
            assert target.nixl == engine_nixl(loaded, loaded.engines[target.framework])
        if target.cuda:
            assert target.cuda in engine["cuda"]
            assert all(buildable(matrix, cc, target.cuda) for cc in target.cuda_archs)
            assert "7.0" not in target.cuda_archs or Version(target.cuda) < Version("13.0")


@SETTINGS
@given(generated=new_release(), data=st.data())
def test_without_a_release_the_newest_release_with_the_cell_is_taken(raw_matrix, generated, data):
    name, release = generated
    raw = copy.deepcopy(raw_matrix)
    raw["release"][name] = release
    raw["latest"] = name
    matrix = from_dict(raw, "m.toml")
    framework = data.draw(st.sampled_from(["vllm", "sglang", "trtllm", "llama_cpp", "frontend"]))
    device = data.draw(st.sampled_from(["12.8", "12.9", "13.0", "13.1", "cpu"]))
    offering = [r for r, rel in matrix.release.items() if r != "main" and framework in rel.engines
                and device in engine_devices(matrix, framework, rel.engines[framework])]
    try:
        target = resolve(matrix, framework, cuda=device, arch="x86_64")
    except InvalidCombination as refusal:
        assert "\n" not in str(refusal)
        assert not offering  # refused only when no release has the cell
        return
    assert offering and target.release == offering[0]  # the newest release that has the cell
    said = [note for note in target.notes if note.startswith("the latest release")]
    assert bool(said) == (target.release != name)
    if said:
        assert f"using {target.release}, the newest release that has it" in said[0]


@SETTINGS
@given(generated=new_release())
def test_import_keeps_the_file_and_loads_back_the_same_release(generated):
    name, release = generated
    text = MATRIX_FILE.read_text()
    new_text = import_release(text, release, name)
    matrix = loads(new_text, "m.toml")
    assert matrix.latest == name
    loaded = matrix.release[name]
    assert (loaded.published, loaded.wheel, loaded.nixl) == (release.get("published"), release.get("wheel"),
                                                             release.get("nixl"))
    for framework, engine in release["engines"].items():
        assert loaded.engines[framework].version == engine.get("version")
        assert loaded.engines[framework].cuda == engine.get("cuda", {})
    old = iter(new_text.splitlines())
    assert all(line in old for line in text.replace('latest = "1.6.1"', f'latest = "{name}"').splitlines())


def _goes_back(matrix, release: str, framework: str, version: str) -> bool:
    """Whether `version` in `release` puts the framework's engine out of release order (patch releases apart)."""
    if matrix.release[release].patch_of is not None or matrix.release[release].status == "development":
        return False
    history = sorted((Version(name), Version(version) if name == release else Version(rel.engines[framework].version))
                     for name, rel in matrix.release.items()
                     if name != "main" and rel.patch_of is None and (rel.status or "released") == "released"
                     and framework in rel.engines and rel.engines[framework].version)
    engines = [engine for _, engine in history]
    return engines != sorted(engines)


@SETTINGS
@given(data=st.data(), version=versions)
def test_bump_changes_only_the_engine_line(matrix, data, version):
    release = data.draw(st.sampled_from([r for r in matrix.release if r != "main"]))
    framework = data.draw(st.sampled_from([fw for fw in matrix.release[release].engines
                                           if matrix.framework[fw].package]))
    text = MATRIX_FILE.read_text()
    pin = matrix.release[release].engines[framework].pin
    if pin is not None and not pin.startswith(f"{version}+"):  # a +local build pin must follow its version
        with pytest.raises(MatrixInvalid) as caught:
            loads(bump(text, release, {framework: version}), "m.toml")
        assert any(f".engines.{framework}.pin: " in line for line in caught.value.lines()), caught.value.lines()
        return
    new_text = bump(text, release, {framework: version})
    if _goes_back(matrix, release, framework, version):
        with pytest.raises(MatrixInvalid) as caught:
            loads(new_text, "m.toml")
        assert any("a newer release never goes back to an older engine" in line for line in caught.value.lines())
        return
    bumped = loads(new_text, "m.toml")
    assert bumped.release[release].engines[framework].version == version
    changed = [line for line, old in zip(new_text.splitlines(), text.splitlines()) if line != old]
    assert len(new_text.splitlines()) == len(text.splitlines()) and len(changed) <= 1


@SETTINGS
@given(order=st.permutations(["12.6", "12.8", "12.9", "13.0", "13.1"]))
def test_toolkit_floors_out_of_order_are_refused(raw_matrix, order):
    raw = copy.deepcopy(raw_matrix)
    floors = sorted((raw["cuda"][v]["driver_linux"] for v in order), key=Version)
    for version, floor in zip(order, floors):
        raw["cuda"][version]["driver_linux"] = floor
    in_order = order == sorted(order, key=Version)
    try:
        from_dict(raw, "m.toml")
        assert in_order
    except MatrixInvalid as exc:
        assert not in_order, exc.lines()
        assert any("a newer toolkit never needs an older driver" in line for line in exc.lines())


@SETTINGS
@given(day=st.dates(datetime.date(1990, 1, 1), datetime.date(2099, 12, 31)), text=st.text(max_size=12),
       bad_day=st.integers(32, 99))
def test_published_takes_real_dates_only(raw_matrix, day, text, bad_day):
    def problems(value: str) -> list[str]:
        raw = copy.deepcopy(raw_matrix)
        raw["release"]["1.6.1"]["published"] = value
        try:
            from_dict(raw, "m.toml")
        except MatrixInvalid as exc:
            return exc.lines()
        return []

    if datetime.date(2025, 3, 1) <= day <= TODAY:  # between Dynamo's first release and today
        assert problems(day.isoformat()) == [] and problems(day.isoformat()[:7]) == []
    elif day > TODAY.replace(day=28) + datetime.timedelta(days=4) or day < datetime.date(2025, 3, 1):
        for value in (day.isoformat(), day.isoformat()[:7]):  # the month too lies wholly outside
            (line,) = problems(value)
            assert line.startswith(f'm.toml: release."1.6.1".published: {value!r} is not between'), line
    assert problems(f"{day.isoformat()[:8]}{bad_day}")[0].startswith('m.toml: release."1.6.1".published: expected a date')
    assert all(line.startswith('m.toml: release."1.6.1".published: ') for line in problems(text))
