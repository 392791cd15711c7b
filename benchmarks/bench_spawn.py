"""One spawn, as Overture's runner does it, against os.posix_spawn.

Run: .venv/bin/python benchmarks/bench_spawn.py [--spawns 150] [--busy 0 4]
    [--rounds 2]

While hundreds of services start, Overture's loop thread spawns them one after
the other, and each spawn call returns only once the vforked child has exec'd:
on busy cores the call waits for the child to be scheduled. This times that
call alone, on the thread that makes it, for `subprocess.Popen` with the
runner's arguments (pipes for stdout and stderr, its own session, an
environment, a working directory) and for `os.posix_spawn` with the same pipes
and session (no working directory: Python 3.11's posix_spawn cannot set one).
`--busy N` runs N processes that spin on the CPU meanwhile, as the starting
children do. The children are `sleep` processes, killed after each round.

Not part of run.py: it measures a design choice, not Overture.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import time
from collections.abc import Callable

CHILD = ["/bin/sleep", "30"]

Spawned = tuple[int, list[int]]
"""The child's pid, and the parent's ends of its pipes."""


def with_popen(env: dict[str, str]) -> Spawned:
    child = subprocess.Popen(
        CHILD,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd="/",
        env=env,
        start_new_session=True,
        bufsize=0,
    )
    assert child.stdout is not None and child.stderr is not None
    fds = [os.dup(child.stdout.fileno()), os.dup(child.stderr.fileno())]
    child.stdout.close()
    child.stderr.close()
    child.returncode = 0  # reaped below, by pid: no warning from Popen.__del__
    return child.pid, fds


def with_posix_spawn(env: dict[str, str]) -> Spawned:
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        pid = os.posix_spawn(
            CHILD[0],
            CHILD,
            env,
            setsid=True,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, null, 0),
                (os.POSIX_SPAWN_DUP2, out_write, 1),
                (os.POSIX_SPAWN_DUP2, err_write, 2),
            ],
        )
    finally:
        for fd in (null, out_write, err_write):
            os.close(fd)
    return pid, [out_read, err_read]


WAYS: dict[str, Callable[[dict[str, str]], Spawned]] = {
    "Popen": with_popen,
    "posix_spawn": with_posix_spawn,
}


def _spin() -> None:
    while True:
        pass


def measure(spawns: int, busy: int, rounds: int) -> dict[str, list[float]]:
    """Milliseconds per spawn call, for each way, alternating round by round."""
    spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(busy)]
    for spinner in spinners:
        spinner.start()
    env = dict(os.environ)
    times: dict[str, list[float]] = {name: [] for name in WAYS}
    try:
        for _ in range(rounds):
            for name, spawn in WAYS.items():
                children = []
                for _ in range(spawns):
                    began = time.perf_counter()
                    children.append(spawn(env))
                    times[name].append((time.perf_counter() - began) * 1000)
                for pid, fds in children:
                    os.kill(pid, 9)
                    os.waitpid(pid, 0)
                    for fd in fds:
                        os.close(fd)
    finally:
        for spinner in spinners:
            spinner.terminate()
            spinner.join()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spawns", type=int, default=150, help="per round and way")
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 4])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    for busy in args.busy:
        print(f"{busy} busy process(es), {args.spawns} spawns x {args.rounds} rounds")
        for name, values in measure(args.spawns, busy, args.rounds).items():
            deciles = statistics.quantiles(values, n=10)
            print(
                f"  {name:<12} median {statistics.median(values):6.2f} ms"
                f"  mean {statistics.mean(values):6.2f} ms  p90 {deciles[-1]:6.2f} ms"
            )


if __name__ == "__main__":
    main()
