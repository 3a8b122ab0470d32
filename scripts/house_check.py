"""The structure figures of fcdd/ and pipelines/, recounted from the source (issue 23's house plan).

    python scripts/house_check.py                 # every figure, every violation; exit 1 if any
    python scripts/house_check.py --only fcdd/cli # the violations that start in these paths only

Counts, over every module of the two packages (function-level imports included, since a lazy
import is still an arrow; imports under ``if TYPE_CHECKING:`` are left out, they never run):
- import circles: strongly connected groups of modules that import each other;
- imports from a lower layer to a higher one: the layers are the table under "## Layers" in
  docs/architecture.md (one row per layer: number, name, module patterns in backticks, a remark in
  parentheses; a pattern ``fcdd.data.*`` is the package and everything in it); a module no pattern
  covers is reported too;
- imports of pipelines / mlflow / prefect / dvc from fcdd/ (the core plugs them in, never imports them);
- modules over MAX_MODULE_LINES lines, functions over MAX_FUNCTION_LINES lines (the CLI's parser
  table aside: EXEMPT_FUNCTIONS).
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("fcdd", "pipelines")
ORCHESTRATION = ("pipelines", "mlflow", "prefect", "dvc")  # fcdd/ imports none of them
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
# (module pattern, function name): the argparse table of the fcdd command, a list of options.
EXEMPT_FUNCTIONS = {("fcdd.cli.*", "build_parser")}
LAYERS_DOC = Path("docs/architecture.md")


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module (an internal module, or the top-level name of an external one)
    line: int
    lazy: bool  # inside a function


@dataclass
class Module:
    name: str
    path: Path
    lines: int
    imports: list[Import] = field(default_factory=list)
    long_functions: list[tuple[str, int, int]] = field(default_factory=list)  # (name, line, length)


# ---------------------------------------------------------------- reading the source
def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, in_function: bool = False):
    """(node, inside a function) for every node, skipping `if TYPE_CHECKING:` bodies."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for sub in child.orelse:
                yield sub, in_function
                yield from _walk(sub, in_function)
            continue
        yield child, in_function
        inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        yield from _walk(child, inner)


def _absolute(name: str, level: int, module: str, is_package: bool) -> str:
    if not level:
        return name
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def read_module(path: Path, root: Path) -> Module:
    text = path.read_text()
    name = module_name(path, root)
    is_package = path.name == "__init__.py"
    tree = ast.parse(text, str(path))
    mod = Module(name, path, len(text.splitlines()))
    for node, lazy in _walk(tree):
        if isinstance(node, ast.Import):
            mod.imports += [Import(name, a.name, node.lineno, lazy) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module or "", node.level, name, is_package)
            # `from fcdd import calibration` imports the module fcdd.calibration; `from fcdd.data
            # import build_datasets` the package fcdd.data: read_tree resolves which one exists.
            mod.imports += [Import(name, f"{base}.{a.name}", node.lineno, lazy) for a in node.names]
        elif isinstance(node, ast.Call) and _dynamic_import(node):
            mod.imports.append(Import(name, node.args[0].value, node.lineno, lazy))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES and not _exempt(name, node.name):
                mod.long_functions.append((node.name, node.lineno, length))
    return mod


def _dynamic_import(call: ast.Call) -> bool:
    """importlib.import_module("x") / __import__("x") with a literal name: an import all the same."""
    func = call.func
    named = (isinstance(func, ast.Attribute) and func.attr == "import_module") or (
        isinstance(func, ast.Name) and func.id in ("import_module", "__import__")
    )
    return (
        named
        and bool(call.args)
        and isinstance(call.args[0], ast.Constant)
        and isinstance(call.args[0].value, str)
    )


def _matches(pattern: str, module: str) -> bool:
    if pattern.endswith(".*"):
        base = pattern[:-2]
        return module == base or module.startswith(base + ".")
    return module == pattern


def _exempt(module: str, function: str) -> bool:
    return any(_matches(p, module) and function == f for p, f in EXEMPT_FUNCTIONS)


def read_tree(root: Path) -> dict[str, Module]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if "__pycache__" not in path.parts:
                mod = read_module(path, root)
                modules[mod.name] = mod
    # Imports resolved to the modules that exist: `from fcdd import calibration` is fcdd.calibration,
    # `from fcdd.data import build_datasets` is fcdd.data; external ones keep their top-level name.
    for mod in modules.values():
        resolved = {}
        for imp in mod.imports:
            target = _resolve(imp.target, modules)
            if target is not None and target != mod.name:
                resolved.setdefault((target, imp.line), Import(mod.name, target, imp.line, imp.lazy))
        mod.imports = list(resolved.values())
    return modules


def _resolve(target: str, modules: dict[str, Module]) -> str | None:
    parts = target.split(".")
    if parts[0] not in PACKAGES:
        return parts[0]
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        if name in modules:
            return name
    return None


def read_layers(doc: Path) -> list[tuple[int, str, list[str]]]:
    """The "## Layers" table: rows `| N | name | `pattern`, ... | ... |`."""
    text = doc.read_text()
    match = re.search(r"^## Layers\b.*?$(.*?)(?=^## |\Z)", text, re.M | re.S)
    if not match:
        raise SystemExit(f"{doc}: no '## Layers' section (the layer table house_check reads)")
    layers = []
    for line in match.group(1).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].isdigit():
            patterns = re.sub(r"\([^)]*\)", "", cells[2])  # a remark in parentheses names no module
            layers.append((int(cells[0]), cells[1], re.findall(r"`([\w.*]+)`", patterns)))
    if not layers:
        raise SystemExit(f"{doc}: the '## Layers' section has no table rows `| N | name | patterns |`")
    return layers


def layer_of(module: str, layers: list[tuple[int, str, list[str]]]) -> int | None:
    """The layer of the most specific pattern that covers the module (an exact name before a package's
    ``.*`` of the same name)."""
    best = None
    for number, _, patterns in layers:
        for p in patterns:
            rank = (len(p.removesuffix(".*")), not p.endswith(".*"))
            if _matches(p, module) and (best is None or rank > best[0]):
                best = (rank, number)
    return None if best is None else best[1]


# ---------------------------------------------------------------- the checks
def import_circles(modules: dict[str, Module]) -> list[list[str]]:
    """Strongly connected groups of two or more modules (Tarjan), each in a stable order."""
    graph = {m: sorted({i.target for i in mod.imports if i.target in modules}) for m, mod in modules.items()}
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(groups)


def _circle_path(group: list[str], modules: dict[str, Module]) -> list[Import]:
    """One closed path through a circle's modules, as the imports that make it."""
    members = set(group)
    start = group[0]
    # breadth-first search from start back to start, inside the group
    frontier, came = [start], {}
    while frontier:
        nxt = []
        for v in frontier:
            for imp in modules[v].imports:
                if imp.target == start:
                    path = [imp]
                    while v != start:
                        path.append(came[v])
                        v = came[v].source
                    return path[::-1]
                if imp.target in members and imp.target not in came and imp.target != start:
                    came[imp.target] = imp
                    nxt.append(imp.target)
        frontier = nxt
    return []


@dataclass
class Report:
    modules: int
    lines: int
    circles: list[list[str]]
    upward: list[tuple[Import, int, int]]
    unlayered: list[str]
    orchestration: list[Import]
    long_modules: list[tuple[str, int]]
    long_functions: list[tuple[str, str, int, int]]

    def figures(self) -> list[tuple[str, int]]:
        return [
            ("import circles", len(self.circles)),
            ("imports from a lower layer to a higher one", len(self.upward)),
            ("modules without a layer", len(self.unlayered)),
            ("fcdd/ imports of pipelines, mlflow, prefect, dvc", len(self.orchestration)),
            (f"modules over {MAX_MODULE_LINES} lines", len(self.long_modules)),
            (f"functions over {MAX_FUNCTION_LINES} lines", len(self.long_functions)),
        ]


def check(root: Path, only: list[str] | None = None) -> tuple[Report, dict[str, Module]]:
    modules = read_tree(root)
    layers = read_layers(root / LAYERS_DOC)

    def shown(name: str) -> bool:
        path = modules[name].path.relative_to(root).as_posix()
        return not only or any(path == o or path.startswith(o.rstrip("/") + "/") for o in only)

    layer = {m: layer_of(m, layers) for m in modules}
    upward, orchestration = [], []
    for name, mod in modules.items():
        if not shown(name):
            continue
        for imp in mod.imports:
            if name.split(".")[0] == "fcdd" and imp.target.split(".")[0] in ORCHESTRATION:
                orchestration.append(imp)
            src, dst = layer.get(name), layer.get(imp.target)
            if src is not None and dst is not None and dst > src:
                upward.append((imp, src, dst))
    return Report(
        modules=len(modules),
        lines=sum(m.lines for m in modules.values()),
        circles=[g for g in import_circles(modules) if any(shown(m) for m in g)],
        upward=upward,
        unlayered=sorted(m for m in modules if layer[m] is None and shown(m)),
        orchestration=orchestration,
        long_modules=sorted(
            (m, mod.lines) for m, mod in modules.items() if mod.lines > MAX_MODULE_LINES and shown(m)
        ),
        long_functions=sorted(
            (m, f, line, n) for m, mod in modules.items() if shown(m) for f, line, n in mod.long_functions
        ),
    ), modules


def _where(imp: Import, modules: dict[str, Module], root: Path) -> str:
    lazy = " (in a function)" if imp.lazy else ""
    return f"{modules[imp.source].path.relative_to(root)}:{imp.line} imports {imp.target}{lazy}"


def print_report(report: Report, modules: dict[str, Module], root: Path, only: list[str] | None) -> None:
    scope = f" (violations starting in {', '.join(only)})" if only else ""
    print(f"house check: {report.modules} modules in fcdd/ and pipelines/, {report.lines} lines{scope}")
    width = max(len(name) for name, _ in report.figures())
    for name, count in report.figures():
        print(f"  {name:<{width}}  {count}")
    details = []
    for group in report.circles:
        path = _circle_path(group, modules)
        details.append(f"circle: {' -> '.join([*(i.source for i in path), group[0]])}")
        details += [f"    {_where(i, modules, root)}" for i in path]
    for imp, src, dst in report.upward:
        details.append(f"upward (layer {src} -> {dst}): {_where(imp, modules, root)}")
    details += [
        f"no layer: {m} ({modules[m].path.relative_to(root)}; see {LAYERS_DOC})" for m in report.unlayered
    ]
    details += [f"orchestration import: {_where(i, modules, root)}" for i in report.orchestration]
    details += [
        f"long module: {modules[m].path.relative_to(root)}: {n} lines" for m, n in report.long_modules
    ]
    details += [
        f"long function: {modules[m].path.relative_to(root)}:{line} {f}(): {n} lines"
        for m, f, line, n in report.long_functions
    ]
    if details:
        print()
        print("\n".join(details))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1], help="repository")
    parser.add_argument("--only", nargs="+", help="report the violations that start in these paths only")
    args = parser.parse_args(argv)
    report, modules = check(args.root, args.only)
    print_report(report, modules, args.root, args.only)
    return 1 if any(count for _, count in report.figures()) else 0


if __name__ == "__main__":
    sys.exit(main())
