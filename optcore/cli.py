"""The ``optcore`` command: ``optcore list``, ``optcore demo``, ``optcore plot``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from optcore._version import __version__


def _plugin_report() -> dict:
    """Everything ``optcore list`` shows, as plain data."""
    from optcore import plugins

    statuses = plugins.list_plugins()
    report = {"optcore": __version__, "plugins": []}
    for status in statuses:
        row = status._asdict()
        row["provides"] = plugins.provided_names(status.name) if status.status == "loaded" else {}
        report["plugins"].append(row)
    from optcore.plugins._manager import HOST

    report["collisions"] = {
        name: [p.plugin for p in providers] for name, providers in sorted(HOST.registry.collisions().items())
    }
    return report


def _print_report(report: dict) -> None:
    print(f"optcore {report['optcore']}")
    print()
    for row in report["plugins"]:
        where = f"{row['distribution']} {row['version']}" if row["distribution"] else "in-process"
        line = f"{row['name']:<20} {where:<32} {row['status']}"
        if row.get("load_seconds") is not None:
            line += f" in {row['load_seconds']:.2f} s"
        if row["reason"]:
            line += f": {row['reason']}"
        print(line)
        for kind, names in row["provides"].items():
            print(f"    {kind} ({len(names)}): {', '.join(names)}")
    if report["collisions"]:
        print()
        for name, providers in report["collisions"].items():
            print(f"ambiguous name {name!r}: registered by {', '.join(providers)}")


def _cmd_list(args: argparse.Namespace) -> int:
    report = _plugin_report()
    if args.json:
        json.dump(report, sys.stdout, indent=2, sort_keys=True)
        print()
    else:
        _print_report(report)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from optcore import demo

    return demo.main(steps=args.steps, seed=args.seed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="optcore", description="optcore: optimisation for JAX, with plugins.")
    parser.add_argument("--version", action="version", version=f"optcore {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)

    list_parser = subparsers.add_parser("list", help="show the core, every plugin and the names they provide")
    list_parser.add_argument("--json", action="store_true", help="print JSON for machines")
    list_parser.set_defaults(func=_cmd_list)

    demo_parser = subparsers.add_parser("demo", help="train a small classifier and print its progress")
    demo_parser.add_argument("--steps", type=int, default=300)
    demo_parser.add_argument("--seed", type=int, default=0)
    demo_parser.set_defaults(func=_cmd_demo)

    try:
        from optcore import plot
    except ImportError:
        plot = None
    if plot is not None:
        plot.add_plot_parser(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
