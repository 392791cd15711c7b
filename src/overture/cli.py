"""The command line, and the one place where errors become exit codes.

Exit codes: 0 clean, 1 a service failed (or no daemon answered), 2 a config or
usage error, 130/143 interrupted by SIGINT/SIGTERM. Heavy modules are imported
inside the commands so that `--help` and `--version` answer at once.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from overture import __version__

if TYPE_CHECKING:
    from overture.config.model import Project
    from overture.graph import Graph

ENV_PREFIX = "OVERTURE_"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="overture",
        description="Bring a stack of services up in dependency order, watch "
        "them, and bring them down in reverse order.",
    )
    parser.add_argument(
        "--version", action="version", version=f"overture {__version__}"
    )
    parser.add_argument(
        "-f",
        "--file",
        type=Path,
        default=os.environ.get(ENV_PREFIX + "FILE"),
        help="config file (default: overture.toml/.yaml/.yml/.json here; "
        "env OVERTURE_FILE)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    up = commands.add_parser("up", help="start services and their dependencies")
    _add_selection(up)
    up.add_argument(
        "--keep-going",
        action="store_true",
        help="keep what started when a service fails (default: roll back)",
    )
    up.add_argument(
        "--log-format",
        choices=["human", "json"],
        default=os.environ.get(ENV_PREFIX + "LOG_FORMAT", "human"),
        help="terminal output format (env OVERTURE_LOG_FORMAT)",
    )
    up.add_argument(
        "--no-live", action="store_true", help="no live state table, lines only"
    )

    commands.add_parser("check", help="validate the config and say so")

    graph = commands.add_parser("graph", help="print the dependency graph")
    _add_selection(graph)
    graph.add_argument(
        "--format", choices=["tree", "dot", "mermaid", "json"], default="tree"
    )
    return parser


def _add_selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("services", nargs="*", metavar="SERVICE")
    parser.add_argument("--profile", help="a profile from [profiles]")
    parser.add_argument("--group", help="every service with this group")


def _load(args: argparse.Namespace) -> tuple[Project, Graph]:
    from overture.config.load import load_project
    from overture.graph import Graph

    project = load_project(args.file)
    return project, Graph.from_project(project)


def _cmd_check(args: argparse.Namespace) -> int:
    project, graph = _load(args)
    source = project.source.name if project.source else "config"
    print(f"{source}: ok ({len(graph)} services, {len(project.profiles)} profiles)")
    return 0


def _cmd_graph(args: argparse.Namespace) -> int:
    from overture import graph as graphs

    _, graph = _load(args)
    selection = graph.select(args.services, args.profile, args.group)
    render = {
        "tree": graphs.render_tree,
        "dot": graphs.render_dot,
        "mermaid": graphs.render_mermaid,
        "json": graphs.render_json,
    }[args.format]
    print(render(selection))
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    import asyncio

    from overture.run import Session, UpOptions

    project, graph = _load(args)
    options = UpOptions(
        services=args.services,
        profile=args.profile,
        group=args.group,
        keep_going=args.keep_going,
        log_format=args.log_format,
        live=False if args.no_live else None,
    )
    session = Session(project, graph, options)
    return asyncio.run(session.run())


_COMMANDS = {"up": _cmd_up, "check": _cmd_check, "graph": _cmd_graph}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2

    from overture.errors import OvertureError

    try:
        return _COMMANDS[args.command](args)
    except OvertureError as exc:
        print(f"overture: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
