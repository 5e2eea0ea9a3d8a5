"""The code's structure: one-way imports, public seams between distributions, size.

These tests read the source files (``ast``), so they hold for code that is never
run by another test, and name the file and line of each violation.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = {
    "datarax-core": ROOT / "packages/datarax-core/src",
    "datarax-sources": ROOT / "packages/datarax-sources/src",
    "datarax-integrations": ROOT / "packages/datarax-integrations/src",
    "datarax-bench": ROOT / "packages/datarax-bench/src",
}
#: Longest function body (docstring left out) in datarax-core and datarax-sources.
MAX_FUNCTION_LINES = 60
MAX_PIPELINE_LINES = 350


def modules(distribution: str) -> Iterator[tuple[str, Path]]:
    """(dotted module name, file) of every module a distribution ships."""
    src = SOURCES[distribution]
    for path in sorted(src.rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts), path


def distribution_of(module: str) -> str | None:
    """The distribution that ships ``module`` (``None`` outside datarax)."""
    parts = module.split(".")
    if parts[0] != "datarax":
        return None
    if len(parts) == 1 or parts[1] in ("core", "operators", "nodes", "checkpoint"):
        return "datarax-core"
    return {
        "sources": "datarax-sources",
        "integrations": "datarax-integrations",
        "bench": "datarax-bench",
    }.get(parts[1])


def imports(module: str, path: Path) -> Iterator[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every import statement.

    Imports under ``if TYPE_CHECKING:`` count too: a lower layer must not even
    name an upper one.
    """
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                yield base, alias.name, node.lineno


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Cycles of a directed graph (module -> modules it imports), by DFS."""
    cycles = []
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return cycles


def test_datarax_core_modules_import_each_other_one_way():
    known = {name for name, _ in modules("datarax-core")}
    graph: dict[str, set[str]] = {}
    for module, path in modules("datarax-core"):
        targets = set()
        for base, name, _ in imports(module, path):
            # `from datarax.core import _x` names the submodule datarax.core._x.
            full = f"{base}.{name}" if name else base
            target = full if full in known else base
            if target in known and target != module:
                targets.add(target)
        graph[module] = targets

    cycles = find_cycles(graph)
    assert not cycles, "import cycles in datarax-core: " + "; ".join(
        " -> ".join(c) for c in cycles
    )


@pytest.mark.parametrize(
    "distribution", ["datarax-sources", "datarax-integrations", "datarax-bench"]
)
def test_no_private_name_is_imported_from_another_distribution(distribution):
    problems = []
    for module, path in modules(distribution):
        for base, name, line in imports(module, path):
            owner = distribution_of(base)
            if owner is None or owner == distribution:
                continue
            private = [part for part in base.split(".") if is_private(part)]
            if name is not None and is_private(name):
                private.append(name)
            if private:
                where = f"{path.relative_to(ROOT)}:{line}"
                problems.append(f"{where} imports {private} from {base} ({owner})")
    assert not problems, "\n".join(problems)


def classes(path: Path) -> Iterator[tuple[str, set[str]]]:
    """(class name, private members its body defines) for top-level classes.

    Members written in the source only: metaclasses add private attributes of
    their own (``_abc_impl``, flax's ``_pytree__*``) to every class.
    """
    tree = ast.parse(path.read_text(), str(path))
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        members = set()
        for item in node.body:
            if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                members.add(item.name)
            elif isinstance(item, ast.Assign | ast.AnnAssign):
                targets = (
                    item.targets if isinstance(item, ast.Assign) else [item.target]
                )
                members.update(t.id for t in targets if isinstance(t, ast.Name))
        yield node.name, {m for m in members if is_private(m)}


@pytest.mark.parametrize(
    "distribution", ["datarax-sources", "datarax-integrations", "datarax-bench"]
)
def test_no_private_method_of_another_distribution_is_overridden(distribution):
    problems = []
    checked = 0
    for module, path in modules(distribution):
        defined = list(classes(path))
        if not defined:
            continue
        try:
            loaded = importlib.import_module(module)
        except ImportError:  # an extra or peer this environment lacks
            continue
        for class_name, members in defined:
            cls = getattr(loaded, class_name)
            checked += 1
            for attribute in members:
                for base in cls.__mro__[1:]:
                    owner = distribution_of(base.__module__)
                    if owner not in (None, distribution) and attribute in vars(base):
                        problems.append(
                            f"{module}.{class_name}.{attribute} overrides "
                            f"{base.__module__}.{base.__name__}.{attribute} ({owner})"
                        )
    assert checked, f"no class of {distribution} could be imported"
    assert not problems, "\n".join(problems)


def function_lengths(path: Path) -> Iterator[tuple[str, int, int]]:
    """(qualified name, first line, body lines without the docstring)."""
    tree = ast.parse(path.read_text(), str(path))

    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, int, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                body = child.body
                if (
                    isinstance(body[0], ast.Expr)
                    and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)
                    and len(body) > 1
                ):
                    body = body[1:]
                lines = body[-1].end_lineno - body[0].lineno + 1
                yield f"{prefix}{child.name}", child.lineno, lines
                yield from walk(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, f"{prefix}{child.name}.")

    yield from walk(tree, "")


@pytest.mark.parametrize("distribution", ["datarax-core", "datarax-sources"])
def test_functions_fit_on_one_screen(distribution):
    long = [
        f"{path.relative_to(ROOT)}:{line} {name} ({lines} lines)"
        for _, path in modules(distribution)
        for name, line, lines in function_lengths(path)
        if lines > MAX_FUNCTION_LINES
    ]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


def test_the_pipeline_module_is_a_face_not_the_engine():
    path = SOURCES["datarax-core"] / "datarax/core/_pipeline.py"
    lines = len(path.read_text().splitlines())
    assert lines < MAX_PIPELINE_LINES, f"{path.name} has {lines} lines"


def test_the_checks_see_a_cycle_and_a_private_import(tmp_path):
    # The helpers above must be able to fail: feed them a tiny package.
    (tmp_path / "a.py").write_text(
        "from datarax.core._feed import Stream\nfrom .b import x\n"
    )
    found = list(imports("pkg.a", tmp_path / "a.py"))
    assert ("datarax.core._feed", "Stream", 1) in found
    assert ("pkg.b", "x", 2) in found
    (tmp_path / "f.py").write_text("def f():\n    '''doc'''\n" + "    x = 1\n" * 61)
    assert list(function_lengths(tmp_path / "f.py")) == [("f", 1, 61)]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []
    (tmp_path / "k.py").write_text("class K:\n    def _plan(self): ...\n    x = 1\n")
    assert list(classes(tmp_path / "k.py")) == [("K", {"_plan"})]
