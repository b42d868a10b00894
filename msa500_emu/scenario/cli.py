"""`msa500-emu scenario run FILE`: run a scenario file against a running array, or in-process on the
virtual clock; print its timeline; exit 0 when every check passed, 1 when one failed, 2 for a file
that cannot run, 3 when the array cannot be reached."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..management.auth import TOKEN_ENV, TokenError, find_token
from .format import ScenarioError, load
from .runner import run_on, run_virtual
from .targets import attach

EXIT_FAILED, EXIT_BAD_FILE, EXIT_UNREACHABLE = 1, 2, 3


def _parser() -> argparse.ArgumentParser:
    from ..cli import DEFAULT_API

    p = argparse.ArgumentParser(prog="msa500-emu scenario", description="repeatable storage drills "
                                "(docs/scenarios.md)")
    sub = p.add_subparsers(dest="action", required=True)
    r = sub.add_parser("run", help="run a scenario file and print its timeline")
    r.add_argument("file", type=Path, metavar="FILE", help="the scenario (TOML, format = 1)")
    r.add_argument("--api", default=DEFAULT_API, metavar="URL", help=f"the array's API (default {DEFAULT_API})")
    r.add_argument("--token-file", type=Path, metavar="FILE",
                   help=f"the API token (default: ${TOKEN_ENV}, else the one the array recorded for this user)")
    r.add_argument("--virtual-clock", action="store_true",
                   help="run in-process on a new shelf (the file's `shelf`) on the virtual clock: no array needed")
    c = sub.add_parser("check", help="read and check a scenario file without running it")
    c.add_argument("file", type=Path, metavar="FILE")
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        scenario = load(args.file)
    except ScenarioError as exc:
        print(f"msa500-emu scenario: {exc}", file=sys.stderr)
        return EXIT_BAD_FILE
    if args.action == "check":
        print(f"{args.file}: {len(scenario.steps)} steps, format 1: ok")
        return 0
    try:
        if args.virtual_clock:
            result = run_virtual(scenario, sys.stdout)
        else:
            base = args.api if "://" in args.api else f"http://{args.api}"
            try:
                token = find_token(base, args.token_file)
            except TokenError as exc:
                print(f"msa500-emu scenario: {exc}", file=sys.stderr)
                return EXIT_UNREACHABLE
            try:
                array = attach(base, token)
            except ScenarioError as exc:
                print(f"msa500-emu scenario: {exc}", file=sys.stderr)
                return EXIT_UNREACHABLE
            result = run_on(array, scenario, sys.stdout)
    except ScenarioError as exc:
        print(f"msa500-emu scenario: {exc}", file=sys.stderr)
        return EXIT_BAD_FILE
    except KeyboardInterrupt:
        print("msa500-emu scenario: interrupted", file=sys.stderr)
        return EXIT_FAILED
    print(result.summary())
    return 0 if result.ok else EXIT_FAILED
