"""The peers under test: supervisord, circus, honcho, s6, runit and pm2.

Each adapter writes the tool's own configuration for the workload, starts it
the way its documentation does, reads its own status the cheapest way it
offers, and asks it to stop everything the graceful way (see tools.Tool).
"""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
import time
import xmlrpc.client
from pathlib import Path

from observe import child_argv
from tools import POLL, LineWatch, Overture, OvertureTcp, Tool, poll


class Supervisord(Tool):
    name = "supervisord"
    executables = ("supervisord",)
    RPC_PORT = 19901

    def write_config(self) -> None:
        # startsecs=0: RUNNING as soon as spawned, as the others report it
        # (the default would add a fixed second to every start).
        text = f"""[supervisord]
nodaemon=true
logfile={self.workdir}/supervisord.log
pidfile={self.workdir}/supervisord.pid
childlogdir={self.workdir}
minfds=8192

[inet_http_server]
port=127.0.0.1:{self.RPC_PORT}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
"""
        for port in self.ports:
            text += (
                f"\n[program:s{port}]\ncommand={shlex.join(child_argv(port))}\n"
                "startsecs=0\nautorestart=true\n"
            )
        (self.workdir / "supervisord.conf").write_text(text)

    def launch(self) -> None:
        self.process = self._spawn([self.exe("supervisord"), "-c", "supervisord.conf"])

    def wait_running(self, deadline: float) -> float | None:
        server = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{self.RPC_PORT}/RPC2")

        def all_running() -> bool:
            states = [p["statename"] for p in server.supervisor.getAllProcessInfo()]
            return len(states) == len(self.ports) and set(states) == {"RUNNING"}

        return poll(all_running, deadline)


# Runs in circus's own interpreter (it needs pyzmq): says "ready" once
# imported, then prints the monotonic time at which every watcher is active.
_CIRCUS_POLLER = """
import sys, time
from circus.client import CircusClient
client = CircusClient(endpoint=sys.argv[1], timeout=5)
print("ready", flush=True)
while True:
    try:
        statuses = client.call({"command": "status", "properties": {}})["statuses"]
    except Exception:
        statuses = {}
    if len(statuses) >= int(sys.argv[2]) and set(statuses.values()) == {"active"}:
        print(time.monotonic(), flush=True)
        break
    time.sleep(float(sys.argv[3]))
"""


def _interpreter(script: str) -> str:
    """The interpreter named on a console script's #! line."""
    first = Path(script).read_text().splitlines()[0]
    return first[2:].strip() if first.startswith("#!") else sys.executable


class Circus(Tool):
    name = "circus"
    executables = ("circusd",)
    ENDPOINT = 19911

    def write_config(self) -> None:
        text = f"""[circus]
endpoint = tcp://127.0.0.1:{self.ENDPOINT}
pubsub_endpoint = tcp://127.0.0.1:{self.ENDPOINT + 1}
statsd = false
"""
        for port in self.ports:
            text += (
                f"\n[watcher:s{port}]\ncmd = {shlex.join(child_argv(port))}\n"
                "numprocesses = 1\nwarmup_delay = 0\ncopy_env = true\n"
            )
        (self.workdir / "circus.ini").write_text(text)

    def before_launch(self) -> None:
        # The status poller starts first, so that its imports are done before
        # the clock starts and do not compete with circusd.
        self._poller = subprocess.Popen(
            [
                _interpreter(self.exe("circusd")),
                "-c",
                _CIRCUS_POLLER,
                f"tcp://127.0.0.1:{self.ENDPOINT}",
                str(len(self.ports)),
                str(POLL),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._poller.stdout is not None
        self._poller.stdout.readline()

    def launch(self) -> None:
        self.process = self._spawn([self.exe("circusd"), "circus.ini"])

    def wait_running(self, deadline: float) -> float | None:
        try:
            out, _ = self._poller.communicate(timeout=deadline - time.monotonic())
        except subprocess.TimeoutExpired:
            self._poller.kill()
            self._poller.wait()
            return None
        return float(out.split()[0]) if out.strip() else None


class Honcho(Tool):
    name = "honcho"
    executables = ("honcho",)

    def write_config(self) -> None:
        lines = [f"s{p}: exec {shlex.join(child_argv(p))}" for p in self.ports]
        (self.workdir / "Procfile").write_text("\n".join(lines) + "\n")

    def launch(self) -> None:
        self.process = self._spawn([self.exe("honcho"), "start"], pipe=True)
        # honcho's only status: "12:00:00 system | s20000.1 started (pid=123)".
        started = 0

        def all_started(line: str) -> bool:
            nonlocal started
            started += " started (pid=" in line
            return started == len(self.ports)

        self._watch = LineWatch(
            self.process.stdout, all_started, self.workdir / "tool.out"
        )
        self._watch.start()

    def wait_running(self, deadline: float) -> float | None:
        return self._watch.wait(deadline)


class S6(Tool):
    name = "s6"
    executables = ("s6-svscan",)

    def write_config(self) -> None:
        self._dirs = self._service_dirs(self.workdir / "scan")

    def launch(self) -> None:
        self.process = self._spawn([self.exe("s6-svscan"), "scan"])

    def wait_running(self, deadline: float) -> float | None:
        # What s6-svstat reads: supervise/status holds the pid (bytes 24-32,
        # big-endian) while the service is up.
        def up(service: Path) -> bool:
            status = (service / "supervise" / "status").read_bytes()
            return len(status) >= 32 and int.from_bytes(status[24:32], "big") > 0

        return poll(lambda: all(up(d) for d in self._dirs), deadline)


class Runit(Tool):
    name = "runit"
    executables = ("runsvdir",)

    def write_config(self) -> None:
        self._dirs = self._service_dirs(self.workdir / "service")

    def launch(self) -> None:
        self.process = self._spawn([self.exe("runsvdir"), "-P", "service"])

    def wait_running(self, deadline: float) -> float | None:
        # What `sv status` reads: supervise/stat says "run".
        def up(service: Path) -> bool:
            return (service / "supervise" / "stat").read_text().strip() == "run"

        return poll(lambda: all(up(d) for d in self._dirs), deadline)

    def request_stop(self) -> None:
        # HUP: runsvdir sends TERM to each runsv, which stops its service and
        # exits. (TERM would make runsvdir alone exit, leaving them running.)
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)


class Pm2(Tool):
    name = "pm2"
    executables = ("pm2",)

    def write_config(self) -> None:
        self.env["PM2_HOME"] = str(self.workdir / "pm2")
        apps = [
            {
                "name": f"s{port}",
                "script": child_argv(port)[0],
                "args": child_argv(port)[1:],
                "interpreter": "none",
                "autorestart": True,
            }
            for port in self.ports
        ]
        (self.workdir / "apps.json").write_text(json.dumps({"apps": apps}))

    def launch(self) -> None:
        # The CLI starts the daemon, which starts the apps; it returns once
        # the daemon has answered for every app.
        self.process = self._spawn([self.exe("pm2"), "start", "apps.json"])

    def _online(self) -> bool:
        out = subprocess.run(
            [self.exe("pm2"), "jlist"], env=self.env, capture_output=True, check=True
        ).stdout
        apps = json.loads(out[out.find(b"[") :])
        statuses = {app["pm2_env"]["status"] for app in apps}
        return len(apps) == len(self.ports) and statuses == {"online"}

    def wait_running(self, deadline: float) -> float | None:
        assert self.process is not None
        try:
            self.process.wait(deadline - time.monotonic())
        except subprocess.TimeoutExpired:
            return None
        returned = time.monotonic()
        # Confirm with `pm2 jlist`; it reports what the CLI already said.
        if self._online():
            return returned
        return poll(self._online, deadline)

    def roots(self) -> list[int]:
        pidfile = self.workdir / "pm2" / "pm2.pid"
        return [int(pidfile.read_text())] if pidfile.exists() else []

    def request_stop(self) -> None:
        self._kill = self._spawn([self.exe("pm2"), "kill"], log="kill.out")

    def finish(self, timeout: float) -> None:
        try:
            self._kill.wait(timeout)
        except subprocess.TimeoutExpired:
            self._kill.kill()


ALL = (Overture, OvertureTcp, Supervisord, Circus, Honcho, S6, Runit, Pm2)
