"""One service at run time: its state machine, its runner and its probes.

The runtime drives the lifecycle of one service through its start sequence
(prepare, spawn, wait for the ready probe within the startup timeout) and its
stop sequence (stop command, signal, grace period, SIGKILL). It decides
nothing about other services: the orchestrator listens to its transitions and
decides when it starts and stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from overture.config.model import Probe, Project, Service, Stop
from overture.lifecycle import Lifecycle, ServiceState, Transition
from overture.observe.output import LogLine, ServiceOutput
from overture.probes import ProbeContext, ProbeResult, build_checker
from overture.probes.schedule import on_beat, until_ready
from overture.restart import RestartBudget
from overture.runners.process import ProcessRunner, StopOutcome

if TYPE_CHECKING:
    from overture.presets.base import Preset
    from overture.probes.listening import ListenWatch

log = logging.getLogger("overture.runtime")

S = ServiceState


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with {returncode}"


def is_clean_stop(returncode: int | None, sent: signal.Signals) -> bool:
    """An exit caused by the signal Overture sent counts as clean."""
    if returncode is None or returncode == 0:
        return True
    return returncode in (-sent, 128 + sent) or returncode in (130, 143, -2, -15)


class ServiceRuntime:
    """The runtime side of one service."""

    def __init__(
        self,
        name: str,
        spec: Service,
        project: Project,
        output: ServiceOutput,
        on_transition: Callable[[Transition], None],
    ) -> None:
        self.name = name
        self.spec = spec
        self.project = project
        self.output = output
        self.lifecycle = Lifecycle(name, on_transition)
        self.runner: ProcessRunner | None = None
        self.last_probe: ProbeResult | None = None
        self.restarts = 0
        self.ready_at: float | None = None
        self.budget = RestartBudget(spec.restart)
        self.retry_pending = False
        """Failed, with a restart scheduled by the policy."""
        self.degraded_by: dict[str, str] = {}
        """Why it is degraded: cause (`live`, `dependency X`) -> reason."""
        self._task: asyncio.Task[None] | None = None
        self._live_task: asyncio.Task[None] | None = None
        self._retry_timer: asyncio.TimerHandle | None = None
        self._stopping_old: asyncio.Task[None] | None = None
        self.project_environ: dict[str, str] | None = None
        """The inherited environment, copied once by the orchestrator."""
        self.spawned = False
        """Its process exists (or, external, there is nothing to spawn)."""
        self.on_spawned: Callable[[str], None] | None = None
        self.ready_pace: Callable[[], float] = lambda: 0.005
        """The ready probe's polling interval when the config sets none."""
        self.listening: ListenWatch | None = None
        """Shared by the ready probes: wakes a tcp probe when its port listens."""
        self._stop_spec = spec.stop
        self._preset: Preset | None = None

    @property
    def state(self) -> ServiceState:
        return self.lifecycle.state

    @property
    def pid(self) -> int | None:
        return self.runner.pid if self.runner else None

    def send(self, event: str, reason: str) -> None:
        self.lifecycle.send(event, reason)

    # Start

    def launch(self, reason: str) -> None:
        """All dependencies met: go to starting and run the start sequence."""
        self.spawned = False
        self.lifecycle.send("deps_met", reason)
        began = time.monotonic()

        # A plain command is spawned now, not on the task's first turn:
        # launches that come together spawn back to back, and nothing else
        # the loop has to do sits between a dependency's ready and this spawn.
        failed: OSError | None = None
        if self.spec.preset is None and self.spec.runner != "external":
            try:
                self._spawn(self.spec.argv(), self._environment())
            except OSError as exc:
                failed = exc
        self._task = asyncio.create_task(
            self._start_sequence(began, failed), name=f"start {self.name}"
        )

    async def _start_sequence(self, began: float, failed: OSError | None) -> None:
        try:
            async with asyncio.timeout(self.spec.startup_timeout):
                if failed is not None:
                    raise failed
                await self._prepare_and_wait()
                if self._preset is not None and self.spec.runner != "external":
                    await self._preset.after_ready()
        except TimeoutError:
            detail = f": {self.last_probe.detail}" if self.last_probe else ""
            self._fail_start(f"not ready after {self.spec.startup_timeout:g}s{detail}")
            return
        except OSError as exc:
            self._fail_start(f"cannot start {self._argv0()!r}: {exc.strerror or exc}")
            return
        except Exception as exc:  # a preset's set-up failed; say why
            log.debug("service=%s start failed", self.name, exc_info=True)
            self._fail_start(f"start failed: {exc}")
            return
        self.ready_at = time.monotonic()
        after = self.ready_at - began
        probe = self._ready_probe()
        why = f"{probe.kind} probe passed" if probe else "started (no ready probe)"
        self.lifecycle.send("became_ready", f"{why} after {after:.2f}s")
        if self.spec.live is not None:
            self._live_task = asyncio.create_task(
                self._watch_live(self.spec.live), name=f"live {self.name}"
            )

    def _argv0(self) -> str:
        return self.runner.argv[0] if self.runner and self.runner.argv else "?"

    def _ready_probe(self) -> Probe | None:
        if self.spec.ready is not None:
            return self.spec.ready
        return self._preset.probe() if self._preset is not None else None

    async def _prepare_and_wait(self) -> None:
        """Set up and spawn a preset's server if there is one; wait until ready."""
        spec = self.spec
        if spec.preset is not None:
            from overture.presets import load_preset

            self._preset = load_preset(self.name, spec, self.project)
            if spec.runner == "external":
                return await self._watch_external()
            await self._preset.prepare()
            launch = self._preset.launch()
            env = {**self._environment(), **launch.env}
            cwd = launch.cwd if spec.cwd is None else None
            if "stop" not in spec.model_fields_set:
                self._stop_spec = launch.stop
            self._spawn(spec.argv() or launch.argv, env, spec.user or launch.user, cwd)

        # None of the child's output has been read yet, so a log probe built
        # now sees the first line: a preset's server was spawned just above,
        # with no await since, and a plain command's spawn scheduled this
        # task's first step before the loop could next read any pipe.
        probe = self._ready_probe()
        wake = asyncio.Event()
        context = self._probe_context(wake.set, ready=True)
        checker = build_checker(probe, context) if probe else None
        try:
            self.spawned = True
            if self.on_spawned is not None:
                self.on_spawned(self.name)
            if probe is not None and checker is not None:
                await until_ready(probe, checker, wake, self.ready_pace, self._seen)
        finally:
            if checker is not None:
                await checker.close()

    def _spawn(
        self,
        argv: list[str],
        env: dict[str, str],
        user: str | None = None,
        cwd: Path | None = None,
    ) -> None:
        """Start the process and watch it; raise OSError if it cannot run."""
        self.runner = ProcessRunner(
            self.name,
            argv,
            env=env,
            cwd=cwd or self._cwd(),
            user=user or self.spec.user,
            on_line=self.output.write,
        )
        self.runner.start()
        self.runner.exited.add_done_callback(self._on_exit)

    async def _watch_external(self) -> None:
        """An external service with a preset: only the preset's native probe."""
        probe = self._ready_probe()
        assert probe is not None
        wake = asyncio.Event()
        checker = build_checker(probe, self._probe_context(wake.set, ready=True))
        self.spawned = True
        if self.on_spawned is not None:
            self.on_spawned(self.name)
        try:
            await until_ready(probe, checker, wake, self.ready_pace, self._seen)
        finally:
            await checker.close()

    def _cwd(self) -> Path:
        if self.spec.cwd is None:
            return self.project.root
        return self.project.root / self.spec.cwd

    def _environment(self) -> dict[str, str]:
        """Inherited, then each env_file in order, then `env`."""
        inherited = self.project_environ
        env = dict(os.environ) if inherited is None else inherited.copy()
        if self.spec.env_file:
            from overture.config.dotenv import read_env_file

            for path in self.spec.env_file:
                env.update(read_env_file(self.project.root / path))
        env.update(self.spec.env)
        return env

    def _seen(self, result: ProbeResult) -> None:
        self.last_probe = result

    def _probe_context(
        self, wake: Callable[[], None], ready: bool = False
    ) -> ProbeContext:
        def subscribe(callback: Callable[[str], None]) -> None:
            def on_line(record: LogLine) -> None:
                callback(record.line)

            self.output.listeners.append(on_line)

        return ProbeContext(
            service=self.name,
            cwd=self.project.root,
            env=dict(self.spec.env),
            subscribe_lines=subscribe,
            wake=wake,
            listening=self.listening if ready else None,
        )

    def _fail_start(self, reason: str) -> None:
        if self.runner is not None:
            self.runner.kill()
        if self.state is S.STARTING:
            self._fail(reason, clean_exit=False)

    # Running: liveness, degradation, failure and the restart policy

    async def _watch_live(self, probe: Probe) -> None:
        """Degrade on a failed check, fail at the threshold, recover on passes."""
        checker = build_checker(probe, self._probe_context(lambda: None))

        def answer(result: ProbeResult, streak: int) -> bool:
            self.last_probe = result
            if result.ok:
                if streak >= probe.success_threshold:
                    self.clear_degraded("live")
                return True
            reason = f"live {probe.kind} probe failed: {result.detail}"
            if streak >= probe.failure_threshold:
                self._fail_running(f"{reason} ({streak} times in a row)")
                return False
            self.mark_degraded("live", reason)
            return True

        try:
            await on_beat(probe, checker, answer)
        finally:
            await checker.close()

    def mark_degraded(self, cause: str, reason: str) -> None:
        self.degraded_by[cause] = reason
        if self.state is S.READY:
            self.lifecycle.send("degrade", reason)

    def clear_degraded(self, cause: str) -> None:
        if self.degraded_by.pop(cause, None) is None:
            return
        if not self.degraded_by and self.state is S.DEGRADED:
            self.lifecycle.send("recover", f"{cause} recovered")

    def _fail_running(self, reason: str) -> None:
        """A live failure: the process goes (politely), the policy decides."""
        if self.runner is not None:
            stop = self._stop_spec
            self._stopping_old = asyncio.create_task(
                self._stop_quietly(self.runner, stop)
            )
        self._fail(reason, clean_exit=False)

    @staticmethod
    async def _stop_quietly(runner: ProcessRunner, stop: Stop) -> None:
        await runner.stop(stop.signal, stop.timeout, stop.command)

    def _fail(self, reason: str, clean_exit: bool) -> None:
        """Go to failed, saying whether and when the policy restarts it."""
        self._cancel_live()
        self.degraded_by.clear()
        delay = self.budget.next_delay() if self.budget.applies(clean_exit) else None
        if delay is not None:
            self.retry_pending = True
            used, cap = self.budget.used, self.spec.restart.max
            reason += f"; restarting in {delay:.2f}s ({used}/{cap})"
            loop = asyncio.get_running_loop()
            self._retry_timer = loop.call_later(delay, self._retry)
        elif self.budget.applies(clean_exit):
            window = self.spec.restart.window
            reason += (
                f"; circuit open: {self.budget.used} restarts in {window:g}s,"
                f" restart it by hand"
            )
        self.lifecycle.send("fail", reason)

    def _retry(self) -> None:
        self._retry_timer = None
        if self.state is not S.FAILED:
            return
        self._task = asyncio.create_task(
            self._retry_when_gone(), name=f"retry {self.name}"
        )

    async def _retry_when_gone(self) -> None:
        # The failed process may still be in its stop sequence.
        if self._stopping_old is not None:
            await self._stopping_old
            self._stopping_old = None
        if self.state is S.FAILED and self.retry_pending:
            self.retry_pending = False
            self.restarts += 1
            self.lifecycle.send("retry", f"restart {self.budget.used} by policy")

    def _cancel_live(self) -> None:
        task = self._live_task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        self._live_task = None

    def cancel_retry(self) -> None:
        """A user stop or start overrides a pending restart."""
        self.retry_pending = False
        if self._retry_timer is not None:
            self._retry_timer.cancel()
            self._retry_timer = None

    def _on_exit(self, exited: asyncio.Future[int]) -> None:
        if exited.cancelled():
            return
        returncode = exited.result()
        state = self.state
        if state not in (S.STARTING, S.READY, S.DEGRADED):
            return  # a stop is under way and will report it
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self.spec.oneshot and returncode == 0:
            self._cancel_live()
            self.lifecycle.send("complete", "exited with 0")
        else:
            self._fail(describe_exit(returncode), clean_exit=returncode == 0)

    # Stop

    async def stop(self, reason: str) -> None:
        """Bring the service to stopped, whatever state it is in."""
        self.cancel_retry()
        state = self.state
        if state in (S.FAILED, S.BLOCKED, S.COMPLETED):
            if self._stopping_old is not None:
                await self._stopping_old
            self.lifecycle.send("reset", reason)
            return
        if state is S.STOPPED or state is S.STOPPING:
            return
        self.lifecycle.send("stop", reason)
        self._cancel_live()
        self.degraded_by.clear()
        await self._cancel_start()
        outcome = await self._stop_process()
        self.lifecycle.send(
            "stop_done",
            self._describe_stop(outcome),
            outcome=self._stop_outcome(outcome),
        )

    async def _cancel_start(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _stop_process(self) -> StopOutcome | None:
        runner = self.runner
        if runner is None or runner.process is None:
            return None
        stop: Stop = self._stop_spec
        return await runner.stop(stop.signal, stop.timeout, stop.command)

    def _stop_outcome(self, outcome: StopOutcome | None) -> str:
        """`clean`, `forced` or `unclean`, for the metrics."""
        if outcome is None or outcome.returncode is None:
            return "clean"
        if outcome.forced:
            return "forced"
        clean = is_clean_stop(outcome.returncode, self._stop_spec.signal)
        return "clean" if clean else "unclean"

    def _describe_stop(self, outcome: StopOutcome | None) -> str:
        if outcome is None or outcome.returncode is None:
            return "nothing was running"
        sent = self._stop_spec.signal
        if outcome.forced:
            return (
                f"killed with SIGKILL: ignored {sent.name} "
                f"for {self._stop_spec.timeout:g}s"
            )
        how = "clean" if is_clean_stop(outcome.returncode, sent) else "unclean"
        if not outcome.signalled:
            if self._stop_spec.command:
                return f"stop command ran, {describe_exit(outcome.returncode)} ({how})"
            return f"{describe_exit(outcome.returncode)} before {sent.name} ({how})"
        return f"{sent.name} sent, {describe_exit(outcome.returncode)} ({how})"

    def kill(self) -> None:
        """SIGKILL the whole group now; the stop sequence sees the exit."""
        if self.runner is not None:
            self.runner.kill()
