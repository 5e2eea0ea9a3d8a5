"""docs/errors.md lists every error datarax raises, and each listed message exists.

Both directions are checked against the source, so the table cannot drift: a
message changed or added in the code without its row fails here, and so does a
row whose message the code no longer has.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "errors.md"
SOURCES = sorted(ROOT.glob("packages/*/src/datarax/**/*.py"))
ROW = re.compile(
    r"^\| *`?(?P<type>[A-Za-z]+)`? *\| *`(?P<pattern>.+?)` *\| *(?P<fix>.*?) *\|$"
)


def rendered(node: ast.AST) -> str | None:
    """A string literal's text with ``…`` for every interpolated value."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            v.value if isinstance(v, ast.Constant) else "…" for v in node.values
        )
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = rendered(node.left), rendered(node.right)
        if left is not None and right is not None:
            return left + right
    return None


def raised() -> list[tuple[str, str, str]]:
    """``(place, exception type, message)`` for every raise of a literal message."""
    out = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
                continue
            message = rendered(node.exc.args[0]) if node.exc.args else None
            if message is not None:
                place = f"{path.relative_to(ROOT / 'packages')}:{node.lineno}"
                kind = ast.unparse(node.exc.func)
                out.append((place, kind, message.replace("\n", " ")))
    return out


def literals() -> list[str]:
    """Every string literal in the packages (messages built by helpers too)."""
    out = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            text = rendered(node)
            if text is not None:
                out.append(text.replace("\n", " "))
    return out


def rows() -> list[tuple[str, re.Pattern, str]]:
    out = []
    for line in DOC.read_text().splitlines():
        match = ROW.match(line)
        if match:
            pattern = match["pattern"].replace("\\|", "|").strip("…")
            parts = [re.escape(part) for part in pattern.split("…")]
            # Messages are searched one per line: "." never runs into the next.
            out.append((match["type"], re.compile(".*?".join(parts)), line))
    return out


def test_the_table_has_rows_and_fixes():
    table = rows()
    assert len(table) > 100
    for _, _, line in table:
        assert ROW.match(line)["fix"].strip(), f"no fix given in {line}"


def test_every_raised_message_has_a_row_of_its_type():
    table = rows()
    missing = [
        f"{place} {kind}: {message!r}"
        for place, kind, message in raised()
        if not any(
            kind.split(".")[-1] == row_kind and pattern.search(message)
            for row_kind, pattern, _ in table
        )
    ]
    assert not missing, "add rows to docs/errors.md for:\n" + "\n".join(missing)


def test_every_row_names_a_message_the_code_has():
    texts = "\n".join(literals())
    stale = [line for _, pattern, line in rows() if not pattern.search(texts)]
    assert not stale, "rows whose message is not in the code:\n" + "\n".join(stale)
