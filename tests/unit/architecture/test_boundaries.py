"""The architecture's rules, checked on the source: they fail when someone breaks them."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[3] / "src" / "batchkiln"
STATE_COLUMNS = {"state", "status"}
THE_ONE_CAS = SRC / "store" / "transitions.py"
NO_ENVIRONMENT = ("engine", "store", "providers", "costs", "intake")


def _modules(*folders: str) -> list[Path]:
    roots = [SRC / f for f in folders] if folders else [SRC]
    return sorted(p for root in roots for p in root.rglob("*.py"))


def _state_writes(tree: ast.AST) -> list[int]:
    """Lines of `.values(...)` calls that name a state/status column (keyword or dict key)."""
    found = []
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "values"
        ):
            continue
        names = {k.arg for k in node.keywords if k.arg}
        for arg in node.args:
            if isinstance(arg, ast.Dict):
                names |= {k.value for k in arg.keys if isinstance(k, ast.Constant)}
        if names & STATE_COLUMNS:
            found.append(node.lineno)
    return found


def _environment_reads(tree: ast.AST) -> list[int]:
    """Lines that touch os.environ or call os.getenv / os.putenv."""
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
            and node.attr in ("environ", "getenv", "putenv", "environb")
        ):
            found.append(node.lineno)
        if (
            isinstance(node, ast.ImportFrom)
            and node.module == "os"
            and {a.name for a in node.names} & {"environ", "getenv", "environb"}
        ):
            found.append(node.lineno)
    return found


def test_the_rule_finds_a_state_write() -> None:
    """The checker itself sees both spellings of a state write (so the test can fail)."""
    code = "update(t).values(state='done')\nupdate(t).values({'status': 'x'})\n"
    assert _state_writes(ast.parse(code)) == [1, 2]
    assert _environment_reads(ast.parse("import os\nos.environ.get('X')\n")) == [2]


def test_only_the_one_compare_and_set_writes_a_state_column() -> None:
    """Every Batch and Job state change goes through store/transitions.py."""
    offenders = [
        f"{path.relative_to(SRC)}:{line}"
        for path in _modules()
        if path != THE_ONE_CAS
        for line in _state_writes(ast.parse(path.read_text(), str(path)))
    ]
    assert offenders == []


def test_no_module_below_the_edges_reads_the_environment() -> None:
    """Configuration is read once, by Settings at the edge; the layers get values."""
    offenders = [
        f"{path.relative_to(SRC)}:{line}"
        for path in _modules(*NO_ENVIRONMENT)
        for line in _environment_reads(ast.parse(path.read_text(), str(path)))
    ]
    assert offenders == []
