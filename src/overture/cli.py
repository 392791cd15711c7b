"""The command line, and the one place where errors become exit codes.

Exit codes: 0 clean, 1 a service failed (or no daemon answered, or the daemon
refused), 2 a config or usage error (an unknown service, also when the daemon
says so), 130/143 interrupted by SIGINT/SIGTERM. Heavy modules are imported
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
    from overture.control.daemon import DaemonOptions
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

    up = commands.add_parser(
        "up",
        help="start services and their dependencies (in a running daemon: add them)",
    )
    _add_selection(up)
    up.add_argument(
        "-d",
        "--detach",
        action="store_true",
        help="run the daemon in the background; return once the selection is up",
    )
    up.add_argument(
        "--keep-going",
        action="store_true",
        help="keep what started when a service fails (default: roll back)",
    )
    up.add_argument(
        "--abort-on-failure",
        action="store_true",
        help="stop everything and exit 1 as soon as any service fails",
    )
    up.add_argument(
        "--exit-code-from",
        metavar="SERVICE",
        help="stop everything when SERVICE exits, and exit with its code",
    )
    up.add_argument(
        "--no-live", action="store_true", help="no live state table, lines only"
    )
    _add_daemon_options(up)

    daemon = commands.add_parser(
        "daemon", help="run the daemon with nothing started (what `up -d` spawns)"
    )
    _add_daemon_options(daemon)
    daemon.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    # What `up -d` is about to ask for: started at once, while the API loads.
    daemon.add_argument("--start", action="append", default=[], help=argparse.SUPPRESS)
    daemon.add_argument("--start-profile", help=argparse.SUPPRESS)
    daemon.add_argument("--start-group", help=argparse.SUPPRESS)
    daemon.add_argument("--start-all", action="store_true", help=argparse.SUPPRESS)

    down = commands.add_parser(
        "down", help="stop services and their dependents; with none, all and the daemon"
    )
    down.add_argument("services", nargs="*", metavar="SERVICE")

    status = commands.add_parser("status", help="every service, its state and why")
    status.add_argument("--json", action="store_true", help="as JSON")
    status.add_argument(
        "-w", "--watch", action="store_true", help="redraw on every change"
    )

    for action, text in (
        ("start", "start services and what they need"),
        ("stop", "stop services and, first, what depends on them"),
        ("restart", "stop services and their dependents, then start them again"),
    ):
        command = commands.add_parser(action, help=text)
        command.add_argument("services", nargs="+", metavar="SERVICE")

    logs = commands.add_parser("logs", help="the output of services")
    logs.add_argument("services", nargs="*", metavar="SERVICE")
    logs.add_argument("-f", "--follow", action="store_true", help="then new lines")
    logs.add_argument(
        "-n", "--lines", type=int, default=100, help="how many lines (default 100)"
    )
    logs.add_argument("--json", action="store_true", help="one JSON object a line")

    events = commands.add_parser("events", help="follow the lifecycle events")
    events.add_argument(
        "--since", type=int, help="first the kept events numbered above N (0: all)"
    )
    events.add_argument("--json", action="store_true", help="one JSON object a line")

    commands.add_parser(
        "dashboard", help="print the dashboard's address (with its token)"
    )

    commands.add_parser("check", help="validate the config and say so")

    graph = commands.add_parser("graph", help="print the dependency graph")
    _add_selection(graph)
    graph.add_argument(
        "--format", choices=["tree", "dot", "mermaid", "json"], default="tree"
    )
    return parser


def _add_daemon_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format",
        choices=["human", "json"],
        default=os.environ.get(ENV_PREFIX + "LOG_FORMAT", "human"),
        help="output format, in the terminal or daemon.log (env OVERTURE_LOG_FORMAT)",
    )
    parser.add_argument(
        "--listen",
        metavar="[HOST:]PORT",
        default=os.environ.get(ENV_PREFIX + "LISTEN"),
        help="also serve the API and dashboard on TCP, loopback only; changes "
        "need the token in .overture/token (env OVERTURE_LISTEN)",
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="let --listen take a non-loopback address (every call needs the token)",
    )
    parser.add_argument(
        "--socket-mode",
        type=_mode,
        default=0o600,
        metavar="MODE",
        help="octal mode of .overture/daemon.sock (default 600)",
    )


def _mode(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o777:
        raise argparse.ArgumentTypeError(f"{text!r} is not an octal mode like 600")
    return mode


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
    from overture.control import launch
    from overture.control.commands import client_for

    # A daemon already runs this project: the selection is added to it.
    client = client_for(args.file)
    request = {
        "services": args.services,
        "profile": args.profile,
        "group": args.group,
        "keep_going": args.keep_going,
    }
    if launch.running(client) is not None:
        if args.listen:
            print("overture: the running daemon keeps its own listeners")
        return launch.up(client, request)

    # Check the config and the selection here, where the errors can be shown.
    project, graph = _load(args)
    graph.select(args.services, args.profile, args.group)
    if args.detach:
        if args.listen is not None:
            from overture.control.listen import parse_listen

            parse_listen(args.listen, args.allow_remote)
        pid = launch.spawn(client, _daemon_args(args, project))
        return launch.up(client, request, spawned=pid)
    return _foreground(args, project, graph)


def _daemon_args(args: argparse.Namespace, project: Project) -> list[str]:
    argv = ["-f", str(project.source), "daemon", "--log-format", args.log_format]
    argv += ["--socket-mode", f"{args.socket_mode:o}"]
    if args.listen is not None:
        argv += ["--listen", args.listen]
    if args.allow_remote:
        argv.append("--allow-remote")
    for service in args.services:
        argv += ["--start", service]
    if args.profile is not None:
        argv += ["--start-profile", args.profile]
    if args.group is not None:
        argv += ["--start-group", args.group]
    if not (args.services or args.profile or args.group):
        argv.append("--start-all")
    return argv


def _daemon_options(args: argparse.Namespace) -> DaemonOptions:
    from overture.control.daemon import DaemonOptions

    return DaemonOptions(
        listen=args.listen, allow_remote=args.allow_remote, socket_mode=args.socket_mode
    )


def _foreground(args: argparse.Namespace, project: Project, graph: Graph) -> int:
    import asyncio

    from overture.run import Session, UpOptions
    from overture.runners.process import become_subreaper

    options = UpOptions(
        services=args.services,
        profile=args.profile,
        group=args.group,
        keep_going=args.keep_going,
        abort_on_failure=args.abort_on_failure,
        exit_code_from=args.exit_code_from,
        log_format=args.log_format,
        live=False if args.no_live else None,
        daemon=_daemon_options(args),
    )
    session = Session(project, graph, options)
    become_subreaper()
    return asyncio.run(session.run())


def _cmd_daemon(args: argparse.Namespace) -> int:
    import asyncio

    from overture.run import Background
    from overture.runners.process import become_subreaper

    project, graph = _load(args)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    background = Background(project, graph, _daemon_options(args), args.log_format)
    if args.start or args.start_profile or args.start_group or args.start_all:
        background.prestart = graph.select(
            args.start, args.start_profile, args.start_group
        ).order

    def ready() -> None:
        if args.ready_fd is not None:
            os.write(args.ready_fd, b"ready\n")
            os.close(args.ready_fd)

    become_subreaper()
    return asyncio.run(background.run(ready))


def _cmd_status(args: argparse.Namespace) -> int:
    from overture.control import commands

    return commands.status(
        commands.client_for(args.file), as_json=args.json, watch=args.watch
    )


def _cmd_down(args: argparse.Namespace) -> int:
    from overture.control import commands

    return commands.down(commands.client_for(args.file), args.services)


def _cmd_operate(args: argparse.Namespace) -> int:
    from overture.control import commands

    client = commands.client_for(args.file)
    return commands.operate(client, args.command, args.services)


def _cmd_logs(args: argparse.Namespace) -> int:
    from overture.control import commands

    client = commands.client_for(args.file)
    return commands.logs(
        client, args.services, args.lines, follow=args.follow, as_json=args.json
    )


def _cmd_events(args: argparse.Namespace) -> int:
    from overture.control import commands

    return commands.events(
        commands.client_for(args.file), args.since, as_json=args.json
    )


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from overture.control import commands

    return commands.dashboard(commands.client_for(args.file))


_COMMANDS = {
    "up": _cmd_up,
    "daemon": _cmd_daemon,
    "down": _cmd_down,
    "status": _cmd_status,
    "start": _cmd_operate,
    "stop": _cmd_operate,
    "restart": _cmd_operate,
    "logs": _cmd_logs,
    "events": _cmd_events,
    "dashboard": _cmd_dashboard,
    "check": _cmd_check,
    "graph": _cmd_graph,
}


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
    except BrokenPipeError:
        # The reader (`overture logs | head`) has had enough; say nothing more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
