"""`msa500-emu replay FILE`: re-run a recording on a fresh array and report the first divergence.

Exit 0 when every command got the recorded answer, 1 at a divergence, 2 for a file that is not a
readable recording, 3 when the array cannot be started or reached. Without --api the fresh array
is built in-process from the recording's own shelf TOML (real portals on free loopback ports, on a
thread of this process, in a temporary directory): no second process to find or to leave behind,
and it starts in about a second.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..management.auth import TOKEN_ENV, TokenError, find_token
from .format import RecordingError, validate
from .replay import NO_ANSWER_WAIT_S, run
from .state import replay_config

EXIT_DIVERGED, EXIT_BAD_FILE, EXIT_UNREACHABLE = 1, 2, 3


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="msa500-emu replay", description="re-run a recording (docs/recording.md) "
                                "on a fresh array and report the first command whose answer differs")
    p.add_argument("file", type=Path, metavar="FILE", help="the recording (JSON lines, format version 1)")
    p.add_argument("--api", metavar="URL", help="replay against this running array (fresh, built from the same "
                                                "shelf) instead of one started in-process")
    p.add_argument("--token-file", type=Path, metavar="FILE",
                   help=f"--api: the API token (default: ${TOKEN_ENV}, else the one the array recorded for this user)")
    p.add_argument("--at-recorded-times", action="store_true",
                   help="wait for each record's recorded time (for runs that hang on timers: RSO timeouts, "
                        "NOP timeouts); default: in order, as fast as the array answers")
    p.add_argument("--no-answer-wait", type=float, default=NO_ANSWER_WAIT_S, metavar="S",
                   help=f"how long a command recorded without an answer is given (default {NO_ANSWER_WAIT_S:g} s)")
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if not 0.1 <= args.no_answer_wait <= 600:
        print("msa500-emu replay: --no-answer-wait: 0.1 to 600 seconds", file=sys.stderr)
        return EXIT_BAD_FILE
    try:
        head, _commands, _ended = validate(args.file)  # a bad line is exit 2 before any array starts
    except RecordingError as exc:
        print(f"msa500-emu replay: {exc}", file=sys.stderr)
        return EXIT_BAD_FILE
    from ..scenario.format import ScenarioError
    from ..testing.errors import MSA500Error

    tmp: Path | None = None
    array: Any = None
    try:
        if args.api:
            from ..scenario.targets import attach

            base = args.api if "://" in args.api else f"http://{args.api}"
            try:
                array = attach(base, find_token(base, args.token_file))
            except (TokenError, ScenarioError) as exc:
                print(f"msa500-emu replay: {exc}", file=sys.stderr)
                return EXIT_UNREACHABLE
        else:
            from ..testing.launch import start_array

            tmp = Path(tempfile.mkdtemp(prefix="msa500-replay-"))
            try:
                array = start_array(tmp / "shelf", config=replay_config(head["config"]), mode="inprocess")
            except MSA500Error as exc:
                print(f"msa500-emu replay: cannot build the recorded shelf: {str(exc).splitlines()[0]}",
                      file=sys.stderr)
                return EXIT_UNREACHABLE
        print(f"replaying {args.file}: recorded {head['started_at']} by msa500-emu {head.get('emulator', '?')}, "
              f"against {'the array at ' + array.api if args.api else 'a fresh in-process array'}", flush=True)
        result = run(array, args.file, at_recorded_times=args.at_recorded_times, no_answer_wait=args.no_answer_wait,
                     progress=sys.stderr)
    except RecordingError as exc:
        print(f"msa500-emu replay: {exc}", file=sys.stderr)
        return EXIT_BAD_FILE
    except MSA500Error as exc:
        print(f"msa500-emu replay: {str(exc).splitlines()[0]}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        print("msa500-emu replay: interrupted", file=sys.stderr)
        return EXIT_DIVERGED
    finally:
        if array is not None and not args.api:
            array.stop()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    print(result.text())
    return 0 if result.ok else EXIT_DIVERGED
