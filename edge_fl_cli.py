"""The `edge-fl` command line: one entry point, a subcommand per job."""
from __future__ import annotations

import argparse
import sys


def _zoo_list(args) -> int:
    from model_zoo.zoo import ZOO
    for name, entry in ZOO.items():
        print(f"{name:24s} {entry.task}")
    return 0


def _zoo_export(args) -> int:
    from model_zoo.zoo import build_bundle
    out = build_bundle(args.name, args.out, seed=args.seed, batch_size=args.batch_size,
                       with_vocabulary=True)
    print(f"wrote {args.name} bundle to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-fl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    zoo = sub.add_parser("zoo", help="the model zoo").add_subparsers(dest="zoo_command",
                                                                      required=True)
    zoo.add_parser("list", help="list the zoo's models").set_defaults(func=_zoo_list)
    export = zoo.add_parser("export", help="compile a zoo model into a training bundle")
    export.add_argument("name")
    export.add_argument("--out", required=True, help="bundle directory to write")
    export.add_argument("--seed", type=int, default=0, help="initialisation seed")
    export.add_argument("--batch-size", type=int, default=8,
                        help="sample batch size (the bundle accepts any batch size)")
    export.set_defaults(func=_zoo_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyError as e:  # unknown zoo name: say so plainly
        print(f"edge-fl: {e.args[0]}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
