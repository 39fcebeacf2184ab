"""The import graph of msa_cache (function-level imports included): the packages stand on floors, and
every arrow points down to a lower floor, never up and never sideways between siblings.

    demo
    report
    study (compare, tune, stats, oracle, submission, share) | predict | explain
    finished_run                 (a finished run, either mode)
    fit | finetune               (the two training modes, siblings)
    train                        (what both modes share)
    heads
    extract
    encoders
    cache
    manifest
    names, atomic, provenance, device, search_space, settings, metrics, partition, demo_data, remote, threads
    errors
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOORS = [
    {"errors"},
    {"names", "atomic", "provenance", "device", "search_space", "settings", "metrics", "partition", "demo_data", "lazy",
     "remote", "threads"},
    {"manifest"},
    {"cache"},
    {"encoders"},
    {"extract"},
    {"heads"},
    {"train"},
    {"fit", "finetune"},
    {"finished_run"},
    {"study", "predict", "explain"},
    {"predictor"},
    {"report", "api"},
    {"demo"},
]
FLOOR = {pkg: i for i, floor in enumerate(FLOORS) for pkg in floor}


def _modules() -> dict[str, Path]:
    out = {}
    for p in (ROOT / "msa_cache").rglob("*.py"):
        name = ".".join(p.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = p
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != name and t.startswith("msa_cache."):
                    deps.add(t)
        graph[name] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in graph:
        if v not in index:
            visit(v)
    return out


def _package(module: str) -> str:
    return module.split(".")[1] if "." in module else module


def test_no_import_circles():
    assert _cycles(_graph()) == []


def test_every_package_has_a_floor():
    assert sorted({_package(m) for m in _graph() if m != "msa_cache"} - set(FLOOR)) == []


def test_arrows_point_down_the_floors():
    """A package imports its own modules and lower floors only: no upward arrow, no sideways one
    (fit and finetune never import each other)."""
    bad = sorted(f"{m} -> {d}" for m, deps in _graph().items() if m != "msa_cache" for d in deps
                 if _package(d) != _package(m) and FLOOR[_package(d)] >= FLOOR[_package(m)])
    assert bad == []


def test_train_is_imported_by_both_modes_and_imports_neither():
    graph = _graph()
    users = {_package(m) for m, deps in graph.items() if any(_package(d) == "train" for d in deps)}
    assert {"fit", "finetune"} <= users
    assert [m for m, deps in graph.items() if _package(m) == "train"
            and any(_package(d) in ("fit", "finetune", "study") for d in deps)] == []
