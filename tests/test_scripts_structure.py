"""Scripts share code through ``parapolicy.bench``, never by importing each other or editing sys.path."""

import ast
import pathlib

import pytest

SCRIPTS = sorted((pathlib.Path(__file__).resolve().parent.parent / "scripts").glob("*.py"))
SCRIPT_NAMES = {path.stem for path in SCRIPTS}


def _imported_modules(tree) -> set:
    """The dotted names of every absolute import in ``tree``."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def _top_level(tree) -> set:
    return {name.split(".")[0] for name in _imported_modules(tree)}


def _edits_sys_path(tree) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("insert", "append", "extend"):
            target = node.value
            if isinstance(target, ast.Attribute) and target.attr == "path" and \
                    isinstance(target.value, ast.Name) and target.value.id == "sys":
                return True
    return False


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_a_script_imports_no_other_script_and_leaves_sys_path_alone(path):
    tree = ast.parse(path.read_text())
    assert not _top_level(tree) & SCRIPT_NAMES, f"{path.name} imports another script"
    assert not _edits_sys_path(tree), f"{path.name} edits sys.path"


@pytest.mark.parametrize("path", [p for p in SCRIPTS if p.stem.startswith("bench_")], ids=lambda p: p.name)
def test_every_benchmark_uses_the_harness(path):
    tree = ast.parse(path.read_text())
    harness = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
               and node.module == "parapolicy.bench.harness" for alias in node.names}
    assert harness & {"write_report", "write_json_atomic"}, f"{path.name} writes its report without the harness"
    assert "command_line" in harness or "command" in path.read_text(), f"{path.name} does not echo its command"


def test_the_rules_see_an_edit_and_an_import():
    assert _edits_sys_path(ast.parse("import sys\nsys.path.insert(0, 'x')\n"))
    assert _top_level(ast.parse("from bench_latency import POLICIES\n")) & SCRIPT_NAMES


def test_the_library_never_imports_the_benchmark_harness():
    package = pathlib.Path(__file__).resolve().parent.parent / "parapolicy"
    offenders = []
    for path in package.rglob("*.py"):
        if "bench" in path.relative_to(package).parts[:1]:
            continue
        names = _imported_modules(ast.parse(path.read_text()))
        if any(n == "parapolicy.bench" or n.startswith("parapolicy.bench.") for n in names):
            offenders.append(str(path.relative_to(package)))
    assert not offenders


TESTS = sorted(pathlib.Path(__file__).resolve().parent.rglob("*.py"))


@pytest.mark.parametrize("path", TESTS, ids=lambda p: p.name)
def test_tests_share_code_through_tests_support_only(path):
    """A test module never imports another test module or conftest, and nothing edits sys.path."""
    tree = ast.parse(path.read_text())
    bad = {m for m in _imported_modules(tree) if m.split(".")[-1].startswith("test_")
           or m.split(".")[-1] == "conftest"}
    assert not bad, f"{path.name} imports {sorted(bad)}; shared code belongs in tests/support"
    assert not _edits_sys_path(tree), f"{path.name} edits sys.path"
