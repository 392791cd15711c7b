"""The dependency graph: validation, selection, order and renderings."""

from __future__ import annotations

import json

import pytest

from overture.config.model import Condition, Dependency, Project
from overture.errors import GraphError, UsageError
from overture.graph import (
    Graph,
    render_dot,
    render_json,
    render_mermaid,
    render_tree,
)

STARTED = Dependency()


def dep(condition: str = "started", required: bool = True) -> Dependency:
    return Dependency(condition=Condition(condition), required=required)


def diamond() -> Graph:
    """app needs left and (optionally) right; both need base."""
    return Graph(
        {
            "app": {"left": dep("healthy"), "right": dep(required=False)},
            "left": {"base": dep("healthy")},
            "right": {"base": dep("completed")},
            "base": {},
        }
    )


# Validation.


def test_unknown_dependency_message() -> None:
    """A dependency on an unknown service names it and the valid services."""
    deps = {"api": {"pg": STARTED}, "cache": {}, "db": {}, "worker": {}}
    with pytest.raises(GraphError) as caught:
        Graph(deps)
    assert str(caught.value) == (
        "service 'api' depends on unknown service 'pg'; "
        "valid services: api, cache, db, worker"
    )


def test_unknown_dependency_suggests_close_name() -> None:
    """A misspelt dependency gets a 'did you mean' before the valid names."""
    with pytest.raises(GraphError) as caught:
        Graph({"api": {"dbb": STARTED}, "db": {}})
    assert str(caught.value) == (
        "service 'api' depends on unknown service 'dbb' (did you mean 'db'?); "
        "valid services: api, db"
    )


def test_unknown_profile_member_message() -> None:
    """A profile naming an unknown service is a graph error."""
    with pytest.raises(GraphError) as caught:
        Graph({"db": {}, "api": {}}, profiles={"minimal": ["db", "x"]})
    assert str(caught.value) == (
        "profile 'minimal' names unknown service 'x'; valid services: api, db"
    )


def test_unknown_group_member_message() -> None:
    """A group naming an unknown service is a graph error."""
    with pytest.raises(GraphError) as caught:
        Graph({"db": {}}, groups={"data": ["db", "redis"]})
    assert str(caught.value) == (
        "group 'data' names unknown service 'redis'; valid services: db"
    )


def test_three_cycle_message_starts_at_smallest_name() -> None:
    """A cycle is spelt out once, from its smallest name, whatever leads to it."""
    deps = {
        "a": {"d": STARTED},  # behind the cycle, not on it
        "d": {"e": STARTED},
        "e": {"c": STARTED},
        "c": {"d": STARTED},
    }
    with pytest.raises(GraphError) as caught:
        Graph(deps)
    assert str(caught.value) == "dependency cycle: c -> d -> e -> c"


def test_self_dependency_message() -> None:
    """A service that depends on itself is a one-step cycle."""
    with pytest.raises(GraphError) as caught:
        Graph({"a": {"a": STARTED}, "b": {}})
    assert str(caught.value) == "dependency cycle: a -> a"


def test_optional_edge_counts_for_cycles() -> None:
    """An optional dependency can still close a cycle."""
    with pytest.raises(GraphError, match=r"^dependency cycle: a -> b -> a$"):
        Graph({"a": {"b": dep(required=False)}, "b": {"a": STARTED}})


def test_long_chain_needs_no_recursion() -> None:
    """A 5,000-long chain orders and renders without hitting recursion limits."""
    size = 5000
    deps = {f"s{i:04d}": {f"s{i - 1:04d}": STARTED} for i in range(1, size)}
    deps["s0000"] = {}
    graph = Graph(deps)
    selection = graph.select(["s4999"])
    assert selection.order[0] == "s0000"
    assert len(selection.order) == size
    assert render_tree(selection).count("\n") == size - 1


# Queries.


def test_dependencies_and_dependents() -> None:
    """Edges are readable both ways; dependents come sorted by name."""
    graph = diamond()
    assert dict(graph.dependencies("left")) == {"base": dep("healthy")}
    assert graph.dependents("base") == ("left", "right")
    assert graph.dependents("app") == ()


def test_unknown_name_in_query_is_usage_error() -> None:
    """Asking about a service that does not exist names the valid services."""
    with pytest.raises(UsageError, match=r"^unknown service 'nope'; valid services"):
        diamond().dependents("nope")


def test_from_project_reads_groups_and_profiles() -> None:
    """A project's depends_on, groups and profiles become the graph's."""
    project = Project.model_validate(
        {
            "services": {
                "db": {"command": ["db"], "groups": ["data"]},
                "cache": {"command": ["cache"], "groups": ["data"]},
                "api": {"command": ["api"], "depends_on": {"db": "healthy"}},
            },
            "profiles": {"minimal": ["api"]},
        }
    )
    graph = Graph.from_project(project)
    assert graph.names == ("db", "cache", "api")
    assert dict(graph.groups) == {"data": ("db", "cache")}
    assert dict(graph.profiles) == {"minimal": ("api",)}
    assert graph.dependencies("api")["db"].condition is Condition.HEALTHY


# Order.


def test_chain_order_and_reverse() -> None:
    """A chain starts dependencies first and stops in the reverse order."""
    graph = Graph({"web": {"api": STARTED}, "api": {"db": STARTED}, "db": {}})
    assert graph.select().order == ("db", "api", "web")
    assert graph.select().stop_order == ("web", "api", "db")
    assert graph.order(["web", "db", "api"], reverse=True) == ["web", "api", "db"]


def test_diamond_order_breaks_ties_by_name() -> None:
    """Services ready at the same time start in name order."""
    assert diamond().select().order == ("base", "left", "right", "app")


def test_order_ignores_config_order() -> None:
    """The same graph listed in another order gives the same start order."""
    deps = {"z": {}, "y": {"z": STARTED}, "b": {}, "a": {"b": STARTED}}
    shuffled = dict(reversed(deps.items()))
    assert Graph(deps).select().order == ("b", "a", "z", "y")
    assert Graph(shuffled).select().order == ("b", "a", "z", "y")


def test_order_of_subset_uses_only_its_edges() -> None:
    """order() sorts exactly the names given, ignoring edges leaving them."""
    graph = diamond()
    assert graph.order(["app", "right"]) == ["right", "app"]
    assert graph.order(["app", "base"]) == ["app", "base"]


# Selection.


def test_select_nothing_means_everything() -> None:
    """With no arguments every service is requested and selected."""
    selection = diamond().select()
    assert selection.names == {"app", "left", "right", "base"}
    assert selection.requested == selection.names


def test_selection_follows_required_dependencies_only() -> None:
    """The closure goes through required edges; optional ones stay out."""
    graph = Graph(
        {
            "api": {"db": STARTED, "cache": dep(required=False)},
            "db": {"disk": dep("completed")},
            "cache": {},
            "disk": {},
        }
    )
    selection = graph.select(["api"])
    assert selection.requested == {"api"}
    assert selection.names == {"api", "db", "disk"}
    assert selection.order == ("disk", "db", "api")


def test_optional_dependency_inside_selection_starts_first() -> None:
    """A selected optional dependency is still ordered before its dependent."""
    graph = Graph({"api": {"cache": dep(required=False)}, "cache": {}})
    assert graph.select(["api", "cache"]).order == ("cache", "api")


def test_select_by_profile() -> None:
    """A profile selects its services and their required closure."""
    graph = Graph(
        {"api": {"db": STARTED}, "db": {}, "web": {}},
        profiles={"backend": ["api"], "full": ["api", "web"]},
    )
    selection = graph.select(profile="backend")
    assert selection.requested == {"api"}
    assert selection.order == ("db", "api")


def test_select_by_group_and_names_is_a_union() -> None:
    """Services, a profile and a group together select the union of all three."""
    graph = Graph(
        {"api": {}, "db": {}, "redis": {}, "web": {}},
        groups={"data": ["db", "redis"]},
        profiles={"front": ["web"]},
    )
    selection = graph.select(["api"], profile="front", group="data")
    assert selection.requested == {"api", "db", "redis", "web"}


def test_unknown_profile_is_usage_error() -> None:
    """An unknown profile names the valid profiles."""
    graph = Graph({"a": {}}, profiles={"minimal": ["a"], "full": ["a"]})
    with pytest.raises(UsageError) as caught:
        graph.select(profile="x")
    assert str(caught.value) == "unknown profile 'x'; valid profiles: full, minimal"


def test_unknown_group_is_usage_error() -> None:
    """An unknown group suggests a close one; no groups at all is said so."""
    graph = Graph({"db": {}}, groups={"data": ["db"]})
    with pytest.raises(UsageError) as caught:
        graph.select(group="dta")
    assert str(caught.value) == (
        "unknown group 'dta' (did you mean 'data'?); valid groups: data"
    )
    with pytest.raises(UsageError, match=r"^unknown group 'x'; no groups are defined"):
        Graph({"db": {}}).select(group="x")


def test_unknown_service_in_selection_is_usage_error() -> None:
    """Selecting an unknown service names it and the valid services."""
    with pytest.raises(UsageError) as caught:
        diamond().select(["app", "lft"])
    assert str(caught.value) == (
        "unknown service 'lft' (did you mean 'left'?); "
        "valid services: app, base, left, right"
    )


# Renderings.


def test_render_tree() -> None:
    """The tree draws each root's dependencies once, with their condition."""
    assert render_tree(diamond().select()) == (
        "app\n"
        "├── left (healthy)\n"
        "│   └── base (healthy)\n"
        "└── right (started, optional)\n"
        "    └── base (completed) (see above)"
    )


def test_render_tree_shows_only_selected_edges() -> None:
    """An optional dependency left out of the selection is not drawn."""
    assert render_tree(diamond().select(["app"])) == (
        "app\n└── left (healthy)\n    └── base (healthy)"
    )


def test_render_mermaid() -> None:
    """Mermaid draws required edges solid and optional ones dotted."""
    assert render_mermaid(diamond().select()) == (
        "graph TD\n"
        "    app -->|healthy| left\n"
        "    app -.->|started| right\n"
        "    left -->|healthy| base\n"
        "    right -->|completed| base"
    )


def test_render_mermaid_quotes_awkward_names() -> None:
    """A name Mermaid cannot take as an id becomes a label; lone nodes appear."""
    graph = Graph({"my-db": {}, "api": {"my-db": STARTED}, "web": {}})
    assert render_mermaid(graph.select()) == (
        'graph TD\n    _1["my-db"]\n    web\n    api -->|started| _1'
    )


def test_render_json() -> None:
    """The JSON lists nodes in start order and every edge with its condition."""
    document = json.loads(render_json(diamond().select(["app", "right"])))
    assert [node["name"] for node in document["nodes"]] == [
        "base",
        "left",
        "right",
        "app",
    ]
    assert document["nodes"][3] == {"name": "app", "requested": True}
    assert document["edges"] == [
        {
            "from": "app",
            "to": "left",
            "condition": "healthy",
            "required": True,
            "on_failure": "degrade",
        },
        {
            "from": "app",
            "to": "right",
            "condition": "started",
            "required": False,
            "on_failure": "degrade",
        },
        {
            "from": "left",
            "to": "base",
            "condition": "healthy",
            "required": True,
            "on_failure": "degrade",
        },
        {
            "from": "right",
            "to": "base",
            "condition": "completed",
            "required": True,
            "on_failure": "degrade",
        },
    ]


def test_render_dot() -> None:
    """Graphviz output holds every node and edge, optional edges dashed."""
    dot = render_dot(diamond().select())
    assert dot.startswith("digraph overture {\n")
    assert dot.endswith("\n}")
    assert '    "base";' in dot
    assert '    "app" -> "left" [label="healthy"];' in dot
    assert '    "app" -> "right" [label="started", style=dashed];' in dot
    assert '    "right" -> "base" [label="completed"];' in dot
