"""Command line: `python -m bench [run|scale|storm] [flags]` (see bench/README.md)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from bench import procs, report, variants
from bench.procs import LOAD_CPU, pinning_available

COMMANDS = ("run", "scale", "storm")


def _list(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part.strip()]


def parser() -> argparse.ArgumentParser:
    """The argument parser; `run` is the default command."""
    top = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="throughput of every variant under wrk (the default)")
    run.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    run.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    run.add_argument("--variants", default="default", help="comma list, 'default' or 'all'")
    run.add_argument("--connections", type=int, default=32)
    run.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    scale = sub.add_parser("scale", help="hit cost vs Redis size; embedded store footprint")
    scale.add_argument("--entries", type=_list, default=[1000, 1_000_000])
    scale.add_argument("--filler-body", type=int, default=256, help="bytes per filler body")
    scale.add_argument("--duration", type=float, default=5.0)
    scale.add_argument("--rounds", type=int, default=3)
    scale.add_argument("--connections", type=int, default=32)
    scale.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    scale.add_argument("--memory-entries", type=int, default=100_000)
    scale.add_argument("--memory-bodies", type=_list, default=[256, 13_000])
    scale.add_argument("--memory-max-bytes", type=int, default=64 << 20)
    scale.add_argument("--skip", choices=["redis", "memory"], default=None)
    storm = sub.add_parser("storm", help="cold-key miss storm against a slow handler")
    storm.add_argument("--clients", type=int, default=200)
    storm.add_argument("--slow-delay", type=float, default=0.1, help="handler seconds")
    storm.add_argument("--rounds", type=int, default=3, help="storms per variant (new keys)")
    storm.add_argument("--keys", type=int, default=1, help="distinct cold keys per storm")
    storm.add_argument(
        "--variants",
        default="uncached,cachekit-memory,cachekit-redis",
        help="comma list of variants (peers too, e.g. cashews-redis)",
    )
    for command in (run, scale, storm):
        command.add_argument(
            "--loop",
            choices=procs.EVENT_LOOPS,
            default="asyncio",
            help="event loop of the server processes (uvloop: pip install uvloop)",
        )
    return top


def main(argv: list[str] | None = None) -> int:
    """Run one scenario, print its Markdown report and save it under bench/results/."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or args_list[0] not in (*COMMANDS, "-h", "--help"):
        args_list.insert(0, "run")
    args = parser().parse_args(args_list)
    procs.event_loop = args.loop
    if pinning_available():
        # The harness (warm-up, storm clients) stays off the server's core.
        os.sched_setaffinity(0, {int(LOAD_CPU)})
    else:
        print("warning: taskset or a second core is missing; running unpinned")
    scenario: Callable[[argparse.Namespace], tuple[str, str]] = {
        "run": _run,
        "scale": _scale,
        "storm": _storm,
    }[args.command]
    idle_before = report.idle_percent()
    title, text = scenario(args)
    text += (
        f"\n\nMachine idle before the run: {idle_before:.0f}% (of all cores, over 1 s);"
        f" after: {report.idle_percent():.0f}%. Well below 100% means other work shared"
        " the cores and the numbers are noisier."
    )
    path = report.write(args.command, title, text)
    print(f"\n# {title}\n\n{text}\n\nwritten to {path}")
    return 0


def _run(args: argparse.Namespace) -> tuple[str, str]:
    from bench import throughput  # noqa: PLC0415 (each scenario imports only what it uses)

    try:
        chosen = variants.parse(args.variants)
    except ValueError as exc:
        raise SystemExit(f"python -m bench: {exc}") from None
    text = throughput.run(chosen, args.rounds, args.duration, args.connections, args.warmup)
    return "cachekit throughput", text


def _scale(args: argparse.Namespace) -> tuple[str, str]:
    from bench import scale  # noqa: PLC0415

    return "cachekit scale", scale.run(args)


def _storm(args: argparse.Namespace) -> tuple[str, str]:
    from bench import storm  # noqa: PLC0415

    return "cachekit miss storm", storm.run(args)


if __name__ == "__main__":
    sys.exit(main())
