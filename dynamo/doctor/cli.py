"""`dynamo doctor`: gather, judge, report. Exit 0 when no check failed, 1 when one did, 2 for bad usage."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from dynamo import nvidia_require as requirement
from dynamo.doctor.facts import HostFacts, RecordingInvalid, from_recording, interpret, record
from dynamo.doctor.image import ImageCell, baked
from dynamo.doctor.judge import FAIL, MARKS, Finding, Subject, contradictions, host_device, judge, release_to_judge
from dynamo.matrix import InvalidCombination, Matrix
from dynamo.matrix.query import check_framework, find_release

FRAMEWORK_PACKAGES = {"vllm": "vllm", "sglang": "sglang", "trtllm": "tensorrt-llm", "llama_cpp": "llama-cpp-python"}


def subject_for(matrix: Matrix, facts: HostFacts, args: argparse.Namespace) -> Subject:
    """From --image labels, else the flags, else what is installed here; --require replaces the requirements."""
    subject = _subject(matrix, facts, args)
    requirements = subject.requirements if args.require is None else tuple(args.require)
    return dataclasses.replace(subject, requirements=requirements, cdi=args.cdi)


def _image_subject(matrix: Matrix, image: str) -> Subject:
    """What an image's labels say it is, and the requirement its environment gives the toolkit."""
    from dynamo import images
    from dynamo.containers import ContainerEngineError, engine_with_image  # only --image needs an engine

    try:
        info = engine_with_image(image).inspect(image)
    except ContainerEngineError as exc:
        raise InvalidCombination(str(exc)) from None

    def label(key: str) -> str | None:
        return info.labels.get(images.LABEL_PREFIX + key) or None

    release = label("release")
    if not release:
        raise InvalidCombination(f"{image} has no {images.LABEL_PREFIX}release label: pass --release and --framework")
    # the toolkit reads the image's environment, not our labels: an image built by an older
    # build.py carries an older requirement than this matrix renders
    return Subject(find_release(matrix, release), label("framework"),
                   (label("cuda.version") or "cpu") if label("device") else None,
                   requirement.from_env(info.env))


def _subject(matrix: Matrix, facts: HostFacts, args: argparse.Namespace) -> Subject:
    if args.image:
        return _image_subject(matrix, args.image)
    cell = baked()
    installed = cell.release if cell is not None else facts.packages.get("dynamo")
    if args.framework:
        check_framework(matrix, args.framework)
    device = _asked_device(matrix, facts, args, cell)
    release = find_release(matrix, args.release) if args.release else \
        release_to_judge(matrix, installed, args.framework, device)
    framework = args.framework
    if framework is None:  # the engine installed here; the newest release that has it, unless one was asked for
        installed_engines = [fw for fw, pkg in FRAMEWORK_PACKAGES.items() if facts.packages.get(pkg)]
        framework = next((fw for fw in installed_engines if fw in matrix.release[release].engines), None)
        if framework is None and installed_engines and not args.release:
            framework = installed_engines[0]
            device = device or host_device(matrix, facts, framework)
            release = release_to_judge(matrix, None, framework, device)
    if device is None and framework:
        device = host_device(matrix, facts, framework)
    return Subject(release, framework, device)


def _asked_device(matrix: Matrix, facts: HostFacts, args: argparse.Namespace, cell: ImageCell | None) -> str | None:
    """--cuda; else, in one of our images, the device it was built for; else the host's for --framework."""
    device = args.cuda.lower().removeprefix("cuda") if args.cuda else None
    if device is None and cell is not None and args.framework in (None, cell.framework):
        device = cell.device
    if device is None and args.framework:
        device = host_device(matrix, facts, args.framework)
    return device


def finding_lines(finding: Finding, width: int) -> list[str]:
    """A finding as the report prints it: its mark, check (padded to width) and message, then its fix."""
    lines = [f"{MARKS[finding.status]} {finding.check.ljust(width)}  {finding.message}"]
    if finding.fix and finding.status != "ok":
        lines.append(f"  {' ' * width}  fix: {finding.fix}")
    return lines


def text_report(subject: Subject, facts: HostFacts, findings: list[Finding]) -> str:
    what = ", ".join(filter(None, [f"release {subject.release}", subject.framework,
                                   f"CUDA {subject.device}" if subject.device not in (None, "cpu") else subject.device]))
    gpus = f"{len(facts.gpus)} GPU(s)" if facts.gpus else "no GPU"
    lines = [f"dynamo doctor: {what} on {facts.arch}, {facts.os_name or facts.os_id or 'unknown OS'},"
             f" Python {facts.python}, {gpus}"]
    width = max((len(f.check) for f in findings), default=0)
    for finding in findings:
        lines += finding_lines(finding, width)
    failed = sum(f.status == FAIL for f in findings)
    lines.append(f"{failed} check(s) failed" if failed else "no check failed")
    return "\n".join(lines)


def run(matrix: Matrix, args: argparse.Namespace) -> int:
    try:
        facts = recorded_facts(matrix, Path(args.facts)) if args.facts is not None else live_facts(args.record)
    except RecordingInvalid as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    subject = subject_for(matrix, facts, args)
    findings = judge(matrix, facts, subject, args.scope)
    if args.json:
        print(json.dumps({"subject": subject.__dict__, "facts": facts.to_json(),
                          "findings": [f.to_json() for f in findings],
                          "failed": sum(f.status == FAIL for f in findings)}, indent=2))
    else:
        print(text_report(subject, facts, findings))
    return 1 if any(f.status == FAIL for f in findings) else 0


def recorded_facts(matrix: Matrix, directory: Path) -> HostFacts:
    """--facts DIR: a recording, refused when unreadable or when it says what no host prints."""
    if not directory.is_dir():
        raise RecordingInvalid([f"--facts {directory}: no such directory of recorded host facts"])
    facts = from_recording(directory)
    if problems := contradictions(matrix, facts, str(directory)):
        raise RecordingInvalid(problems)
    return facts


def live_facts(record_to: str | None) -> HostFacts:
    """This host's facts; with --record DIR, what its sources printed is written there too."""
    recording = record()
    facts = interpret(recording, "this host")
    if record_to is not None:
        directory = Path(record_to)
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in recording.items():
            (directory / name).write_text(text)
    return facts
