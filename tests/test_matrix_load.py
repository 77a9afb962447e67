"""A broken matrix gives one named problem per fault: file, key path, what was expected."""

from __future__ import annotations

import pytest
from conftest import MATRIX_FILE

from dynamo.matrix import MatrixInvalid, from_dict, load, loads


def problems(raw: dict) -> list[str]:
    with pytest.raises(MatrixInvalid) as caught:
        from_dict(raw, "m.toml")
    return caught.value.lines()


def test_shipped_matrix_loads_with_defaults_merged(matrix):
    assert matrix.latest == "1.6.1"
    assert list(matrix.release)[:3] == ["main", "1.6.1", "1.6.0"]
    patch = matrix.release["0.8.1.post1"]
    assert patch.python == ("3.10", "3.11", "3.12")  # from [defaults]
    assert patch.engines["trtllm"].cuda == {"13.0": "supported"}  # inherited from 0.8.1
    assert patch.engines["trtllm"].version == "1.2.0rc6.post2"  # but its own version
    assert matrix.release["0.1.0"].cpu_arch == {"x86_64": "supported", "arm64": "experimental"}


def test_wrong_type_names_key_path(raw):
    raw["latest"] = 5
    raw["release"]["0.8.1"]["engines"]["vllm"]["cuda"] = "12.9"
    assert problems(raw) == [
        "m.toml: latest: expected a string, got an integer 5",
        'm.toml: release."0.8.1".engines.vllm.cuda: expected a table, got a string \'12.9\'',
    ]


def test_malformed_version(raw):
    raw["release"]["0.8.1"]["engines"]["vllm"]["version"] = "0.12.x"
    assert problems(raw) == ['m.toml: release."0.8.1".engines.vllm.version: expected a PEP 440 version'
                             ' such as "0.12.0" or "1.2.0rc6.post1", got \'0.12.x\'']


def test_bad_driver_and_status(raw):
    raw["cuda"]["12.9"]["driver_linux"] = "575"
    raw["release"]["0.8.1"]["engines"]["sglang"]["cuda"]["13.0"] = "beta"
    lines = problems(raw)
    assert 'm.toml: cuda."12.9".driver_linux: expected a driver version such as "575.51.03", got \'575\'' in lines
    assert ('m.toml: release."0.8.1".engines.sglang.cuda."13.0": expected one of \'supported\','
            ' \'experimental\', got a string \'beta\'') in lines


def test_unknown_key_lists_known_ones(raw):
    raw["release"]["0.8.1"]["engines"]["vllm"]["verison"] = "0.12.0"
    (line,) = problems(raw)
    assert line.startswith("m.toml: release.\"0.8.1\".engines.vllm.verison: unknown key 'verison'; expected one of:")
    assert "version" in line


def test_missing_required_key(raw):
    del raw["cuda"]["13.0"]["driver_linux"]
    assert problems(raw) == ['m.toml: cuda."13.0".driver_linux: missing required key; expected a string']


def test_unknown_framework_in_release(raw):
    raw["release"]["0.8.1"]["engines"]["mlc"] = {"version": "1.0"}
    (line,) = problems(raw)
    assert line.startswith("m.toml: release.\"0.8.1\".engines.mlc: framework 'mlc' is not defined; expected one of:")


def test_dangling_cuda_reference(raw):
    raw["release"]["0.8.1"]["engines"]["vllm"]["cuda"]["12.7"] = "supported"
    assert problems(raw) == [
        "m.toml: release.\"0.8.1\".engines.vllm.cuda.\"12.7\": CUDA toolkit '12.7' is not defined; expected one of:"
        " 12.0, 12.1, 12.2, 12.3, 12.4, 12.5, 12.6, 12.8, 12.9, 13.0, 13.1"]


def test_cuda_without_base_image(raw):
    raw["release"]["0.8.1"]["engines"]["vllm"]["cuda"]["12.6"] = "supported"
    assert problems(raw) == ['m.toml: release."0.8.1".engines.vllm.cuda."12.6": no base image for CUDA 12.6:'
                             ' set base_image in [cuda."12.6"] or in this engine']


def test_duplicate_release_after_normalisation(raw):
    raw["release"]["0.8.1.0"] = raw["release"]["0.8.1"]
    assert problems(raw) == ["m.toml: release.\"0.8.1.0\": duplicate release: '0.8.1.0' is the same version"
                             " as '0.8.1'; keep one"]


def test_duplicate_release_table_is_a_syntax_error():
    text = MATRIX_FILE.read_text() + '\n[release."0.8.1"]\nnixl = "0.8.0"\n'
    with pytest.raises(MatrixInvalid) as caught:
        loads(text, "m.toml")
    (line,) = caught.value.lines()
    assert line.startswith("m.toml: invalid TOML: Cannot declare") and "line" in line


def test_bad_release_name(raw):
    raw["release"]["next!"] = raw["release"].pop("0.8.0")
    assert problems(raw) == ["m.toml: release.\"next!\": invalid key 'next!': expected \"main\" or a PEP 440"
                             " version in its normal form such as \"0.8.1\" or \"0.8.1.post1\""]


def test_latest_must_exist(raw):
    raw["latest"] = "0.9.9"
    (line,) = problems(raw)
    assert line.startswith("m.toml: latest: release '0.9.9' is not defined; expected one of: 0.1.0,")


def test_published_floor_must_match_precise_floor(raw):
    raw["cuda"]["12.9"]["published_linux"] = "570.xx+"
    assert problems(raw) == ["m.toml: cuda.\"12.9\".published_linux: '570.xx+' disagrees with driver_linux"
                             " '575.51.03': expected \"575.xx+\""]


def test_caveat_references_are_checked(raw, raw_matrix):
    raw["caveat"][0]["when"]["framework"] = "tensorrt"
    (line,) = problems(raw)
    assert line.startswith("m.toml: caveat[0].when.framework: framework 'tensorrt' is not defined; expected one of:")
    raw["caveat"] = [dict(c) for c in raw_matrix["caveat"]]
    raw["caveat"][1]["when"] = {"gpu": "h100"}
    (line,) = problems(raw)
    assert line == ("m.toml: caveat[1].when.gpu: invalid key 'gpu': expected one of framework, python, os, arch,"
                    " cuda, feature")


def test_every_problem_is_reported_at_once(raw):
    raw["latest"] = "9.9"
    raw["cuda"]["12.9"]["driver_linux"] = "new"
    raw["framework"]["vllm"]["package"] = 3
    raw["release"]["0.7.0"]["engines"]["vllm"]["version"] = "eleven"
    # Every type and value problem at once; cross-references (latest) once the types are right.
    assert [line.split(": expected")[0] for line in problems(raw)] == [
        'm.toml: cuda."12.9".driver_linux', "m.toml: framework.vllm.package",
        'm.toml: release."0.7.0".engines.vllm.version']


def test_syntax_error_names_line(tmp_path):
    bad = tmp_path / "support_matrix.toml"
    bad.write_text('schema = 1\nlatest = "0.8.1\n')
    with pytest.raises(MatrixInvalid) as caught:
        load(bad)
    (line,) = caught.value.lines()
    assert "support_matrix.toml: invalid TOML:" in line and "line 2" in line


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(MatrixInvalid) as caught:
        load(tmp_path / "nope.toml")
    assert "cannot read the matrix" in caught.value.lines()[0]
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"latest = '\xff\xfe'")
    with pytest.raises(MatrixInvalid) as caught:
        load(binary)
    assert "not UTF-8" in caught.value.lines()[0]


def test_non_ascii_digits_are_not_versions(raw):
    raw["cuda"]["١٢.٩"] = raw["cuda"]["12.9"]
    raw["compute_capability"]["9.0"]["first_cuda"] = "١١.٨"
    lines = problems(raw)
    assert 'm.toml: cuda."١٢.٩": invalid key \'١٢.٩\': expected a CUDA toolkit version MAJOR.MINOR such as "12.9"' in lines
    assert any(line.startswith('m.toml: compute_capability."9.0".first_cuda: expected a CUDA toolkit version') for line in lines)


def _set(raw: dict, path: tuple, value) -> None:
    *parents, last = path
    for key in parents:
        raw = raw[key]
    raw[last] = value


# Each impossible fact is one line naming its key path and the fix (issue 14).
IMPOSSIBLE = [
    (("compute_capability", "9.0", "arch"), "turing",
     'compute_capability."9.0".arch: compute capability 9.0 is not NVIDIA Turing Architecture (7.5 to 7.5);'
     " expected arch = hopper"),
    (("cuda_major", "12", "minor_compat_driver"), "599.99.99",
     "cuda_major.12.minor_compat_driver: '599.99.99' is above CUDA 12.0's own floor '525.60.13'; the"
     " minor-version floor of 12.x is at most the floor of every 12.x toolkit"),
    (("cuda_major", "13", "minor_compat_driver"), "400.00",
     "cuda_major.13.minor_compat_driver: '400.00' is not above CUDA 12.9's floor '575.51.03'; a 13.x toolkit"
     " needs a newer driver than every older major's"),
    (("cuda", "12.6", "driver_linux"), "575.00.00",
     "cuda.\"12.8\".driver_linux: '570.26' is below CUDA 12.6's '575.00.00'; a newer toolkit never needs an older"
     " driver: correct one of them"),
    (("release", "0.1.0", "min_host", "ram_gib"), -32,
     'release."0.1.0".min_host.ram_gib: expected a whole number above 0, got -32'),
    (("release", "0.1.0", "min_host", "cpu_cores"), 10**24,
     'release."0.1.0".min_host.cpu_cores: an integer 1000000000000000000000000 is outside TOML\'s 64-bit'
     " integers; use a real value"),
    (("framework", "vllm", "name"), "vL\x00LM", "framework.vllm.name: the text contains the control character"
                                               " U+0000; remove it"),
    (("release", "0.8.1", "engines", "vllm", "cuda"), {},
     'release."0.8.1".engines.vllm.cuda: vllm ships no CUDA toolkit, so nothing of it can be built; add one,'
     ' such as cuda = { "13.0" = "supported" }'),
    (("compute_capability", "10.0", "dropped_in"), "12.0",
     'compute_capability."10.0".dropped_in: CUDA 12.0 is not after first_cuda 12.8; a toolkit drops what an'
     " older one added"),
    (("release", "0.8.1", "engines", "vllm", "cuda"), {"13.0": "supported"},
     'release."0.8.1".engines.vllm.cuda_archs: compute capability 7.0 (in framework.vllm.cuda_archs) cannot be'
     " built with CUDA 13.0; set cuda_archs for this engine without 7.0"),
    (("defaults", "gpu_arch"), {},
     "defaults.gpu_arch: lists no GPU architecture, so no release runs on a GPU; name at least one"),
]


@pytest.mark.parametrize("path, value, expected", IMPOSSIBLE, ids=[format(i) for i in range(len(IMPOSSIBLE))])
def test_impossible_facts_are_one_line_each(raw, path, value, expected):
    _set(raw, path, value)
    assert problems(raw) == [f"m.toml: {expected}"]


def test_a_toolkit_floor_below_an_older_toolkits(raw):
    """13.1 at 500: its own line, and its forward-compatibility branches, all above that floor, each named."""
    raw["cuda"]["13.1"]["driver_linux"] = "500.00.00"
    lines = problems(raw)
    assert lines[0] == ("m.toml: cuda.\"13.1\".driver_linux: '500.00.00' is below CUDA 13.0's '580.65.06'; a newer"
                        " toolkit never needs an older driver: correct one of them")
    assert lines[1:] == [f'm.toml: forward_compat.branches."13.1"[{i}]: branch {b} is not a driver branch below'
                         f" CUDA 13.1's floor R500" for i, b in enumerate(raw["forward_compat"]["branches"]["13.1"])]


def test_ports_out_of_range(raw):
    index = next(i for i, c in enumerate(raw["caveat"]) if "ports" in c)
    raw["caveat"][index]["ports"] = [99999, -5]
    assert problems(raw) == [
        f"m.toml: caveat[{index}].ports[0]: expected a TCP port from 1 to 65535, got 99999",
        f"m.toml: caveat[{index}].ports[1]: expected a TCP port from 1 to 65535, got -5"]


def test_one_gpu_under_two_capabilities(raw):
    raw["compute_capability"]["8.6"]["gpus"].append("H100")
    assert problems(raw) == ['m.toml: compute_capability."9.0".gpus[0]: \'H100\' is already listed under compute'
                             " capability 8.6; keep one"]


def test_a_nul_byte_in_a_key(raw):
    raw["release"]["0.8.1"]["engines"]["vl\x00lm"] = {"version": "1.0"}
    assert problems(raw) == ['m.toml: release."0.8.1".engines."vl\\u0000lm": the key contains the control'
                             " character U+0000; remove it"]


def test_a_matrix_nested_5000_levels_deep_is_one_line():
    text = MATRIX_FILE.read_text() + "\nx = " + "[" * 5000 + "]" * 5000 + "\n"
    with pytest.raises(MatrixInvalid) as caught:
        loads(text, "m.toml")
    line = len(MATRIX_FILE.read_text().splitlines()) + 2
    assert caught.value.lines() == [f"m.toml: line {line}: arrays or inline tables nested too deep to read (the"
                                    " schema needs only a few levels); flatten them"]
    deep_tables = MATRIX_FILE.read_text() + "\nx = " + "{a = " * 5000 + "1" + "}" * 5000 + "\n"
    with pytest.raises(MatrixInvalid):
        loads(deep_tables, "m.toml")


def _rename(raw: dict, old: str, new: str) -> None:
    raw["release"][new] = raw["release"].pop(old)


# Impossible or hostile matrices that were accepted (issue 20): each is one line naming its key path.
HOSTILE = {
    "a release name with spaces": (lambda raw: _rename(raw, "0.7.0", " 0.7.0 "),
                                   'release." 0.7.0 ": invalid key \' 0.7.0 \': expected "main" or a PEP 440 version in its'
                                   ' normal form such as "0.8.1" or "0.8.1.post1"'),
    "a v-prefixed release name": (lambda raw: _rename(raw, "0.7.0", "v0.7.0"),
                                  'release."v0.7.0": invalid key \'v0.7.0\': expected "main" or a PEP 440 version in its'
                                  " normal form"),
    "NIXL 0.6.0 on CUDA 13": (lambda raw: _set(raw, ("release", "1.6.1", "engines", "vllm", "nixl"), "0.6.0"),
                              'release."1.6.1".engines.vllm.nixl: NIXL 0.6.0 has no build for CUDA 13 (vllm ships CUDA'
                              " 13.0): the image would get its CUDA 12 wheel; use NIXL 0.8.0 or newer (nixl[cu13])"),
    "a first_cuda after the engines that build it": (
        lambda raw: _set(raw, ("compute_capability", "12.1", "first_cuda"), "13.1"),
        'compute_capability."12.1".first_cuda: CUDA 13.1 is after every CUDA of release 1.6.1\'s vllm (CUDA 13.0) and'
        " 8 more, whose cuda_archs list 12.1: it would be left out of their images"),
    "CUDA 99.9": (lambda raw: (_set(raw, ("cuda", "99.9"), raw["cuda"]["13.1"] | {
        "driver_linux": "999.99.99", "published_linux": "999.xx+", "published_windows": "999.xx+"}),
        _set(raw, ("cuda_major", "99"), {"minor_compat_driver": "999.0"})),
        'cuda."99.9": CUDA 99.9 follows CUDA 13.x with no major between them'),
    "latest at the oldest release": (lambda raw: _set(raw, ("latest",), "0.1.0"),
                                     "latest: '0.1.0' is not the newest release (23 released after it); latest = '1.6.1'"),
    "latest with no engine": (lambda raw: _set(raw, ("release", "1.6.1", "engines"), {}),
                              "latest: release '1.6.1' ships no engine; the latest release is one users can run"),
    "an engine going backwards": (
        lambda raw: _set(raw, ("release", "1.6.1", "engines", "vllm", "version"), "0.10.0"),
        'release."1.6.1".engines.vllm.version: vllm 0.10.0 is older than 0.31.0 in release 1.6.0; a newer release'
        " never goes back to an older engine"),
    "a caveat for a framework the release does not ship": (
        lambda raw: _set(raw, ("caveat", 3, "when", "framework"), "sglang"),
        "caveat[3].releases[0]: release 0.1.0 ships no sglang; the caveat cannot apply to it"),
    "a caveat for a CUDA the release does not ship": (
        lambda raw: _set(raw, ("caveat", 3, "when", "cuda"), "13.0"),
        "caveat[3].releases[0]: release 0.1.0 ships no CUDA 13.0; the caveat cannot apply to it"),
    "a caveat for a release before its since": (lambda raw: _set(raw, ("caveat", 0, "releases"), ["0.6.1"]),
                                                "caveat[0].releases[0]: release 0.6.1 is before the caveat's since (0.7.0)"),
    "an artifact no release publishes": (
        lambda raw: _set(raw, ("artifact", "orphan"), {"kind": "wheel", "url": "https://pypi.org/project/orphan/",
                                                       "since": "9.0.0"}),
        "artifact.orphan: no release publishes 'orphan'"),
    "published in 1970": (lambda raw: _set(raw, ("release", "0.9.0", "published"), "1970-01-01"),
                          'release."0.9.0".published: \'1970-01-01\' is not between Dynamo\'s first release (2025-03) and'
                          " today"),
    "published in 9999": (lambda raw: _set(raw, ("release", "0.9.0", "published"), "9999-12"),
                          'release."0.9.0".published: \'9999-12\' is not between'),
    "an index URL with a shell command": (
        lambda raw: _set(raw, ("framework", "trtllm", "extra_index_url"), "https://pypi.nvidia.com $(touch /tmp/x) ; echo"),
        'framework.trtllm.extra_index_url: expected a URL such as "https://pypi.nvidia.com" (https or http or file; no'
        " spaces or shell characters), got 'https://pypi.nvidia.com $(touch /tmp/x) ; echo'"),
    "a file URL with pip options and backquotes": (
        lambda raw: _set(raw, ("framework", "vllm", "cuda_indexes", "13.0"), ["file:///etc/passwd --trusted-host * `id`"]),
        'framework.vllm.cuda_indexes."13.0"[0]: expected a URL such as'),
    "an index with a placeholder other than {version}": (
        lambda raw: _set(raw, ("framework", "vllm", "cuda_indexes", "13.0"), ["https://wheels.vllm.ai/{os.system}/cu130"]),
        'framework.vllm.cuda_indexes."13.0"[0]: expected a URL such as'),
    "an http link": (lambda raw: _set(raw, ("caveat", 0, "link"), "http://example.com/x"),
                     "caveat[0].link: expected a URL such as \"https://pypi.nvidia.com\" (https; no spaces"),
    "an artifact URL with no host": (lambda raw: _set(raw, ("artifact", "ai-dynamo", "url"), "https:///x"),
                                     "artifact.ai-dynamo.url: expected a URL"),
}


@pytest.mark.parametrize("change, expected", HOSTILE.values(), ids=HOSTILE)
def test_hostile_matrices_are_one_line_each(raw, change, expected):
    change(raw)
    (line,) = problems(raw)
    assert line.startswith(f"m.toml: {expected}"), line
