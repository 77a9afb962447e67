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

from dynamo.matrix import InvalidCombination, MatrixInvalid, load, targets
from dynamo.matrix.load import default_path, display_name
from dynamo.matrix.query import engine_for, find_release
from dynamo.matrix.report import release_report, targets_table

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


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


def _render(args: argparse.Namespace) -> int:
    from dynamo import render  # jinja2 is needed here only

    try:
        outputs = render.render_all(load(args.matrix))
    except render.RenderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.check:
        problems = render.check(outputs)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print(f"{len(problems)} generated file(s) out of date; run `python build.py render`", file=sys.stderr)
            return EXIT_FAILED
        print(f"ok: {len(outputs)} generated files match the matrix")
        return EXIT_OK
    render.write(outputs)
    print(f"rendered {len(outputs)} files")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dynamo", description="Build, verify and check LLM-serving images against the support matrix.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    matrix = commands.add_parser("matrix", help="list, show and check the support matrix")
    actions = matrix.add_subparsers(dest="action", metavar="ACTION", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--matrix", metavar="PATH",
                        help="the support matrix to read (default: $DYNAMO_MATRIX or matrix/support_matrix.toml)")

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

    render = commands.add_parser("render", parents=[common],
                                 help="write every generated file (Dockerfiles, constraints, docs, bake plan)")
    render.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 listing each generated file that differs")
    render.set_defaults(run=_render)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except MatrixInvalid as exc:
        print("\n".join(exc.lines()), file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) in the support matrix", file=sys.stderr)
        return EXIT_USAGE
    except InvalidCombination as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `dynamo matrix list | head`
        sys.stderr.close()
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
