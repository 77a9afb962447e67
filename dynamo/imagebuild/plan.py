"""A build plan: every pin, tag, arg and input of one image build, resolved before anything runs."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from dynamo import images
from dynamo import lock as locks
from dynamo.containers import BuildRequest
from dynamo.imagebuild.source import Source, source_of
from dynamo.matrix import Matrix, Target, checks, resolve
from dynamo.matrix.query import host_arch, normalize_arch

CHECKOUT = Path(__file__).resolve().parents[2]
STAGES = ("runtime", "dev")


class PlanError(ValueError):
    """Bad build input; str() is one line naming the input and the fix."""


@dataclass(frozen=True)
class BuildPlan:
    targets: tuple[Target, ...]  # the same matrix cell, one per platform
    dockerfile: Path
    context: Path
    stage: str
    tags: tuple[str, ...]
    build_args: dict[str, str]
    ca_cert: Path | None = None
    push: bool = False
    no_cache: bool = False
    cache_from: tuple[str, ...] = ()
    cache_to: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=())

    @property
    def target(self) -> Target:
        return self.targets[0]

    @property
    def platforms(self) -> tuple[str, ...]:
        return tuple(t.platform for t in self.targets)

    @property
    def source_date_epoch(self) -> int:
        """Every timestamp in the image: the commit's time (or a --build-arg SOURCE_DATE_EPOCH)."""
        return int(self.build_args["SOURCE_DATE_EPOCH"])

    @property
    def base_image(self) -> str:
        return self.build_args["BASE_IMAGE"]

    @property
    def stage_base(self) -> str:
        """The image the built stage starts from: the runtime stage's own (a CUDA runtime image),
        the others the base image."""
        return self.build_args["RUNTIME_IMAGE"] if self.stage == "runtime" else self.base_image

    def labels(self) -> dict[str, str]:
        """Our labels as the image will carry them (build-arg overrides included)."""
        return images.labels_from_args(self.target.framework, self.build_args)

    @property
    def request(self) -> BuildRequest:
        """What the engine reads of this plan."""
        return BuildRequest(dockerfile=self.dockerfile, context=self.context, stage=self.stage, platforms=self.platforms,
                            build_args=self.build_args, tags=self.tags, source_date_epoch=self.source_date_epoch,
                            ca_cert=self.ca_cert, push=self.push, no_cache=self.no_cache, cache_from=self.cache_from,
                            cache_to=self.cache_to)


def parse_build_args(values: list[str]) -> dict[str, str]:
    parsed = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key or not key.replace("_", "").isalnum():
            raise PlanError(f"--build-arg expects KEY=VALUE, got {value!r}")
        parsed[key] = rest
    return parsed


def _check_flags(*, cuda: str | None, platforms: list[str] | None, tags: list[str] | None,
                 base_image: str | None) -> None:
    """Flags given but empty or malformed: one line naming the flag and the valid form."""
    if cuda is not None and not cuda.strip():
        raise PlanError("--cuda needs a value: a CUDA version of the matrix such as 12.9, or cpu")
    if platforms is not None and not all(p.strip() for p in platforms):
        raise PlanError("--platform needs OS/ARCH[,OS/ARCH...], e.g. linux/amd64 or linux/amd64,linux/arm64")
    for tag in tags or ():
        if checks.any_image_ref(tag) is not None:
            raise PlanError(f"--tag {tag!r} is not an image reference: [REGISTRY/]NAME[:TAG] with a lowercase name,"
                            " e.g. registry.example.com/dynamo:vllm")
    if base_image is not None and checks.any_image_ref(base_image) is not None:
        raise PlanError(f"--base-image {base_image!r} is not an image reference: [REGISTRY/]NAME[:TAG][@sha256:DIGEST],"
                        " e.g. nvcr.io/nvidia/cuda:12.9.1-runtime-ubuntu24.04")


def _ca_bundle(ca_cert: str | None) -> Path | None:
    """--ca-cert as a path, after checking it is a PEM bundle."""
    if ca_cert is None:
        return None
    ca = Path(ca_cert).expanduser()
    if not ca.is_file():
        raise PlanError(f"--ca-cert {ca_cert}: no such file; give the path of a PEM CA bundle")
    if "-----BEGIN CERTIFICATE-----" not in ca.read_text(errors="replace"):
        raise PlanError(f"--ca-cert {ca_cert}: not a PEM certificate bundle (no BEGIN CERTIFICATE line)")
    return ca


def _with_epoch(source: Source, overrides: dict[str, str]) -> Source:
    """The source with a --build-arg SOURCE_DATE_EPOCH as its time (every timestamp in the image, the created
    label included)."""
    if "SOURCE_DATE_EPOCH" not in overrides:
        return source
    if not overrides["SOURCE_DATE_EPOCH"].isdigit():
        raise PlanError(f"--build-arg SOURCE_DATE_EPOCH={overrides['SOURCE_DATE_EPOCH']}: not a number of seconds"
                        " since 1970; give one, e.g. $(git log -1 --format=%ct)")
    return replace(source, epoch=int(overrides["SOURCE_DATE_EPOCH"]))


def make_plan(matrix: Matrix, *, framework: str, cuda: str | None = None, release: str | None = None,
              platforms: list[str] | None = None, python: str | None = None, stage: str = "runtime",
              tags: list[str] | None = None, build_args: list[str] | None = None,
              base_image: str | None = None, ca_cert: str | None = None, push: bool = False,
              no_cache: bool = False, cache_from: list[str] | None = None, cache_to: list[str] | None = None,
              unlocked: bool = False, checkout: Path = CHECKOUT, source: Source | None = None) -> BuildPlan:
    """Resolve the matrix cell for every requested platform and gather what the engine needs.

    The source (commit, time, URL) is the checkout's unless given (a context exported from a commit)."""
    _check_flags(cuda=cuda, platforms=platforms, tags=tags, base_image=base_image)
    if stage not in STAGES:
        raise PlanError(f"--target {stage!r} is not a stage; choose {' or '.join(STAGES)}")
    arches = [normalize_arch(matrix, p) for p in platforms] if platforms else [host_arch(matrix)]
    if len(set(arches)) != len(arches):
        raise PlanError(f"--platform names an architecture twice: {','.join(platforms or [])}")
    targets = tuple(resolve(matrix, framework, release=release, cuda=cuda, arch=arch, python=python,
                            base_image=base_image) for arch in arches)
    dockerfile = checkout / "container" / f"Dockerfile.{targets[0].framework}"
    if not dockerfile.is_file():
        raise PlanError(f"{dockerfile.relative_to(checkout)} is missing; run `python build.py render`")
    ca = _ca_bundle(ca_cert)
    overrides = parse_build_args(build_args or [])
    source = _with_epoch(source or source_of(checkout), overrides)
    args = images.build_args(targets[0]) | images.source_args(source.revision, source.epoch, source.url) | overrides
    warnings = [note for note in targets[0].notes]
    if not_pinned := args.get("UNPINNED"):
        warnings.append(f"{not_pinned}: not pinned to a digest, so the build is not reproducible (run `python build.py"
                        " matrix pin` where the registry is reachable); its label dev.dynamo.unpinned records it")
    if unlocked:
        args["LOCK"] = "none"
        warnings.append(f"building {targets[0].release}-{targets[0].framework}-{targets[0].device} without a lock"
                        " (--unlocked): packages resolve at build time, so the image is not reproducible;"
                        " its label dev.dynamo.lock=none records it")
    else:
        for target in targets:
            if found := locks.problems(locks.spec(matrix, target, checkout), checkout):
                raise PlanError(f"{found[0]}; or build with --unlocked (the image's labels record it)")
    if source.dirty:
        warnings.append("the build context has uncommitted changes: the image's revision label does not describe it,"
                        " and `build.py verify --reproduce` cannot rebuild it; commit first for a reproducible image")
    version = matrix.latest  # this checkout's package version: pyproject.toml is rendered from it
    if targets[0].release not in (version, "main"):
        warnings.append(f"this checkout is dynamo {version} but the image is for release {targets[0].release}:"
                        f" it will carry dynamo {version} (check out release {targets[0].release} to build it)")
    return BuildPlan(
        targets=targets, dockerfile=dockerfile, context=checkout, stage=stage,
        tags=tuple(tags) if tags else tuple(images.tags(matrix, targets[0])),
        build_args=args, ca_cert=ca, push=push, no_cache=no_cache,
        cache_from=tuple(cache_from or ()), cache_to=tuple(cache_to or ()), warnings=tuple(warnings))
