"""The `r1core` command: train, eval, sample, bench, info (SPEC §5).

Subcommands import their machinery lazily so `r1core info` and `r1core bench` start fast.
"""
from __future__ import annotations

import argparse
import sys


def _info(_argv: list[str]) -> int:
    import torch

    import r1core
    print(f"r1core {r1core.__version__} | torch {torch.__version__} | CUDA available: {torch.cuda.is_available()}")
    for name, status in r1core.backends().items():
        print(f"  {name:7s} {status}")
    return 0


def _bench(argv: list[str]) -> int:
    from benches.runner import main as bench_main
    return bench_main(argv)


COMMANDS = {
    "bench": (_bench, "time every op against the PyTorch reference and peers (see `r1core bench --help`)"),
    "info": (_info, "show the version and which backends are available"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: r1core <command> [options]\n\ncommands:")
        for name, (_, helptext) in COMMANDS.items():
            print(f"  {name:8s} {helptext}")
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nr1core: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    fn, _ = COMMANDS[argv[0]]
    return fn(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
