"""Fail if qmu_qiskit's module-level imports form a cycle (run by `make lint`).

Only imports that run at import time count: those outside functions and `if TYPE_CHECKING:`.
A cycle among them makes a module's behaviour depend on which module is imported first.
Function-level imports may close a loop (a registry loading its built-in plugins on first use, a
command module imported lazily by the CLI): they run after both modules are loaded. The layering
itself is import-linter's contract in pyproject.toml; this checks what that contract does not,
cycles inside one layer. Written by hand because neither import-linter nor ruff checks cycles.
"""

import ast
import os
import pathlib
import sys

root = pathlib.Path(__file__).resolve().parent.parent / "qmu_qiskit"
os.chdir(root.parent)
root = pathlib.Path("qmu_qiskit")
mods = {}
for p in root.rglob("*.py"):
    parts = list(p.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    mods[".".join(parts)] = p


def resolve(cur, node):
    pkg = cur.split(".") if mods[cur].name == "__init__.py" else cur.split(".")[:-1]
    if isinstance(node, ast.ImportFrom):
        base = pkg[: len(pkg) - (node.level - 1)] if node.level else []
        mod = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module
        out = []
        for a in node.names:
            cand = f"{mod}.{a.name}"
            out.append(cand if cand in mods else mod)
        return out
    return [a.name for a in node.names]


def toplevel(body):
    for n in body:
        if isinstance(n, (ast.Import, ast.ImportFrom)):
            yield n
        elif isinstance(n, ast.If):
            t = ast.unparse(n.test)
            if "TYPE_CHECKING" in t:
                continue
            yield from toplevel(n.body)
            yield from toplevel(n.orelse)
        elif isinstance(n, ast.Try):
            yield from toplevel(n.body)
            yield from toplevel(n.finalbody)
            for h in n.handlers:
                yield from toplevel(h.body)


graph = {}
for m, p in mods.items():
    deps = set()
    for n in toplevel(ast.parse(p.read_text()).body):
        for d in resolve(m, n) or []:
            while d and d not in mods and "." in d:
                d = d.rsplit(".", 1)[0]
            if d in mods and d != m:
                deps.add(d)
    graph[m] = deps
sys.setrecursionlimit(10000)
index, low, stack, on, sccs, i = {}, {}, [], set(), [], [0]


def strong(v):
    index[v] = low[v] = i[0]
    i[0] += 1
    stack.append(v)
    on.add(v)
    for w in graph[v]:
        if w not in index:
            strong(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        c = []
        while True:
            w = stack.pop()
            on.discard(w)
            c.append(w)
            if w == v:
                break
        if len(c) > 1:
            sccs.append(sorted(c))


for m in graph:
    if m not in index:
        strong(m)
for c in sccs:
    print("import cycle at module level:", " -> ".join(c))
print(
    f"{len(sccs)} import cycles at module level ({len(graph)} modules, "
    f"{sum(len(v) for v in graph.values())} module-level imports)"
)
sys.exit(1 if sccs else 0)
