"""The local server's layout by concern (CONTRIBUTING.md, ``ftkit/local/__init__.py``): what lives at
the top of ``ftkit/local``, which way imports run, and that every module path the code names exists.
Read from the sources (no imports, no torch), so it also catches a lazy import inside a function."""

import ast
import functools
import re
from pathlib import Path

LOCAL = Path(__file__).resolve().parents[1] / "ftkit" / "local"
FTKIT = LOCAL.parent

# the top level: the programs and tools used from outside the serving process, the store below
# every part, and one package per concern
TOP_LEVEL = {"__init__.py", "__main__.py", "control.py", "export.py", "recipes.py", "store.py",
             "api", "services", "jobs", "inference"}
# concern -> the concerns it must not import (api -> services -> jobs -> inference)
FORBIDDEN = {
    "inference": {"api", "services", "jobs"},
    "jobs": {"api", "services"},
}


def _module(path: Path) -> str:
    parts = path.relative_to(FTKIT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _exists(dotted: str) -> bool:
    path = FTKIT.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(path: Path):
    """(line, absolute module, names) of every ``from ... import`` in the file, nested ones too."""
    package = _module(path) if path.name == "__init__.py" else _module(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            yield node.lineno, target, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []


def test_the_top_of_ftkit_local_holds_only_the_programs_the_store_and_the_concerns():
    found = {p.name for p in LOCAL.iterdir() if p.name != "__pycache__" and (p.suffix == ".py" or p.is_dir())}
    assert found == TOP_LEVEL, (
        f"ftkit/local/ has {sorted(found - TOP_LEVEL)} beside its concerns: an HTTP module goes in api/, "
        f"a service in services/, job or training code in jobs/, model code in inference/ "
        f"(CONTRIBUTING.md, 'Where new things go'); missing: {sorted(TOP_LEVEL - found)}")


@functools.cache
def _defined(dotted: str) -> set[str]:
    """The names a module's top level defines or imports."""
    path = FTKIT.parent.joinpath(*dotted.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def test_every_ftkit_import_names_an_existing_module():
    wrong = []
    for path in sorted(FTKIT.rglob("*.py")):
        for line, target, names in _imports(path):
            if not target.startswith("ftkit"):
                continue
            where = f"{path.relative_to(FTKIT.parent)}:{line}"
            if not _exists(target):
                wrong.append(f"{where}: no module {target}")
                continue
            missing = [n for n in names if n != "*" and not _exists(f"{target}.{n}") and n not in _defined(target)]
            if missing:
                wrong.append(f"{where}: {target} has no {', '.join(missing)}")
    assert wrong == []


def test_imports_run_one_way_between_the_concerns():
    wrong = []
    for concern, banned in FORBIDDEN.items():
        for path in sorted((LOCAL / concern).rglob("*.py")):
            for line, target, _ in _imports(path):
                parts = target.split(".")
                if parts[:2] == ["ftkit", "local"] and len(parts) > 2 and parts[2] in banned:
                    wrong.append(f"{path.relative_to(FTKIT.parent)}:{line}: {concern} imports {target}")
    assert wrong == []


def test_module_paths_named_in_code_exist():
    """``-m ftkit.local.jobs.trainer``, the registry's ``trainer="module:Class"``, docstrings' paths."""
    wrong = set()
    for path in sorted(FTKIT.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"\bftkit\.local(?:\.[a-z_]\w*)+", text):
            parts = match.group(0).split(".")
            if not any(_exists(".".join(parts[:i])) for i in range(3, len(parts) + 1)):
                wrong.add(f"{path.relative_to(FTKIT.parent)}: {match.group(0)}")
        for match in re.finditer(r"\bftkit/local/[\w/]+\.(?:py|json)\b", text):
            if not (FTKIT.parent / match.group(0)).is_file():
                wrong.add(f"{path.relative_to(FTKIT.parent)}: {match.group(0)}")
    assert sorted(wrong) == []
