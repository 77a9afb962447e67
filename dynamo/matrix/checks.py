"""Value checks for the matrix's fields: each returns None, or what was expected instead."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from packaging.version import InvalidVersion, Version

Check = Callable[[Any], "str | None"]
CAVEAT_DIMENSIONS = ("framework", "python", "os", "arch", "cuda", "feature")

# registry/path:tag or @digest, lower-case path components (the Docker reference grammar, simplified)
_REPOSITORY = r"(?:[a-zA-Z0-9.-]+(?::\d+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
_TAG = r":[\w][\w.-]{0,127}"
_DIGEST = r"@sha256:[0-9a-f]{64}"


def _matching(pattern: str, expected: str) -> Check:
    # compiled on first use (re keeps it): a start-up that reads a cached matrix checks nothing
    return lambda value: None if re.fullmatch(pattern, value, re.ASCII) else expected


def _parses(parse: Callable[[str], object], error: type[Exception], expected: str) -> Check:
    def check(value: str) -> str | None:
        try:
            parse(value)
        except error:
            return expected
        return None
    return check


driver = _matching(r"\d{3}(\.\d{1,3}){1,2}", 'a driver version such as "575.51.03"')
published_driver = _matching(r"\d{3}\.xx\+", 'a published driver floor such as "575.xx+"')
cuda_version = _matching(r"\d{1,2}\.\d", 'a CUDA toolkit version MAJOR.MINOR such as "12.9"')
compute_capability = _matching(r"\d{1,2}\.\d", 'a compute capability MAJOR.MINOR such as "9.0"')
python_version = _matching(r"3\.\d{1,2}", 'a Python version 3.MINOR such as "3.12"')
identifier = _matching(r"[a-z][a-z0-9_]*", 'a lower-case identifier such as "llama_cpp"')
# Debian Policy 5.6.1: lower case letters, digits, + - and ., starting with a letter or digit
debian_package = _matching(r"[a-z0-9][a-z0-9+.-]+", 'a Debian package name such as "libnuma1"')
module = _matching(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*", 'a Python module such as "tensorrt_llm"')
platform = _matching(r"linux/[a-z0-9]+(/v\d)?", 'an OCI platform such as "linux/amd64"')
integer = _matching(r"\d+", 'a whole number such as "12"')
image_ref = _matching(rf"{_REPOSITORY}(?:{_TAG}|{_DIGEST})", 'an image reference with a tag or digest such as'
                      ' "nvcr.io/nvidia/cuda:12.9.1-runtime-ubuntu24.04"')
# what an engine accepts: a tag and a digest are both optional (build.py --tag, --base-image)
any_image_ref = _matching(rf"{_REPOSITORY}(?:{_TAG})?(?:{_DIGEST})?", "[REGISTRY/]NAME[:TAG][@sha256:DIGEST] with"
                          " a lower-case name")
image_repository = _matching(_REPOSITORY, 'an image repository without a tag such as'
                             ' "nvcr.io/nvidia/ai-dynamo/vllm-runtime"')
caveat_dimension = _matching("|".join(CAVEAT_DIMENSIONS), "one of " + ", ".join(CAVEAT_DIMENSIONS))
version = _parses(Version, InvalidVersion, 'a PEP 440 version such as "0.12.0" or "1.2.0rc6.post1"')


def date(value: str) -> str | None:
    import datetime  # only validation needs it

    expected = 'a date YYYY-MM-DD such as "2026-02-11", or a month YYYY-MM'
    try:
        datetime.date.fromisoformat(value if len(value) == 10 else value + "-01")
    except ValueError:
        return expected
    return None if re.fullmatch(r"\d{4}-\d{2}(-\d{2})?", value, re.ASCII) else expected


def port(value: int) -> str | None:
    return None if 1 <= value <= 65535 else "a TCP port from 1 to 65535"


def positive(value: int) -> str | None:
    return None if value > 0 else "a whole number above 0"


def specifier(value: str) -> str | None:
    from packaging.specifiers import InvalidSpecifier, SpecifierSet  # slow to import; one field uses it

    return _parses(SpecifierSet, InvalidSpecifier, 'a version specifier such as ">=3.10,<3.13"')(value)


def release_name(value: str) -> str | None:
    """"main" or a version in PEP 440's normal form: the name becomes a path (constraints/<name>/) and
    a pin (ai-dynamo==<name>), where " 1.6.3 " or "v1.6.2" would be another name for the same release."""
    if value == "main" or (version(value) is None and str(Version(value)) == value):
        return None
    return '"main" or a PEP 440 version in its normal form such as "0.8.1" or "0.8.1.post1"'


# Characters a URL of the matrix may hold: RFC 3986's, less those a shell reads (; & $ ` ' " ( ) * ! | < >).
_URL_CHARACTERS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@%+=,]+", re.ASCII)


def url(value: str, schemes: tuple[str, ...] = ("https",)) -> str | None:
    """An absolute URL of one of `schemes`, with a host (file: has none), and no whitespace or
    character a shell would read, since a URL is written into shell lines (a Dockerfile's RUN)."""
    from urllib.parse import urlsplit

    expected = f"a URL such as \"https://pypi.nvidia.com\" ({' or '.join(schemes)}; no spaces or shell characters)"
    if not _URL_CHARACTERS.fullmatch(value):
        return expected
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError:
        return expected
    if parts.scheme not in schemes or (parts.scheme != "file" and not parts.hostname):
        return expected
    return None


# PEP 508's name: letters and digits, with . _ - inside (a bare name: no extras, version or marker).
distribution = _matching(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?", 'a package name such as "tensorrt-llm"')
# "" (not resolved yet) or the sha256 digest a registry reports for the tag.
image_digest = _matching(r"(sha256:[0-9a-f]{64})?", 'a digest "sha256:<64 hex digits>", or "" until `matrix pin` resolves it')
