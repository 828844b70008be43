"""Command line: runs the chosen groups and writes the report.

Exits 0 when every installed contender ran, 1 when any of them raised (the
report is still written, with the error in its notes and the traceback on
stderr).
"""

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

from . import _report, build, compute, dispatch, memory, recurrent, transformer
from . import compile as compile_group
from ._common import Settings

GROUPS = {
    "dispatch": dispatch,
    "compute": compute,
    "recurrent": recurrent,
    "transformer": transformer,
    "memory": memory,
    "compile": compile_group,
    "build": build,
}


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="blox against raw JAX, Equinox, Flax NNX and PyTorch.",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: few rounds, short loops")
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(GROUPS),
        metavar="GROUP",
        help=f"run only this group (repeatable); one of {', '.join(GROUPS)}",
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        metavar="N",
        help="torch.set_num_threads(N) first (default: leave PyTorch's default)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("docs/benchmarks.md"),
        help="markdown report path; the chart goes next to it as .png",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parse(argv)
    settings = Settings.make(args.quick)
    groups = [name for name in GROUPS if not args.only or name in args.only]
    if args.torch_threads is not None:
        import torch

        torch.set_num_threads(args.torch_threads)
    load_start = os.getloadavg()[0]
    start = time.perf_counter()
    results = []
    for name in groups:
        print(f"[benchmarks] group {name}", file=sys.stderr)
        results += GROUPS[name].run(settings)
    written = _report.write(
        results,
        out=args.out,
        command=shlex.join(["python", "-m", "benchmarks", *argv]),
        settings=settings,
        groups=groups,
        seconds=time.perf_counter() - start,
        load=(load_start, os.getloadavg()[0]),
    )
    print(args.out.read_text())
    print(f"[benchmarks] wrote {written['markdown']} and {written['plot']}", file=sys.stderr)
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
