"""Command line: `dynamo ...` and `python build.py ...` share these subcommands.

Every failure the user can cause (a broken matrix, an unknown value, an impossible combination)
ends in one line per problem on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from dynamo.containers import CHOICES as ENGINE_CHOICES
from dynamo.doctor import add_arguments as doctor_arguments
from dynamo.matrix import InvalidCombination, Matrix, MatrixInvalid, load, targets
from dynamo.matrix.load import default_path, display_name
from dynamo.matrix.query import engine_for, find_release
from dynamo.matrix.report import release_report, targets_table

if TYPE_CHECKING:
    from dynamo.containers import ContainerEngine
    from dynamo.imagebuild.plan import BuildPlan

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _error(message: object, code: int = EXIT_USAGE) -> int:
    """One line on stderr; the exit code to return."""
    print(f"error: {message}", file=sys.stderr)
    return code


def _matrix_list(args: argparse.Namespace) -> int:
    matrix = load(args.matrix)
    found = targets(matrix, release=args.release, framework=args.framework)
    if args.json:
        print(json.dumps([dataclasses.asdict(t) | {"name": t.name} for t in found], indent=2))
    else:
        print(targets_table(found))
        print(f"\n{len(found)} build targets")
    return EXIT_OK


def _matrix_show(args: argparse.Namespace) -> int:
    matrix = load(args.matrix)
    release = find_release(matrix, args.release or matrix.latest)
    if args.framework is not None:
        engine_for(matrix, release, args.framework)
    print(release_report(matrix, release, args.framework), end="")
    return EXIT_OK


def _matrix_check(args: argparse.Namespace) -> int:
    matrix = load(args.matrix)
    count = len(targets(matrix))
    source = display_name(default_path()) if args.matrix is None else args.matrix
    print(f"{source}: ok ({len(matrix.release)} releases, {len(matrix.framework)} frameworks,"
          f" {count} build targets)")
    return EXIT_OK


def _matrix_pin(args: argparse.Namespace) -> int:
    from dynamo import pin

    path = default_path() if args.matrix is None else Path(args.matrix)
    return pin.run(load(path), path, args)


def _render(args: argparse.Namespace) -> int:
    from dynamo import render  # jinja2 is needed here only

    matrix = load(args.matrix)
    try:
        outputs = render.render_all(matrix)
    except render.RenderError as exc:
        return _error(exc)
    if args.check:
        from dynamo.lock import drift
        problems, stale = render.check(outputs), drift(matrix)  # committed locks follow the matrix too
        for problem in problems + stale:
            print(problem, file=sys.stderr)
        if problems:
            print(f"{len(problems)} generated file(s) out of date; run `python build.py render`", file=sys.stderr)
        if stale:
            print(f"{len(stale)} problem(s) in committed locks; run `python build.py lock`", file=sys.stderr)
        if problems or stale:
            return EXIT_FAILED
        print(f"ok: {len(outputs)} generated files match the matrix")
        return EXIT_OK
    render.write(outputs)
    print(f"rendered {len(outputs)} files")
    return EXIT_OK


def _build(args: argparse.Namespace) -> int:
    from dynamo.containers import ContainerEngineError, get_engine
    from dynamo.imagebuild.image import Progress, build_image
    from dynamo.imagebuild.plan import PlanError, make_plan

    matrix = load(args.matrix)
    try:
        plan = make_plan(
            matrix, framework=args.framework, cuda=args.cuda, release=args.release,
            platforms=args.platform.split(",") if args.platform is not None else None, python=args.python, stage=args.target,
            tags=args.tag, build_args=args.build_arg, base_image=args.base_image, ca_cert=args.ca_cert,
            push=args.push, no_cache=args.no_cache, cache_from=args.cache_from, cache_to=args.cache_to,
            unlocked=args.unlocked)
    except PlanError as exc:
        return _error(exc)
    for warning in plan.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    try:
        engine = get_engine(args.engine)
    except ContainerEngineError as exc:
        if not args.dry_run:
            return _error(exc, EXIT_FAILED)
        from dynamo.containers import Buildah
        print(f"note: {exc}; showing the buildah command", file=sys.stderr)
        engine = Buildah()
    if (low := low_disk(matrix, plan, engine)) and not args.dry_run:
        print(f"warning: {low}", file=sys.stderr)
    if args.dry_run:
        try:
            command = engine.describe_build(plan.request, "localhost/dynamo-build-tmp:ID")
        except ContainerEngineError as exc:
            return _error(exc, EXIT_FAILED)
        print(describe_plan(plan, engine.name, command))
        return EXIT_OK
    try:
        summary = build_image(plan, engine, Progress(verbose=args.verbose))
    except ContainerEngineError as exc:
        return _error(f"{exc}; no tag was moved", EXIT_FAILED)
    except KeyboardInterrupt:
        print("interrupted: no tag was moved", file=sys.stderr)
        return 130
    for warning in summary.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(summary.text())
    return EXIT_OK


def low_disk(matrix: Matrix, plan: BuildPlan, engine: ContainerEngine) -> str | None:
    """Why the engine's store may run out of space during this build (the matrix's measured peak), or None."""
    import shutil

    need = matrix.framework[plan.targets[0].framework].build_disk_gib
    path = Path(engine.store_path)
    while not path.exists() and path != path.parent:
        path = path.parent
    if not need or not path.exists():
        return None
    free = shutil.disk_usage(path).free / 2**30
    if free >= need * len(plan.targets):
        return None
    return (f"{free:.0f} GiB free in {path}, and a {plan.targets[0].framework} image needs about"
            f" {need * len(plan.targets)} GiB at its peak: free some space (e.g. `{engine.name.split('-')[0]} image prune`)"
            " or the build may fail near its end")


def describe_plan(plan: BuildPlan, engine_name: str, command: str) -> str:
    """Everything --dry-run promises: the resolved target, tags, labels and the exact command."""
    from dynamo.matrix.report import table

    t = plan.target
    rows = [("target", f"{t.release} {t.framework} {t.device} ({t.status})"),
            ("platforms", ", ".join(plan.platforms)), ("stage", plan.stage),
            ("engine package", t.engine_requirement or "(none)"), ("extra pins", ", ".join(t.extra_requirements) or "-"),
            ("nixl", t.nixl_requirement or "(none)"), ("python", t.python),
            ("cuda", f"{t.cuda} (Linux driver >= {t.driver_linux}; published {t.published_linux} / {t.published_windows})"
             if t.cuda else "none (CPU)"),
            ("compute capabilities", " ".join(t.cuda_archs) or "-"),
            ("base image", plan.build_args["BASE_IMAGE"]), ("runtime image", plan.build_args["RUNTIME_IMAGE"]),
            ("ca bundle", f"{plan.ca_cert} (build secret, not in any layer)" if plan.ca_cert else "-")]
    lines = [table(("RESOLVED", "VALUE"), rows), "", "tags:"]
    lines += [f"  {tag}" for tag in plan.tags]
    lines += ["labels:"] + [f"  {k}={v}" for k, v in plan.labels().items()]
    lines += ["", f"{engine_name} would run:", f"  {command}"]
    return "\n".join(lines)


def _verify(args: argparse.Namespace) -> int:
    from dynamo.attest import CHECKOUT
    from dynamo.containers import ContainerEngineError, engine_with_image
    from dynamo.imagebuild.verify import report, verify

    matrix = load(args.matrix)
    if args.reproduce:
        return _reproduce(matrix, args)
    try:
        checks = verify(matrix, engine_with_image(args.image, args.engine), args.image,
                        args.attestations or CHECKOUT)
    except ContainerEngineError as exc:
        return _error(exc, EXIT_FAILED)
    print(report(args.image, checks))
    return EXIT_OK if all(check.ok for check in checks) else EXIT_FAILED


def _lock(args: argparse.Namespace) -> int:
    from dynamo import lock

    return lock.run(load(args.matrix), args)


def _attest(args: argparse.Namespace) -> int:
    from dynamo import attest

    return attest.run(args)


def _reproduce(matrix: Matrix, args: argparse.Namespace) -> int:
    from dynamo.containers import ContainerEngineError, engine_class
    from dynamo.imagebuild.image import Progress
    from dynamo.imagebuild.plan import PlanError
    from dynamo.imagebuild.reproduce import reproduce

    if args.engine is not None and not engine_class(args.engine).stamps_files:
        return _error(f"--reproduce rebuilds with buildah (the engine that stamps every file with the commit's time);"
                      f" drop --engine {args.engine}")
    try:
        result = reproduce(matrix, args.image, ca_cert=args.ca_cert, progress=Progress(verbose=args.verbose))
    except PlanError as exc:
        return _error(exc)
    except ContainerEngineError as exc:
        return _error(exc, EXIT_FAILED)
    print(result.text(args.image))
    return EXIT_OK if result.identical else EXIT_FAILED


def _doctor(args: argparse.Namespace) -> int:
    from dynamo.doctor import cli as doctor

    return doctor.run(load(args.matrix), args)


MATRIX_HELP = "the support matrix to read (default: $DYNAMO_MATRIX or matrix/support_matrix.toml)"


def build_parser(prog: str = "dynamo") -> argparse.ArgumentParser:
    """`prog` is how the user called us: `dynamo`, or `python build.py`, where `build` is implicit."""
    parser = argparse.ArgumentParser(
        prog=prog, description="Build, verify and check LLM-serving images against the support matrix.")
    # --matrix goes before the command (`dynamo --matrix F doctor`) or after it (`matrix check --matrix F`).
    parser.add_argument("--matrix", metavar="PATH", help=MATRIX_HELP)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    matrix = commands.add_parser("matrix", help="list, show, check, import and bump the support matrix")
    actions = matrix.add_subparsers(dest="action", metavar="ACTION", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--matrix", metavar="PATH", default=argparse.SUPPRESS, help=MATRIX_HELP)

    listing = actions.add_parser("list", parents=[common], help="a table of every valid build target")
    listing.add_argument("--release", help="only this release")
    listing.add_argument("--framework", help="only this framework")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(run=_matrix_list)

    show = actions.add_parser("show", parents=[common], help="everything the matrix says about one release")
    show.add_argument("--release", help="the release (default: the latest)")
    show.add_argument("--framework", help="only this framework")
    show.set_defaults(run=_matrix_show)

    check = actions.add_parser("check", parents=[common], help="validate the matrix and list every problem")
    check.set_defaults(run=_matrix_check)

    pin = actions.add_parser("pin", parents=[common], help="record each base and runtime image's digest from its registry")
    pin.add_argument("--check", action="store_true", help="write nothing; exit 1 naming each image unpinned or moved")
    pin.set_defaults(run=_matrix_pin)
    from dynamo.matrix.commands import add_commands
    add_commands(actions, common)  # matrix import, matrix bump

    render = commands.add_parser("render", parents=[common],
                                 help="write every generated file (Dockerfiles, constraints, docs, bake plan)")
    render.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 listing each generated file that differs")
    render.set_defaults(run=_render)

    build = commands.add_parser("build", parents=[common], help="build an image of a matrix cell (the default)",
                                prog=prog if prog.endswith("build.py") else f"{prog} build",
                                description="Build an image; `python build.py --framework vllm --cuda 12.9`.")
    build.add_argument("--framework", required=True, help="vllm, sglang, trtllm, llama_cpp or frontend")
    build.add_argument("--cuda", help="CUDA toolkit, e.g. 12.9, or cpu (default: the newest supported)")
    build.add_argument("--release", help="default: the matrix's latest release")
    build.add_argument("--platform", help="e.g. linux/amd64,linux/arm64 (default: this host's)")
    build.add_argument("--python", help="default: the release's default Python")
    build.add_argument("--target", default="runtime", help="runtime (default) or dev")
    build.add_argument("--tag", action="append", help="image tag, repeatable (default: dynamo:<release>-<framework>-<device>"
                                                      " and dynamo:latest-<framework>)")
    build.add_argument("--push", action="store_true", help="push the tags after a successful build")
    build.add_argument("--no-cache", action="store_true")
    build.add_argument("--cache-from", action="append")
    build.add_argument("--cache-to", action="append")
    build.add_argument("--build-arg", action="append", metavar="KEY=VALUE", help="override a build arg, repeatable")
    build.add_argument("--base-image", metavar="REF", help="build on this image instead of the matrix's base images:"
                       " it replaces both the devel image (stages base, dev) and the runtime image (runtime)")
    build.add_argument("--engine", choices=ENGINE_CHOICES, help="default: detected (docker with buildx, buildah,"
                                                               " podman, then docker's classic builder)")
    build.add_argument("--ca-cert", metavar="FILE", help="CA bundle for TLS-intercepting proxies; never kept in the image")
    build.add_argument("--unlocked", action="store_true",
                       help="build without the cell's lock (resolved at build time, not reproducible; labelled dev.dynamo.lock=none)")
    build.add_argument("--dry-run", action="store_true", help="print the resolved target and the command; build nothing")
    build.add_argument("--verbose", action="store_true", help="show the engine's full output")
    build.set_defaults(run=_build)

    verify = commands.add_parser("verify", parents=[common], help="check an image's contents against its labels and the matrix, and the image against its SBOM and provenance")
    verify.add_argument("image")
    verify.add_argument("--engine", choices=ENGINE_CHOICES, help="default: detected")
    verify.add_argument("--attestations", metavar="DIR", type=Path,
                        help="the folder whose attestations/ has the image's SBOM and provenance (default: this"
                             " checkout; what `attest --out` wrote to)")
    verify.add_argument("--reproduce", action="store_true",
                        help="rebuild the image from its recorded inputs (labels) with empty caches and compare")
    verify.add_argument("--ca-cert", metavar="FILE", help="with --reproduce: CA bundle for TLS-intercepting proxies")
    verify.add_argument("--verbose", action="store_true", help="with --reproduce: show the engine's full output")
    verify.set_defaults(run=_verify)

    lock = commands.add_parser("lock", parents=[common], help="pin and hash every Python package of each cell (uv)")
    lock.add_argument("--release", help="the release to lock (default: the latest)")
    lock.add_argument("--framework", help="only this framework")
    lock.add_argument("--check", action="store_true", help="write nothing; exit 1 naming each missing or stale lock")
    lock.add_argument("--hashes", action="store_true", help="with --check: also ask the index for every locked hash")
    lock.set_defaults(run=_lock)

    attest = commands.add_parser("attest", help="write (or --check) an image's SBOMs and SLSA provenance beside it")
    attest.add_argument("image")
    attest.add_argument("--engine", choices=ENGINE_CHOICES, help="default: the engine whose store has the image")
    attest.add_argument("--out", metavar="DIR", type=Path, help="where attestations/ goes (default: this checkout)")
    attest.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 naming each way the image disagrees with its SBOMs or provenance")
    attest.set_defaults(run=_attest)

    doctor = commands.add_parser("doctor", parents=[common], help="can this host run this release/image? checks and fixes")
    doctor_arguments(doctor)
    doctor.set_defaults(run=_doctor)
    return parser


def _command_index(argv: list[str]) -> int:
    """Where the subcommand is: after the global options (--matrix PATH)."""
    index = 0
    while index < len(argv) and (argv[index] == "--matrix" or argv[index].startswith("--matrix=")):
        index += 1 if "=" in argv[index] else 2
    return index


def _with_command(argv: list[str]) -> list[str]:
    """`python build.py --framework vllm ...` means `build --framework vllm ...`; global options
    (--matrix PATH) may come first either way."""
    index = _command_index(argv)
    if index < len(argv) and argv[index].startswith("--") and argv[index] != "--help":
        return [*argv[:index], "build", *argv[index:]]
    return argv


# Options that mean something when given as "": `doctor --require ""` requires nothing.
EMPTY_MEANS_SOMETHING = ("require",)
# What an empty option needs instead, where its help does not say it in a few words.
EXPECTED = {"cuda": "a CUDA version of the matrix such as 12.9, or cpu",
            "platform": "OS/ARCH[,OS/ARCH...], e.g. linux/amd64 or linux/amd64,linux/arm64",
            "release": "a release of the matrix such as 0.8.1 (`dynamo matrix list`)",
            "python": "a Python version of the release such as 3.12", "facts": "the folder `doctor --record DIR` wrote",
            "framework": "vllm, sglang, trtllm, llama_cpp or frontend"}


def _options(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Every option's destination and its flag, through the subcommands."""
    found: dict[str, str] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _options(sub)
        elif action.option_strings:
            found[action.dest] = action.option_strings[-1]
    return found


def bad_value(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str | None:
    """The first option given as "" (which would silently mean "not given") or image reference that no
    engine could read (which would end in the engine's own traceback): one line naming it."""
    from dynamo.matrix import checks

    image = getattr(args, "image", None)  # verify's and attest's IMAGE, doctor's --image
    if image is not None and (problem := checks.any_image_ref(image)) is not None:
        return f"{'--image' if args.command == 'doctor' else 'IMAGE'} {image!r} is not an image reference: {problem}"
    for dest, flag in _options(parser).items():
        value = getattr(args, dest, None)
        values = value if isinstance(value, list) else [value]
        if dest not in EMPTY_MEANS_SOMETHING and any(isinstance(v, str) and not v.strip() for v in values):
            return f"{flag} needs a value" + (f": {EXPECTED[dest]}" if dest in EXPECTED else "")
    return None


def main(argv: Sequence[str] | None = None, prog: str = "dynamo") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(_with_command(list(sys.argv[1:] if argv is None else argv)))
    if (problem := bad_value(parser, args)) is not None:
        return _error(problem)
    try:
        code: int = args.run(args)
        return code
    except MatrixInvalid as exc:
        print("\n".join(exc.lines()), file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) in the support matrix", file=sys.stderr)
        return EXIT_USAGE
    except InvalidCombination as exc:
        return _error(exc)
    except BrokenPipeError:  # `dynamo matrix list | head`
        sys.stderr.close()
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
