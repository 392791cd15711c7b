"""exec probe: passes when a command exits 0 within the timeout."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from overture.config.model import Probe
from overture.probes.base import Checker, ProbeContext, ProbeResult


class ExecChecker(Checker):
    async def check(self) -> ProbeResult:
        assert self.probe.exec is not None
        began = time.monotonic()
        env = {**os.environ, **self.context.env}
        try:
            process = await asyncio.create_subprocess_exec(
                *self.probe.exec,
                cwd=self.context.cwd,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            return ProbeResult(
                False, f"cannot run {self.probe.exec[0]!r}: {exc.strerror}", 0.0
            )
        try:
            async with asyncio.timeout(self.probe.timeout):
                _, stderr = await process.communicate()
        except TimeoutError:
            # The whole group: a shell script's children must not outlive it.
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            return ProbeResult(False, "timed out", time.monotonic() - began)
        latency = time.monotonic() - began
        if process.returncode == 0:
            return ProbeResult(True, "exit 0", latency)
        tail = stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        return ProbeResult(
            False, f"exit {process.returncode} {tail[0]}".strip(), latency
        )


def create(probe: Probe, context: ProbeContext) -> Checker:
    return ExecChecker(probe, context)
