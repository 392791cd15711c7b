"""The dependency graph: which services a command touches, and in what order.

A `Graph` is checked once, when it is built: every dependency, profile entry
and group member must name a service, and the dependencies must not form a
cycle. After that, `select` turns what the user named (services, a profile, a
group) into a `Selection`: those services plus everything they need through
*required* dependencies, in start order.

Start order is Kahn's algorithm with ties broken by service name, so it is the
lexicographically smallest topological order: the same for a given graph
whatever order the config file lists services in. Stop order is its reverse.

An edge "a -> b" always reads "a depends on b", in messages and renderings.
"""

from __future__ import annotations

import difflib
import heapq
import json
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from overture.config.model import Dependency, Project
from overture.errors import GraphError, UsageError


def _unknown(kind: str, value: str, valid: Iterable[str]) -> str:
    """`unknown <kind> 'x' (did you mean 'y'?); valid <kind>s: a, b`."""
    choices = sorted(valid)
    text = f"unknown {kind} {value!r}"
    close = difflib.get_close_matches(value, choices, n=1)
    if close:
        text += f" (did you mean {close[0]!r}?)"
    if not choices:
        return f"{text}; no {kind}s are defined"
    return f"{text}; valid {kind}s: {', '.join(choices)}"


@dataclass(frozen=True, slots=True)
class Selection:
    """The services one command acts on.

    `requested` is what the user named (every service when nothing was named);
    `names` adds the closure over required dependencies; `order` is the start
    order of `names`, dependencies first.
    """

    requested: frozenset[str]
    names: frozenset[str]
    order: tuple[str, ...]
    graph: Graph = field(repr=False, compare=False)

    @property
    def stop_order(self) -> tuple[str, ...]:
        """Dependents first: the reverse of the start order."""
        return self.order[::-1]


class Graph:
    """Services and their dependencies, validated once at construction.

    `deps` maps each service to its dependencies; `groups` and `profiles` map
    a group or profile name to the services it names. Raises `GraphError` for
    an unknown name or a cycle.
    """

    __slots__ = ("_all", "_dependents", "_deps", "_groups", "_order", "_profiles")

    def __init__(
        self,
        deps: Mapping[str, Mapping[str, Dependency]],
        groups: Mapping[str, Sequence[str]] | None = None,
        profiles: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self._deps = {name: dict(needs) for name, needs in deps.items()}
        self._all = frozenset(self._deps)
        self._groups = {g: tuple(m) for g, m in (groups or {}).items()}
        self._profiles = {p: tuple(m) for p, m in (profiles or {}).items()}
        self._check_names()

        # Reverse edges once, so walking towards dependents is a lookup.
        dependents: dict[str, list[str]] = {name: [] for name in self._deps}
        for name, needs in self._deps.items():
            for dep in needs:
                dependents[dep].append(name)
        self._dependents = {n: tuple(sorted(d)) for n, d in dependents.items()}

        self._order = tuple(self._kahn(self._all))
        if len(self._order) != len(self._all):
            raise GraphError(f"dependency cycle: {self._cycle()}")

    @classmethod
    def from_project(cls, project: Project) -> Graph:
        """The graph of a loaded config; groups come from each `Service.groups`."""
        groups: dict[str, list[str]] = {}
        for name, service in project.services.items():
            for group in service.groups:
                groups.setdefault(group, []).append(name)
        deps = {name: s.depends_on for name, s in project.services.items()}
        return cls(deps, groups, project.profiles)

    # Queries.

    @property
    def names(self) -> tuple[str, ...]:
        """Every service, in the order the graph was given them."""
        return tuple(self._deps)

    @property
    def groups(self) -> Mapping[str, tuple[str, ...]]:
        return MappingProxyType(self._groups)

    @property
    def profiles(self) -> Mapping[str, tuple[str, ...]]:
        return MappingProxyType(self._profiles)

    def __contains__(self, name: object) -> bool:
        return name in self._all

    def __len__(self) -> int:
        return len(self._all)

    def dependencies(self, name: str) -> Mapping[str, Dependency]:
        """What `name` depends on, with each dependency's condition."""
        self._require(name)
        return MappingProxyType(self._deps[name])

    def dependents(self, name: str) -> tuple[str, ...]:
        """The services that depend on `name`, sorted by name."""
        self._require(name)
        return self._dependents[name]

    def edges(self, names: Collection[str]) -> list[tuple[str, str, Dependency]]:
        """(service, dependency, how) with both ends in `names`, sorted."""
        for name in names:
            self._require(name)
        return [
            (name, dep, self._deps[name][dep])
            for name in sorted(names)
            for dep in sorted(self._deps[name])
            if dep in names
        ]

    # Selection and order.

    def select(
        self,
        services: Sequence[str] = (),
        profile: str | None = None,
        group: str | None = None,
    ) -> Selection:
        """The named services, profile and group, plus their required closure.

        With no arguments every service is selected. An optional dependency is
        included only if something selected it; when it is, it still starts
        before its dependent. Raises `UsageError` for an unknown name.
        """
        if not services and profile is None and group is None:
            return Selection(self._all, self._all, self._order, self)

        requested = set(services)
        for name in services:
            self._require(name)
        if profile is not None:
            if profile not in self._profiles:
                raise UsageError(_unknown("profile", profile, self._profiles))
            requested.update(self._profiles[profile])
        if group is not None:
            if group not in self._groups:
                raise UsageError(_unknown("group", group, self._groups))
            requested.update(self._groups[group])

        names = self._required_closure(requested)
        order = self._order if len(names) == len(self._all) else self._kahn(names)
        return Selection(frozenset(requested), names, tuple(order), self)

    def order(self, names: Iterable[str], *, reverse: bool = False) -> list[str]:
        """Start order of exactly `names` (stop order with `reverse`)."""
        subset = frozenset(names)
        for name in subset:
            self._require(name)
        order = self._kahn(subset)
        if reverse:
            order.reverse()
        return order

    # Internals.

    def _require(self, name: str) -> None:
        if name not in self._all:
            raise UsageError(_unknown("service", name, self._all))

    def _check_names(self) -> None:
        for name, needs in self._deps.items():
            for dep in needs:
                if dep not in self._all:
                    unknown = _unknown("service", dep, self._all)
                    raise GraphError(f"service {name!r} depends on {unknown}")
        for kind, table in (("profile", self._profiles), ("group", self._groups)):
            for key, members in table.items():
                for member in members:
                    if member not in self._all:
                        unknown = _unknown("service", member, self._all)
                        raise GraphError(f"{kind} {key!r} names {unknown}")

    def _required_closure(self, start: Iterable[str]) -> frozenset[str]:
        seen = set(start)
        stack = list(seen)
        while stack:
            for dep, how in self._deps[stack.pop()].items():
                if how.required and dep not in seen:
                    seen.add(dep)
                    stack.append(dep)
        return frozenset(seen)

    def _kahn(self, nodes: Collection[str]) -> list[str]:
        """Topological order of `nodes`, smallest name first among the ready.

        Edges to services outside `nodes` are ignored. Services on or behind a
        cycle never become ready, so a short result means a cycle.
        """
        waiting = {n: sum(d in nodes for d in self._deps[n]) for n in nodes}
        ready = [name for name, count in waiting.items() if count == 0]
        heapq.heapify(ready)
        order: list[str] = []
        while ready:
            name = heapq.heappop(ready)
            order.append(name)
            for up in self._dependents[name]:
                if up in waiting:
                    waiting[up] -= 1
                    if waiting[up] == 0:
                        heapq.heappush(ready, up)
        return order

    def _cycle(self) -> str:
        # Every service Kahn left behind has a dependency also left behind, so
        # following the smallest one from the smallest service must loop.
        stuck = self._all.difference(self._order)
        path: list[str] = []
        index: dict[str, int] = {}
        name = min(stuck)
        while name not in index:
            index[name] = len(path)
            path.append(name)
            name = min(d for d in self._deps[name] if d in stuck)
        cycle = path[index[name] :]
        first = cycle.index(min(cycle))
        cycle = cycle[first:] + cycle[:first]
        return " -> ".join([*cycle, cycle[0]])


# Renderings of a selection. Each shows only edges inside the selection.


def _label(dep: Dependency) -> str:
    return dep.condition.value + ("" if dep.required else ", optional")


def render_tree(selection: Selection) -> str:
    """Each root (nothing selected depends on it) with its dependencies below.

    A service drawn a second time is marked "(see above)" and not expanded.
    """
    graph, names = selection.graph, selection.names
    roots = [n for n in sorted(names) if not names.intersection(graph.dependents(n))]
    lines: list[str] = []
    drawn: set[str] = set()
    for root in roots:
        # (service, label, branch drawn before it, indent for its children)
        stack = [(root, "", "", "")]
        while stack:
            name, label, branch, indent = stack.pop()
            again = " (see above)" if name in drawn else ""
            lines.append(f"{branch}{name}{label}{again}")
            if again:
                continue
            drawn.add(name)
            needs = graph.dependencies(name)
            children = sorted(d for d in needs if d in names)
            for i in reversed(range(len(children))):
                child = children[i]
                last = i == len(children) - 1
                stack.append(
                    (
                        child,
                        f" ({_label(needs[child])})",
                        indent + ("└── " if last else "├── "),
                        indent + ("    " if last else "│   "),
                    )
                )
    return "\n".join(lines)


def _dot_id(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_dot(selection: Selection) -> str:
    """Graphviz source; optional dependencies are dashed."""
    lines = ["digraph overture {"]
    lines += [f"    {_dot_id(name)};" for name in sorted(selection.names)]
    for name, dep, how in selection.graph.edges(selection.names):
        style = "" if how.required else ", style=dashed"
        attrs = f'[label="{how.condition.value}"{style}]'
        lines.append(f"    {_dot_id(name)} -> {_dot_id(dep)} {attrs};")
    lines.append("}")
    return "\n".join(lines)


_MERMAID_ID = re.compile(r"[A-Za-z0-9_]+")


def render_mermaid(selection: Selection) -> str:
    """A Mermaid flowchart; optional dependencies are dotted.

    A name Mermaid cannot take as a node id (it has '-' or '.', or is the
    keyword "end") gets the id `_<n>` and the name as its label.
    """
    names = sorted(selection.names)
    edges = selection.graph.edges(selection.names)
    linked = {n for edge in edges for n in edge[:2]}
    ids: dict[str, str] = {}
    lines = ["graph TD"]
    for i, name in enumerate(names):
        if _MERMAID_ID.fullmatch(name) and name.lower() != "end":
            ids[name] = name
            if name not in linked:
                lines.append(f"    {name}")
        else:
            ids[name] = f"_{i}"
            label = name.replace('"', "#quot;")
            lines.append(f'    _{i}["{label}"]')
    for name, dep, how in edges:
        arrow = "-->" if how.required else "-.->"
        lines.append(f"    {ids[name]} {arrow}|{how.condition.value}| {ids[dep]}")
    return "\n".join(lines)


def render_json(selection: Selection) -> str:
    """Nodes in start order and edges sorted by name, keys in a fixed order."""
    nodes = [
        {"name": name, "requested": name in selection.requested}
        for name in selection.order
    ]
    edges = [
        {
            "from": name,
            "to": dep,
            "condition": how.condition.value,
            "required": how.required,
            "on_failure": how.on_failure.value,
        }
        for name, dep, how in selection.graph.edges(selection.names)
    ]
    return json.dumps({"nodes": nodes, "edges": edges}, indent=2)
