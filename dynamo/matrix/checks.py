"""Value checks for the matrix's fields: each returns None, or what was expected instead."""

from __future__ import annotations

import re
from collections.abc import Callable

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

Check = Callable[[str], "str | None"]

_DRIVER = re.compile(r"\d{3}(\.\d{1,3}){1,2}")
_PUBLISHED_DRIVER = re.compile(r"\d{3}\.xx\+")
_CUDA = re.compile(r"\d{1,2}\.\d")
_CC = re.compile(r"\d{1,2}\.\d")
_PYTHON = re.compile(r"3\.\d{1,2}")
_IDENTIFIER = re.compile(r"[a-z][a-z0-9_]*")
_PLATFORM = re.compile(r"linux/[a-z0-9]+(/v\d)?")
# registry/path:tag or @digest, lower-case path components (the Docker reference grammar, simplified)
_IMAGE = re.compile(
    r"(?:[a-zA-Z0-9.-]+(?::\d+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    r"(?::[\w][\w.-]{0,127}|@sha256:[0-9a-f]{64})"
)
CAVEAT_DIMENSIONS = ("framework", "python", "os", "arch", "cuda", "feature")


def version(value: str) -> str | None:
    try:
        Version(value)
    except InvalidVersion:
        return 'a PEP 440 version such as "0.12.0" or "1.2.0rc6.post1"'
    return None


def release_name(value: str) -> str | None:
    if value == "main":
        return None
    if version(value) is None:
        return None
    return '"main" or a PEP 440 version such as "0.8.1" or "0.8.1.post1"'


def driver(value: str) -> str | None:
    if _DRIVER.fullmatch(value):
        return None
    return 'a driver version such as "575.51.03"'


def published_driver(value: str) -> str | None:
    if _PUBLISHED_DRIVER.fullmatch(value):
        return None
    return 'a published driver floor such as "575.xx+"'


def cuda_version(value: str) -> str | None:
    if _CUDA.fullmatch(value):
        return None
    return 'a CUDA toolkit version MAJOR.MINOR such as "12.9"'


def compute_capability(value: str) -> str | None:
    if _CC.fullmatch(value):
        return None
    return 'a compute capability MAJOR.MINOR such as "9.0"'


def python_version(value: str) -> str | None:
    if _PYTHON.fullmatch(value):
        return None
    return 'a Python version 3.MINOR such as "3.12"'


def specifier(value: str) -> str | None:
    try:
        SpecifierSet(value)
    except InvalidSpecifier:
        return 'a version specifier such as ">=3.10,<3.13"'
    return None


def identifier(value: str) -> str | None:
    if _IDENTIFIER.fullmatch(value):
        return None
    return 'a lower-case identifier such as "llama_cpp"'


def distribution(value: str) -> str | None:
    try:
        requirement = Requirement(value)
    except InvalidRequirement:
        requirement = None
    if requirement is not None and str(requirement) == value:
        return None
    return 'a package name such as "tensorrt-llm"'


def platform(value: str) -> str | None:
    if _PLATFORM.fullmatch(value):
        return None
    return 'an OCI platform such as "linux/amd64"'


def image_ref(value: str) -> str | None:
    if _IMAGE.fullmatch(value):
        return None
    return 'an image reference with a tag or digest such as "nvcr.io/nvidia/cuda:12.9.1-runtime-ubuntu24.04"'


def image_repository(value: str) -> str | None:
    if _IMAGE.fullmatch(value + ":tag"):
        return None
    return 'an image repository without a tag such as "nvcr.io/nvidia/ai-dynamo/vllm-runtime"'


def integer(value: str) -> str | None:
    if value.isdigit():
        return None
    return 'a whole number such as "12"'


def caveat_dimension(value: str) -> str | None:
    if value in CAVEAT_DIMENSIONS:
        return None
    return "one of " + ", ".join(CAVEAT_DIMENSIONS)
