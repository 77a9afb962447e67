"""The `matrix import` and `matrix bump` subcommands (their work is in `dynamo.matrix.update`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dynamo.matrix.load import MatrixInvalid, default_path, display_name, load, loads


def add_commands(actions: argparse._SubParsersAction[argparse.ArgumentParser],
                 common: argparse.ArgumentParser) -> None:
    """Register `import` and `bump` under `matrix`."""
    importing = actions.add_parser("import", parents=[common], help="add a release from a released ai-dynamo wheel's"
                                   " metadata (its extras' engine and NIXL pins)")
    importing.add_argument("version", help="the ai-dynamo wheel's version, e.g. 1.6.1 or 1.3.0.post1")
    importing.add_argument("--release", help="the release's name when it is not the wheel's version (1.3.0 for 1.3.0.post1)")
    importing.add_argument("--index-url", help="a simple package index (default: pip's, i.e. PyPI)")
    importing.add_argument("--find-links", metavar="DIR", help="a folder of wheels instead of an index")
    importing.add_argument("--published", metavar="DATE", help="the release date, YYYY-MM-DD or YYYY-MM")
    _engine_flags(importing)
    importing.set_defaults(run=_import)

    bumping = actions.add_parser("bump", parents=[common], help="change the pins of a release in place")
    bumping.add_argument("--release", required=True)
    bumping.add_argument("--engine", action="append", metavar="ENGINE=VERSION", help="e.g. vllm=0.31.0, repeatable")
    _engine_flags(bumping)
    bumping.set_defaults(run=_bump)


def _engine_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cuda", action="append", metavar="ENGINE=X.Y[,X.Y]", help="an engine's CUDA toolkits, repeatable")
    parser.add_argument("--nixl", action="append", metavar="ENGINE=VERSION", help="an engine's NIXL, repeatable")


def _write_validated(path: Path, text: str, what: str) -> int:
    source = display_name(path)
    try:
        loads(text, source)  # MatrixInvalid names every problem; nothing is written
    except MatrixInvalid as exc:
        print("\n".join(exc.lines()), file=sys.stderr)
        print(f"nothing written: {source} would not validate with {what}", file=sys.stderr)
        return 2
    path.write_text(text, encoding="utf-8")
    print(f"{source}: {what}")
    return 0


def _flags(args: argparse.Namespace) -> tuple[dict[str, list[str]], dict[str, str]]:
    from dynamo.matrix.update import pairs

    cuda = {fw: [v.strip() for v in value.split(",")] for fw, value in pairs(args.cuda, "--cuda").items()}
    return cuda, pairs(args.nixl, "--nixl")


def _import(args: argparse.Namespace) -> int:
    from dynamo.matrix.update import UpdateError, fetch_metadata, import_release, release_from_metadata

    path = Path(args.matrix) if args.matrix else default_path()
    matrix = load(path)
    try:
        cuda, nixl = _flags(args)
        metadata = fetch_metadata(args.version, args.index_url, args.find_links)
        name = args.release or metadata["Version"]
        release = release_from_metadata(matrix, metadata, name=name, cuda=cuda, nixl=nixl, published=args.published)
        text = import_release(path.read_text(encoding="utf-8"), release, name)
    except UpdateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    engines = ", ".join(f"{fw} {e['version']}" for fw, e in release["engines"].items() if e)
    return _write_validated(path, text, f"added release {name} ({engines})")


def _bump(args: argparse.Namespace) -> int:
    from dynamo.matrix.update import UpdateError, bump, pairs

    path = Path(args.matrix) if args.matrix else default_path()
    try:
        cuda, nixl = _flags(args)
        engines = pairs(args.engine, "--engine")
        if not (engines or cuda or nixl):
            raise UpdateError("nothing to change: pass --engine ENGINE=VERSION, --nixl or --cuda")
        text = bump(path.read_text(encoding="utf-8"), args.release, engines, nixl, cuda)
    except UpdateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    changed = ", ".join(f"{k}={v}" for k, v in engines.items()) or "NIXL/CUDA"
    return _write_validated(path, text, f"bumped release {args.release} ({changed})")
