"""The ``optcore`` command: ``list``, ``info``, ``install``, ``config``, ``demo``, ``plot`` and plugins' commands.

Plugins add commands through the ``optcore_add_commands`` hook (see
:mod:`optcore.hookspecs`), so building the parser loads every plugin.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Optional, Sequence

from optcore._version import __version__


def _plugin_report(kind: Optional[str] = None, pattern: Optional[str] = None) -> dict:
    """Everything ``optcore list`` shows, as plain data."""
    from optcore import plugins
    from optcore.plugins._manager import HOST

    statuses = plugins.list_plugins()
    report = {"optcore": __version__, "plugins": []}
    for status in statuses:
        row = status._asdict()
        loaded = status.status == "loaded"
        row["provides"] = plugins.provided_names(status.name) if loaded else {}
        row["aliases"] = plugins.provided_aliases(status.name) if loaded else {}
        report["plugins"].append(row)
    report["collisions"] = {
        name: [p.plugin for p in providers] for name, providers in sorted(HOST.registry.collisions().items())
    }
    report["entries"] = [
        {"name": e.name, "qualified_name": e.qualified_name, "kind": e.kind, "plugin": e.provider.plugin,
         "distribution": e.provider.distribution, "version": e.provider.version, "aliases": list(e.aliases)}
        for e in HOST.registry.entries(kind, pattern)
    ]
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
        if row["aliases"]:
            print(f"    aliases: {', '.join(f'{a} -> {n}' for a, n in row['aliases'].items())}")
    if report["collisions"]:
        print()
        for name, providers in report["collisions"].items():
            print(f"ambiguous name {name!r}: registered by {', '.join(providers)}")


def _print_entries(entries: list[dict]) -> None:
    for e in entries:
        where = f"{e['distribution']} {e['version']}" if e["distribution"] else e["plugin"]
        line = f"{e['name']:<36} {e['kind']:<16} {where}"
        if e["aliases"]:
            line += f"  (aliases: {', '.join(e['aliases'])})"
        print(line)


def _cmd_list(args: argparse.Namespace) -> int:
    from optcore import plugins

    if args.trace:  # load every plugin again, in a fresh host, with pluggy's tracing on
        with plugins.scoped_host(trace=sys.stderr.write):
            report = _plugin_report(args.kind, args.pattern)
    else:
        report = _plugin_report(args.kind, args.pattern)
    if args.json:
        json.dump(report, sys.stdout, indent=2, sort_keys=True)
        print()
    elif args.kind is not None or args.pattern is not None:
        _print_entries(report["entries"])
    else:
        _print_report(report)
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from optcore import plugins

    try:
        info = plugins.describe(args.name)
    except LookupError as err:
        print(f"optcore info: {err}", file=sys.stderr)
        return 1
    if args.json:
        json.dump(info._asdict(), sys.stdout, indent=2, sort_keys=True)
        print()
        return 0
    print(f"{info.name}: {info.description or '(no description)'}")
    print()
    rows = [
        ("signature", info.signature),
        ("kind", info.kind),
        ("alias of", info.alias_of),
        ("aliases", ", ".join(info.aliases) or None),
        ("plugin", info.plugin),
        ("distribution", f"{info.distribution} {info.version}" if info.distribution else None),
        ("qualified name", info.qualified_name),
        ("source", info.source_file),
    ]
    for label, value in rows:
        if value is not None:
            print(f"  {label + ':':<16}{value}")
    return 0


def pip_install_command(names: Sequence[str], pip_args: Sequence[str] = ()) -> list[str]:
    """The command ``optcore install NAMES... PIP_ARGS...`` runs.

    ``python -m pip install`` of the first-party distributions that provide
    ``names`` (see :func:`optcore.plugins._catalog.distributions_for`), with
    ``pip_args`` (``--find-links DIR``, ``--no-index``, ``--upgrade``, ...)
    passed through. The same interpreter runs pip, so the plugin lands in the
    environment optcore runs in.
    """
    from optcore.plugins import _catalog

    distributions: list[str] = []
    for name in names:
        for distribution in _catalog.distributions_for(name):
            if distribution not in distributions:
                distributions.append(distribution)
    return [sys.executable, "-m", "pip", "install", *distributions, *pip_args]


def _cmd_install(args: argparse.Namespace) -> int:
    try:
        command = pip_install_command(args.names, args.pip_args)
    except LookupError as err:
        print(f"optcore install: {err}", file=sys.stderr)
        return 2
    print("$ " + " ".join(command), flush=True)
    return subprocess.call(command)


def _cmd_demo(args: argparse.Namespace) -> int:
    from optcore import demo

    return demo.main(steps=args.steps, seed=args.seed)


def _cmd_config(args: argparse.Namespace) -> int:
    """``optcore config show FILE`` / ``optcore config check FILE``."""
    from optcore.plugins import _configs

    try:
        config = _configs.read_config(args.file)
        if args.action == "show":
            filled, left_out = _configs.with_defaults(config)
            print(json.dumps(filled, indent=2))
            for path in left_out:
                print(f"note: the default of {path} is not shown: it cannot be written to a config "
                      "(from_config uses it anyway)", file=sys.stderr)
        else:
            built = _configs.from_config(config)  # names resolve, arguments bind, values decode, factories run
            what = config.get("@name") or config.get("name") or "a call" if isinstance(config, dict) else "?"
            print(f"{args.file}: ok: builds {what} ({type(built).__name__})")
    except (OSError, ValueError, TypeError, LookupError, ImportError) as err:
        print(f"optcore config {args.action}: {args.file}: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``optcore`` parser: the core's commands, then every plugin's (``optcore_add_commands``)."""
    from optcore.plugins import KINDS
    from optcore.plugins._manager import HOST

    parser = argparse.ArgumentParser(prog="optcore", description="optcore: optimisation for JAX, with plugins.")
    parser.add_argument("--version", action="version", version=f"optcore {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)

    list_parser = subparsers.add_parser(
        "list", help="show the core, every plugin and the names they provide",
        description="Without a filter: every plugin, its status and its names. With --kind or a PATTERN: "
                    "one line per matching name.",
    )
    list_parser.add_argument("pattern", nargs="?", help="only names matching this glob, e.g. 'adam*'")
    list_parser.add_argument("--kind", choices=KINDS, help="only names of this kind")
    list_parser.add_argument("--json", action="store_true", help="print JSON for machines")
    list_parser.add_argument("--trace", action="store_true",
                             help="load the plugins again with pluggy's tracing of every hook call (to stderr)")
    list_parser.set_defaults(func=_cmd_list)

    info_parser = subparsers.add_parser("info", help="describe one registered name")
    info_parser.add_argument("name", help="a name, an alias or a qualified name (optcore-contrib:muon)")
    info_parser.add_argument("--json", action="store_true", help="print JSON for machines")
    info_parser.set_defaults(func=_cmd_info)

    install_parser = subparsers.add_parser(
        "install", help="pip install the first-party plugin that provides a name",
        usage="optcore install NAME [NAME ...] [PIP OPTIONS]",
        description="Installs the first-party distribution that provides each NAME (a registered name, a "
                    "plugin such as 'contrib', a distribution, or 'all') with `python -m pip install`. "
                    "Options after the names (--find-links DIR, --no-index, --upgrade, ...) are passed to pip.",
    )
    install_parser.add_argument("names", nargs="+", metavar="NAME")
    install_parser.set_defaults(func=_cmd_install, pip_args=[])

    config_parser = subparsers.add_parser(
        "config", help="show or check an optimizer config file (JSON or TOML)",
        description="show: print the config (JSON) with every default argument filled in, as from_config "
                    "would build it. check: validate it (names exist, arguments bind, values decode) by "
                    "calling the factories; nothing is initialised or run. Exit status 1 on a bad config.",
    )
    config_parser.add_argument("action", choices=("show", "check"))
    config_parser.add_argument("file", help="a .json or .toml config (as written by optcore.to_config)")
    config_parser.set_defaults(func=_cmd_config)

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
    HOST.add_commands(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        if args.command != "install":
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        args.pip_args = unknown  # pip's own options, passed through
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
