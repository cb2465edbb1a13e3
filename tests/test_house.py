"""The package's shape (issue 15), read from the source with `ast`: nothing here imports gpt_jax or jax.

Counted as /work/shared/hooks/house_check.py counts them, so this test and that gate agree:
- modules: every .py under gpt_jax/; a package's `__init__.py` is the module named by the package.
- edges: every `import` statement anywhere in a module, function bodies included. `import gpt_jax.x`
  is an edge to gpt_jax.x; `from gpt_jax.x import y` (or the relative form) is an edge to gpt_jax.x
  and, where gpt_jax.x.y is a module, to that too. Only targets that are modules of gpt_jax count.
- an internal import is one statement with at least one such target; it is function-local when it
  stands inside a `def` (at any depth).
- lines: newlines + 1 (a file of 400 lines ending in a newline counts 401, as in house_check.py).

The rules:
1. no import cycle (a strongly connected component of more than one module);
2. function-local internal imports are at most 5% of internal imports, and each one carries its reason
   on the same line or the line directly above, as a comment `# lazy: <reason>`, e.g.
       from gpt_jax.interop import hf_files  # lazy: needs safetensors, an optional dependency
   (the reason should name the optional heavy dependency; a local import that only breaks a cycle
   has no reason: break the cycle instead);
3. no module over 400 lines.
"""

from __future__ import annotations

import ast
import collections
import io
import itertools
import pathlib
import re
import tokenize

import pytest

PKG_DIR = pathlib.Path(__file__).resolve().parents[1] / "gpt_jax"
PKG = PKG_DIR.name
MAX_LINES = 400
MAX_LOCAL_SHARE = 0.05
REASON = re.compile(r"#\s*lazy:\s*\S")


def _modules() -> dict[str, pathlib.Path]:
    mods = {}
    for path in sorted(PKG_DIR.rglob("*.py")):
        name = ".".join(path.relative_to(PKG_DIR.parent).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = path
    return mods


def _resolve(module: str, is_pkg: bool, level: int, name: str | None) -> str | None:
    if level == 0:
        return name
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


Import = collections.namedtuple("Import", "module targets line local path")


def _imports(mods: dict[str, pathlib.Path]) -> list[Import]:
    found = []
    for module, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        is_pkg = path.name == "__init__.py"
        in_func = {
            id(sub)
            for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            for sub in ast.walk(node)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, is_pkg, node.level, node.module)
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            targets = sorted({t for t in names if t in mods})
            if targets:
                found.append(Import(module, targets, node.lineno, id(node) in in_func, path))
    return sorted(found, key=lambda imp: (imp.module, imp.line))


MODS = _modules()
IMPORTS = _imports(MODS)


def _where(imp: Import) -> str:
    return f"{imp.path.relative_to(PKG_DIR.parent)}:{imp.line}"


def _components(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, stack, on_stack, comps = {}, {}, [], set(), []
    for root in sorted(MODS):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    comps.append(sorted(comp))
    return comps


def _shortest_cycle(start: str, comp: set[str], edges: dict[str, set[str]]) -> list[str]:
    """start -> ... -> start by a breadth-first search inside one component."""
    parent, queue = {}, collections.deque([start])
    while queue:
        v = queue.popleft()
        for w in sorted(edges.get(v, ()) & comp):
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return path[::-1] + [start]
            if w not in parent:
                parent[w] = v
                queue.append(w)
    raise AssertionError(f"no cycle through {start}")  # cannot happen inside a component


def test_no_import_cycles():
    edges, site = {}, {}
    for imp in IMPORTS:
        for t in imp.targets:
            if t != imp.module:
                edges.setdefault(imp.module, set()).add(t)
                site.setdefault((imp.module, t), imp)
    lines = []
    for comp in _components(edges):
        cycle = _shortest_cycle(comp[0], set(comp), edges)
        hops = []
        for a, b in itertools.pairwise(cycle):
            imp = site[(a, b)]
            hops.append(f"    {a} -> {b}  ({_where(imp)}{', function-local' if imp.local else ''})")
        lines.append(f"  cycle of {len(comp)} modules: {', '.join(comp)}\n  e.g.\n" + "\n".join(hops))
    if lines:
        pytest.fail(f"{len(lines)} import cycle(s) (function-local imports count):\n" + "\n".join(lines), pytrace=False)


def test_function_local_import_share():
    local = [imp for imp in IMPORTS if imp.local]
    share = len(local) / max(len(IMPORTS), 1)
    listing = "\n".join(f"  {_where(imp)}  {', '.join(imp.targets)}" for imp in local)
    if share > MAX_LOCAL_SHARE:
        pytest.fail(
            f"function-local imports of {PKG} modules: {len(local)}/{len(IMPORTS)} = {share:.1%} "
            f"(at most {MAX_LOCAL_SHARE:.0%}); move them to the top of their module:\n{listing}",
            pytrace=False,
        )


def _comment_lines(path: pathlib.Path) -> dict[int, str]:
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline)
    return {t.start[0]: t.string for t in tokens if t.type == tokenize.COMMENT}


def test_function_local_imports_give_a_reason():
    comments, missing = {}, []
    for imp in IMPORTS:
        if not imp.local:
            continue
        by_line = comments.setdefault(imp.path, _comment_lines(imp.path))
        if not any(REASON.search(by_line.get(n, "")) for n in (imp.line, imp.line - 1)):
            missing.append(f"  {_where(imp)}  {', '.join(imp.targets)}")
    if missing:
        pytest.fail(
            f"{len(missing)} function-local import(s) without '# lazy: <reason>' on the line or the line above:\n"
            + "\n".join(missing),
            pytrace=False,
        )


def test_module_sizes():
    big = []
    for path in MODS.values():
        n = path.read_text(encoding="utf-8").count("\n") + 1
        if n > MAX_LINES:
            big.append((n, f"  {path.relative_to(PKG_DIR.parent)}: {n} lines"))
    if big:
        pytest.fail(
            f"modules over {MAX_LINES} lines:\n" + "\n".join(s for _, s in sorted(big, reverse=True)), pytrace=False
        )
