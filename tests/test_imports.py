"""The import graph of msa_cache (function-level imports included): arrows point down the pipeline,
cli -> report -> load/predict/explain -> runs/finetune -> heads/cache/encoders/extract -> manifest, without circles."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Lower layers may not import these (a layer above them).
UPPER = {"msa_cache.runs", "msa_cache.finetune", "msa_cache.load", "msa_cache.predict", "msa_cache.explain",
         "msa_cache.demo", "msa_cache.report"}
LOWER = ("msa_cache.heads", "msa_cache.cache", "msa_cache.encoders", "msa_cache.extract", "msa_cache.manifest")


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


def test_no_import_circles():
    assert _cycles(_graph()) == []


def test_lower_layers_never_import_upper_ones():
    graph = _graph()
    up = {m: sorted(d for d in deps if any(d == u or d.startswith(u + ".") for u in UPPER))
          for m, deps in graph.items() if m.startswith(LOWER)}
    assert {m: d for m, d in up.items() if d} == {}


def test_runs_does_not_reach_into_finetune():
    graph = _graph()
    assert {m: sorted(d for d in deps if d.startswith("msa_cache.finetune"))
            for m, deps in graph.items() if m.startswith("msa_cache.runs") and any(
                d.startswith("msa_cache.finetune") for d in deps)} == {}


def test_only_the_cli_imports_the_report():
    graph = _graph()
    assert sorted(m for m, deps in graph.items() if not m.startswith("msa_cache.report")
                  and any(d.startswith("msa_cache.report") for d in deps)) == []
