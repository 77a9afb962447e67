"""Run a build plan on an engine: progress a person can follow, tags moved only after success."""

from __future__ import annotations

import re
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, TextIO

from dynamo import images
from dynamo.containers import ContainerEngine, ContainerEngineError, ImageInfo
from dynamo.imagebuild.plan import BuildPlan

# One pattern per engine's way of announcing a step: buildah/podman, Docker classic, buildx plain.
_STEPS = (
    re.compile(r"^\[(?P<stage>\d+/\d+)\] STEP (?P<step>\d+/\d+): (?P<what>.*)"),
    re.compile(r"^STEP (?P<step>\d+/\d+): (?P<what>.*)"),
    re.compile(r"^Step (?P<step>\d+/\d+) : (?P<what>.*)"),
    re.compile(r"^#\d+ \[(?P<stage>[^\]]*?)\s*(?P<step>\d+/\d+)\] (?P<what>.*)"),
)
_CACHED = re.compile(r"Using cache|^#\d+ CACHED")
# buildah's outcome of a step: "--> Using cache ID" or "--> ID". It interleaves stages: a `COPY --from=app`
# step is announced, then app's steps with their outcomes, then the COPY's own outcome.
_OUTCOME = re.compile(r"^--> ")
# An ARG instruction's NAME=default pairs: engines print the Dockerfile's text, not the values they build with.
_ARG_DEFAULT = re.compile(r'\b([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S*)')


@dataclass
class Progress:
    """Prints one line per build step: where it is, the elapsed time, what it runs."""

    out: TextIO = sys.stderr
    verbose: bool = False
    started: float = field(default_factory=time.monotonic)
    steps: int = 0  # steps that make a layer or a config change (a stage's FROM does neither)
    cached: int = 0
    log: list[list[Any]] = field(default_factory=list)  # [step text, came from cache]
    awaiting: list[int] = field(default_factory=list)  # steps (indices in log) whose outcome is not printed yet
    build_args: dict[str, str] = field(default_factory=dict)  # shown in ARG steps instead of the Dockerfile's defaults

    def line(self, text: str) -> None:
        if self.verbose:
            print(text, file=self.out)
        if _CACHED.search(text):
            self.cached += 1
            if self.awaiting:
                self.log[self.awaiting.pop()][1] = True
        elif _OUTCOME.match(text) and self.awaiting:
            self.awaiting.pop()
        for pattern in _STEPS:
            match = pattern.match(text)
            if match:
                parts = match.groupdict()
                where = (f"stage {parts['stage']} " if parts.get("stage") else "") + f"step {parts['step']}"
                what = self._with_build_args(" ".join(parts["what"].split()))
                self.log.append([what, False])
                if not what.startswith("FROM "):  # a stage's FROM makes no layer: neither made nor from cache
                    self.steps += 1
                    self.awaiting.append(len(self.log) - 1)
                print(f"[{where}] {self.elapsed():7.1f}s  {what[:110]}", file=self.out, flush=True)
                return

    def _with_build_args(self, what: str) -> str:
        if not what.startswith("ARG ") or not self.build_args:
            return what
        def value(match: re.Match[str]) -> str:
            if match[1] not in self.build_args:
                return str(match[0])
            actual = self.build_args[match[1]]
            return f'{match[1]}="{actual}"' if " " in actual or not actual else f"{match[1]}={actual}"
        return _ARG_DEFAULT.sub(value, what)

    def elapsed(self) -> float:
        return time.monotonic() - self.started


@dataclass(frozen=True)
class Summary:
    image_id: str
    size: int
    tags: tuple[str, ...]
    seconds: float
    steps: int
    cached: int
    pushed: bool
    engine: str
    store: str
    manifest_list: bool
    warnings: tuple[str, ...] = ()  # about the image made, for the person who asked for it

    def text(self) -> str:
        size = f"{self.size / 2**20:.1f} MiB" if self.size else "size unknown"
        where = (f"a manifest list in {self.store}" if self.manifest_list else self.store)
        lines = [f"built {self.image_id.removeprefix('sha256:')[:12]} ({size}) with {self.engine} in {self.seconds:.1f}s;"
                 f" {self.cached} of {self.steps} steps from cache",
                 f"  in {where}",
                 *(f"  {'pushed' if self.pushed else 'tagged'} {tag}" for tag in self.tags)]
        if not self.manifest_list:
            lines.append(f"run it: container/run.sh --image {self.tags[0]}")
        return "\n".join(lines)


def build_image(plan: BuildPlan, engine: ContainerEngine, progress: Progress) -> Summary:
    """Build under a temporary name; tag (and push) only once the whole build has succeeded."""
    if len(plan.platforms) > 1 and not engine.multi_platform:
        raise ContainerEngineError(f"{engine.name} cannot build {', '.join(plan.platforms)} together; install buildah"
                          f" (apt-get install buildah) or docker buildx and pass --engine buildah")
    engine.ensure_base_image(plan.base_image)
    progress.build_args = dict(plan.build_args)
    temp_ref = f"localhost/dynamo-build-tmp:{uuid.uuid4().hex[:12]}"
    size = 0  # a manifest list has no single size
    warnings: list[str] = []
    try:
        image_id = engine.build(plan.request, temp_ref, progress.line).image_id
        if len(plan.platforms) == 1:  # in the local store: read it back once, under its temporary name
            info = engine.inspect(temp_ref)
            _check_labels(plan, info.labels)
            size = info.size
            if info.history and (stale := _steps_from_another_time(plan, info, engine.inspect(plan.stage_base))):
                warnings.append(f"{stale} step(s) came from a layer cache made at another SOURCE_DATE_EPOCH"
                                f" ({engine.name}'s cache ignores --timestamp), so this image is not the one a build"
                                " from empty caches gives; build with --no-cache for the reproducible image")
        direct_push = plan.push and len(plan.platforms) > 1 and engine.pushes_multi_platform
        if not direct_push:  # such an engine pushed the manifest list itself, under the final tags
            engine.tag(temp_ref, plan.tags)
            if plan.push:
                for tag in plan.tags:
                    engine.push(tag)
    finally:
        engine.remove(temp_ref)
    return Summary(image_id=image_id, size=size, tags=plan.tags, seconds=progress.elapsed(), steps=progress.steps,
                   cached=progress.cached, pushed=plan.push, engine=engine.name, store=engine.store,
                   manifest_list=len(plan.platforms) > 1, warnings=tuple(warnings))


def _steps_from_another_time(plan: BuildPlan, image: ImageInfo, base: ImageInfo) -> int:
    """How many of the steps this build added were made at another time than the plan's SOURCE_DATE_EPOCH
    (where the engine records when each step was made: buildah and podman).

    buildah 1.28 matches cached steps without --timestamp, so a step made for an earlier commit comes back
    with that commit's time and its parent's id in the history comment (the same class of problem as
    https://github.com/moby/buildkit/issues/4748 and https://github.com/podman-container-tools/buildah/issues/7038)."""
    made = images.timestamp(plan.source_date_epoch)  # what --timestamp gives every step
    return sum(when != made for when in image.history[len(base.history):])


def _check_labels(plan: BuildPlan, labels: dict[str, str]) -> None:
    """The image must carry the plan's labels: an engine's stale layer cache can keep old ones."""
    wrong = [f"{key}={labels.get(key, '(missing)')!r} (expected {value!r})"
             for key, value in plan.labels().items() if labels.get(key) != value]
    if wrong:
        raise ContainerEngineError(f"the built image's labels differ from the plan, a stale layer cache: {'; '.join(wrong[:3])};"
                          f" rebuild with --no-cache")
