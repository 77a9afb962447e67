"""NVIDIA_REQUIRE_* as the NVIDIA container toolkit evaluates it (libnvidia-container's
src/cli/dsl.c and src/cli/configure.c), so that a check predicts exactly whether `docker run
--gpus` starts an image or refuses it.

Grammar: groups separated by spaces are ORed; conditions separated by commas inside a group are
ANDed; a condition is KEY OP VALUE with KEY one of cuda, driver, arch, brand (any case) and OP one
of = != < <= > >=. cuda and driver compare the host driver's CUDA version and the driver version,
arch the GPU's compute capability, brand the GPU's NVML brand (= and != only, any case). A fact
the toolkit does not know (no GPU visible, no brand) satisfies its condition. Groups are
evaluated left to right and stop at the first satisfied one, as the toolkit does: an invalid
condition after it is never seen.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from dynamo.frozen import Frozen

OPERATORS = ("=", "!=", "<", "<=", ">", ">=")
KEYS = ("cuda", "driver", "arch", "brand")
# The brands NVML reports, as the toolkit spells them (libnvidia-container's nvc_info.c).
NVML_BRANDS = ("unknown", "quadro", "tesla", "nvs", "grid", "geforce", "titan", "vapps", "vpc", "vcs", "vws",
               "cloudgaming", "quadrortx", "nvidiartx", "nvidia", "geforcertx", "titanrtx")


class InvalidRequirement(ValueError):
    """The toolkit refuses such a string too, with "requirement error: invalid expression"."""


class Device(Frozen):
    """What the toolkit knows when it evaluates the requirement for one visible GPU (or none)."""

    cuda: str | None = None  # the CUDA version the driver supports, "12.8"
    driver: str | None = None  # "570.86.15"
    present: bool = False  # False: no GPU visible, arch and brand conditions hold
    arch: str | None = None  # compute capability, "9.0"
    brand: str | None = None  # "tesla", "geforce"...; None: unknown to the toolkit


def compare_version(left: str, op: str, right: str) -> bool | None:
    """dsl_compare_version: dotted numbers compared part by part, trailing zeros ignored;
    None for a value that is not digits and dots."""
    if not re.fullmatch(r"[0-9.]*", left) or not re.fullmatch(r"[0-9.]*", right):
        return None
    a = [int(x) for x in left.split(".") if x]
    b = [int(x) for x in right.split(".") if x]
    while a and a[-1] == 0:
        a.pop()
    while b and b[-1] == 0:
        b.pop()
    order = (a > b) - (a < b)
    return {"=": order == 0, "!=": order != 0, "<": order < 0, "<=": order <= 0,
            ">": order > 0, ">=": order >= 0}[op]


def _condition(text: str) -> tuple[str, str, str]:
    match = re.fullmatch(r"([^<>=!]+)([<>=!]+)(.+)", text)
    if not match or match.group(2) not in OPERATORS or match.group(1).lower() not in KEYS:
        raise InvalidRequirement(f"invalid expression {text!r}")
    return match.group(1).lower(), match.group(2), match.group(3)


def _holds(key: str, op: str, value: str, device: Device) -> bool:
    if key == "brand":
        if not device.present or device.brand is None:
            return True
        if op not in ("=", "!="):
            raise InvalidRequirement(f"invalid expression 'brand{op}{value}': brands compare with = or != only")
        return (device.brand.lower() == value.lower()) == (op == "=")
    fact = {"cuda": device.cuda, "driver": device.driver, "arch": device.arch if device.present else None}[key]
    if fact is None:
        return True
    result = compare_version(fact, op, value)
    if result is None:
        raise InvalidRequirement(f"invalid expression '{key}{op}{value}'")
    return result


def satisfied(requirement: str, device: Device) -> bool:
    """Whether the toolkit starts a container with this requirement on this device."""
    result = True
    for group in requirement.split(" "):
        if not group:
            continue
        conditions = [c for c in group.split(",") if c]
        for condition in conditions:
            result = _holds(*_condition(condition), device)
            if not result:
                break
        else:
            return result
    return result


def refusal(requirement: str) -> str:
    """The toolkit's message when it refuses this requirement."""
    first = requirement.split(" ")[0]
    if first.startswith("cuda>="):
        return (f"requirement error: unsatisfied condition: {first}, please update your driver to a newer version,"
                f" or use an earlier cuda container")
    return f"requirement error: unsatisfied condition: {first}"


def validate(requirement: str) -> None:
    """Raise InvalidRequirement for any condition the toolkit could not read (checked eagerly)."""
    for group in requirement.split(" "):
        for condition in group.split(","):
            if condition:
                key, op, value = _condition(condition)
                if key == "brand" and op not in ("=", "!="):
                    raise InvalidRequirement(f"invalid expression {condition!r}")
                if key != "brand" and compare_version("0", op, value) is None:
                    raise InvalidRequirement(f"invalid expression {condition!r}")


def forward_compat_clauses(cuda: str, brands: tuple[str, ...], branches: tuple[int, ...]) -> str:
    """`cuda>=X.Y` ORed with `brand=B,driver>=N,driver<N+1` per branch and brand, NVIDIA's order."""
    groups = [f"cuda>={cuda}"]
    groups += [f"brand={brand},driver>={branch},driver<{branch + 1}" for branch in branches for brand in brands]
    return " ".join(groups)




_GO_TRUE = ("1", "t", "T", "TRUE", "true", "True")  # Go's strconv.ParseBool


def from_env(env: Mapping[str, str]) -> tuple[str, ...]:
    """The requirements the toolkit takes from a container's environment, ANDed (the toolkit's
    internal/config/image/cuda_image.go, GetRequirements): none with NVIDIA_DISABLE_REQUIRE true;
    else every NVIDIA_REQUIRE_* but NVIDIA_REQUIRE_JETPACK*, in name order; and for a legacy image
    (CUDA_VERSION set, NVIDIA_REQUIRE_CUDA empty) cuda>=MAJOR.MINOR of its CUDA_VERSION."""
    if env.get("NVIDIA_DISABLE_REQUIRE") in _GO_TRUE:
        return ()
    found = [env[name] for name in sorted(env)
             if name.startswith("NVIDIA_REQUIRE_") and not name.startswith("NVIDIA_REQUIRE_JETPACK")]
    if env.get("CUDA_VERSION") and not env.get("NVIDIA_REQUIRE_CUDA"):
        match = re.fullmatch(r"v?(\d+)(?:\.(\d+)(?:\.\d+)?)?(?:[-+].*)?", env["CUDA_VERSION"])
        # an unreadable CUDA_VERSION stops the toolkit too; as written it is an invalid condition
        found.append(f"cuda>={match[1]}.{match[2] or 0}" if match else f"cuda>={env['CUDA_VERSION']}")
    return tuple(found)
