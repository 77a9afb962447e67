"""`dynamo doctor`: can this host run this image? Host facts, judged against the matrix.

Its command-line arguments live here, beside nothing heavy: every `dynamo` command's parser has them,
and the facts and the judge load only when the doctor runs."""

from __future__ import annotations

import argparse

SCOPES = ("all", "host")  # host: only what the host decides for a container (CPU, driver, GPUs)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--release", help="default: the installed dynamo's release, else the latest")
    parser.add_argument("--framework", help="default: the installed engine, if any")
    parser.add_argument("--cuda", help="the image's CUDA (default: the container's, else the release's default)")
    parser.add_argument("--image", help="judge this host for an image: read the release, framework and CUDA"
                                        " from its labels")
    parser.add_argument("--require", metavar="TEXT", action="append",
                        help="judge the NVIDIA container toolkit's answer to this NVIDIA_REQUIRE_* value (repeat: ANDed;"
                             " \"\" requires nothing) instead of the image's own or the matrix's")
    parser.add_argument("--cdi", action="store_true",
                        help="the container gets its GPUs through CDI (podman, docker --device nvidia.com/gpu=...),"
                             " where the NVIDIA container toolkit checks no NVIDIA_REQUIRE_*")
    parser.add_argument("--facts", metavar="DIR", help="judge facts recorded on another machine instead of this one")
    parser.add_argument("--record", metavar="DIR", help="also write what this host's sources printed to DIR, the"
                                                        " recording that --facts reads")
    parser.add_argument("--scope", choices=SCOPES, default="all",
                        help="host: only the checks a host decides for a container (CPU, driver, GPUs), as"
                             " container/run.sh runs them before `docker run`")
    parser.add_argument("--json", action="store_true", help="print JSON for machines")
