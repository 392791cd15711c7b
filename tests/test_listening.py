"""The listening-port watch: tcp ready probes woken when their port listens."""

from __future__ import annotations

import asyncio
import socket

from helpers import free_port, run
from overture.config.model import Probe
from overture.probes import ProbeContext, build_checker
from overture.probes.listening import ListenWatch


def bound(port: int, family: socket.AddressFamily = socket.AF_INET) -> socket.socket:
    """A socket bound to `port` that does not listen yet."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", port))
    return sock


async def another_dump(watch: ListenWatch) -> None:
    """Return once the watch has read the listening ports again, from now on.

    A witness port listens after it is watched: its wake proves a dump ran.
    """
    witnessed = asyncio.Event()
    port = free_port()
    with bound(port) as witness:
        assert watch.watch(port, witnessed.set) is not None
        witness.listen()
        async with asyncio.timeout(5):
            await witnessed.wait()


def test_listening_names_exactly_the_asked_ports_that_listen() -> None:
    """A bound socket is not listening; IPv4 and IPv6 listeners both count."""

    async def scenario() -> list[set[int]]:
        watch = ListenWatch()
        assert watch.watch(free_port(), lambda: None) is not None  # opens it
        v4, v6, idle = free_port(), free_port(), free_port()
        with bound(v4) as a, bound(v6, socket.AF_INET6) as b, bound(idle):
            before = watch.listening({v4, v6, idle})
            a.listen()
            b.listen()
            few = watch.listening({v4, v6, idle})
            # Past 64 ports the dump is not filtered in the kernel.
            others = {free_port() for _ in range(70)}
            many = watch.listening({v4, v6, idle, *others})
        watch.close()
        return [before, few, many, {v4, v6}]

    before, few, many, listeners = run(scenario())
    assert before == set()
    assert few == listeners
    assert many == listeners


def test_watch_wakes_once_when_the_port_listens_and_then_lets_go() -> None:
    """The wake comes after the listen, once, and the watch holds nothing after."""

    async def scenario() -> tuple[bool, int, bool]:
        watch = ListenWatch()
        port = free_port()
        woken = asyncio.Event()
        calls = 0

        def wake() -> None:
            nonlocal calls
            calls += 1
            woken.set()

        with bound(port) as sock:
            assert watch.watch(port, wake) is not None
            early = woken.is_set()
            sock.listen()
            async with asyncio.timeout(5):
                await woken.wait()
            # Another dump, with the port still listening, must not wake it.
            await another_dump(watch)
        return early, calls, watch.idle

    early, calls, idle = run(scenario())
    assert not early
    assert calls == 1
    assert idle


def test_cancelled_watch_never_wakes() -> None:
    """A probe that stops waiting (its service stopped) is not woken later."""

    async def scenario() -> tuple[bool, bool]:
        watch = ListenWatch()
        port = free_port()
        woken = asyncio.Event()
        with bound(port) as sock:
            cancel = watch.watch(port, woken.set)
            assert cancel is not None
            cancel()
            sock.listen()
            await another_dump(watch)
        return woken.is_set(), watch.idle

    woken, idle = run(scenario())
    assert not woken
    assert idle


def test_tcp_ready_checker_is_notified_only_for_local_addresses() -> None:
    """A local tcp probe is woken by the watch, and connects; a remote one polls."""

    async def scenario() -> tuple[bool, bool, bool]:
        watch = ListenWatch()
        port = free_port()
        woken = asyncio.Event()
        context = ProbeContext("api", wake=woken.set, listening=watch)
        local = build_checker(Probe.model_validate({"tcp": port}), context)
        remote = build_checker(
            Probe.model_validate({"tcp": f"192.0.2.1:{port}"}), context
        )
        notified = (local.notified, remote.notified)
        with bound(port) as sock:
            sock.listen()
            async with asyncio.timeout(5):
                await woken.wait()
            passed = (await local.check()).ok
        await local.close()
        await remote.close()
        return notified[0], notified[1], passed

    local_notified, remote_notified, passed = run(scenario())
    assert local_notified
    assert not remote_notified
    assert passed


def test_live_checker_is_never_notified() -> None:
    """Without the watch in its context (live probes), a tcp checker polls."""

    async def scenario() -> bool:
        context = ProbeContext("api", wake=lambda: None)
        checker = build_checker(Probe.model_validate({"tcp": free_port()}), context)
        await checker.close()
        return checker.notified

    assert run(scenario()) is False
