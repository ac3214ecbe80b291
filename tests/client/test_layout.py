"""The folder listing is the architecture: a package's private modules and private names are
its own. Code outside a package imports only what the package's ``__init__`` exports.

Read from the source with ``ast`` (no import), so a lazy import inside a function counts
as much as one at the top of a module.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import journy_analytics

ROOT = Path(journy_analytics.__file__).parent
PACKAGE = "journy_analytics"


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_package(dotted: str, root: Path) -> bool:
    return (root.parent / dotted.replace(".", "/") / "__init__.py").is_file()


def _imports(tree: ast.AST, importer: str, is_init: bool) -> Iterator[Tuple[int, str, str]]:
    """(line, module, name) for every import of ours; ``name`` is "" for ``import x.y``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(PACKAGE):
                    yield node.lineno, alias.name, ""
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = importer.split(".")
                if not is_init:
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([module] if module else []))
            if module.startswith(PACKAGE):
                for alias in node.names:
                    yield node.lineno, module, alias.name


def _owner(target: str, root: Path) -> str:
    """The package that ``target`` (a module, or a module + "." + name) is private to: the
    innermost package above its last private component; "" when nothing in it is private."""
    parts = target.split(".")
    private = [i for i, part in enumerate(parts) if part.startswith("_") and i > 0]
    if not private:
        return ""
    owner = parts[: private[-1]]
    while not _is_package(".".join(owner), root):
        owner.pop()
    return ".".join(owner)


def crossings(root: Path = ROOT) -> List[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        importer = _module_name(path, root)
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for line, module, name in _imports(tree, importer, path.name == "__init__.py"):
            target = module
            if name and (_is_package(module, root) or not name.startswith("_")):
                # from package import name (a front name or a submodule); from module
                # import public_name: only the module's own path can be private.
                target = f"{module}.{name}" if _is_package(module, root) else module
            elif name:
                target = f"{module}.{name}"
            owner = _owner(target, root)
            if owner and owner != PACKAGE and not (importer + ".").startswith(owner + "."):
                where = path.relative_to(root.parent)
                found.append(f"{where}:{line}: imports {target} (private to {owner})")
    return found


def test_no_private_name_crosses_a_package_boundary() -> None:
    assert crossings() == []


def test_the_check_sees_a_crossing(tmp_path: Path) -> None:
    package = tmp_path / PACKAGE
    (package / "_core").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "_core" / "__init__.py").write_text("from ._worker import Worker\n")
    (package / "_core" / "_worker.py").write_text("class Worker: ...\n_SECRET = 1\n")
    (package / "_core" / "_queue.py").write_text(
        "from journy_analytics._core._worker import _SECRET\n"
    )
    (package / "client.py").write_text(
        "from journy_analytics._core import Worker\n"
        "from journy_analytics._core._worker import Worker as W\n"
        "from journy_analytics._core import _worker\n"
        "def f():\n    from journy_analytics._core._worker import _SECRET\n"
    )
    found = crossings(package)
    assert [entry.split(": ", 1)[0] for entry in found] == [
        f"{PACKAGE}/client.py:2",
        f"{PACKAGE}/client.py:3",
        f"{PACKAGE}/client.py:5",
    ]


def private_names_imported(root: Path = ROOT) -> List[str]:
    """``from module import _name`` anywhere but in a package's own front (its
    ``__init__`` may re-export a private module's name under a public one): a name that
    another module needs is not private to its module, and says so by its spelling."""
    found = []
    for path in sorted(root.rglob("*.py")):
        importer = _module_name(path, root)
        is_init = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for line, module, name in _imports(tree, importer, is_init):
            if not name.startswith("_") or name.startswith("__"):
                continue
            if (
                _is_package(f"{module}.{name}", root)
                or (root.parent / (module.replace(".", "/") + "/" + name + ".py")).is_file()
            ):
                continue  # a private module, not a name: the crossing check covers it
            if is_init and (module + ".").startswith(importer + "."):
                continue
            where = path.relative_to(root.parent)
            found.append(f"{where}:{line}: imports {module}.{name}")
    return found


def test_no_module_imports_another_modules_private_name() -> None:
    assert private_names_imported() == []


def test_the_check_sees_a_private_name_imported(tmp_path: Path) -> None:
    package = tmp_path / PACKAGE
    (package / "_core").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "_core" / "__init__.py").write_text("from ._outcomes import _EVERY as EVERY\n")
    (package / "_core" / "_outcomes.py").write_text("_EVERY = 1.0\n")
    (package / "_core" / "_worker.py").write_text(
        "from journy_analytics._core._outcomes import _EVERY\n"
        "from journy_analytics._core import _outcomes\n"
    )
    assert private_names_imported(package) == [
        f"{PACKAGE}/_core/_worker.py:1: imports {PACKAGE}._core._outcomes._EVERY"
    ]


def reaching_up(root: Path = ROOT) -> List[str]:
    """Imports from a private package (``_x``) of a public module that imports from that
    package: the front reached from behind it (``_import`` -> ``bulk`` -> ``_import``)."""
    imported_by: Dict[str, List[Tuple[int, str]]] = {}
    for path in sorted(root.rglob("*.py")):
        importer = _module_name(path, root)
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        imported_by[importer] = [
            (line, module)
            for line, module, _ in _imports(tree, importer, path.name == "__init__.py")
        ]
    found = []
    for importer, imports in imported_by.items():
        parts = importer.split(".")
        if len(parts) < 2 or not parts[1].startswith("_"):
            continue
        private = ".".join(parts[:2])
        for line, module in imports:
            if module.split(".")[1:2] and module.split(".")[1].startswith("_"):
                continue  # another private package: the crossing check covers it
            fronts = any(
                (m + ".").startswith(private + ".") for _, m in imported_by.get(module, [])
            )
            if module != PACKAGE and fronts:
                found.append(f"{importer}:{line}: imports {module}, which imports {private}")
    return found


def test_no_private_package_reaches_up_to_the_module_in_front_of_it() -> None:
    assert reaching_up() == []


def test_the_check_sees_a_reach_up(tmp_path: Path) -> None:
    package = tmp_path / PACKAGE
    (package / "_import").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "_import" / "__init__.py").write_text("from ._engine import run\n")
    (package / "_import" / "_engine.py").write_text(
        "def run():\n    from journy_analytics.bulk import client\n"
    )
    (package / "bulk.py").write_text("from journy_analytics._import import run\nclient = 1\n")
    assert reaching_up(package) == [
        f"{PACKAGE}._import._engine:2: imports {PACKAGE}.bulk, which imports {PACKAGE}._import"
    ]


# Exceptions that never reach a user of the package: caught inside it (SpoolError, the
# import's Refusal), or the Segment drop-in's own name for ValidationError.
_INTERNAL_EXCEPTIONS = {"SpoolError", "Refusal", "SegmentValidationError"}


def _exception_classes(root: Path = ROOT) -> List[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                bases = [ast.unparse(base) for base in node.bases]
                if any(b.endswith(("Error", "Exception")) for b in bases):
                    found.append(f"{path.relative_to(root).as_posix()}:{node.name}")
    return found


def test_every_public_exception_lives_in_one_module_and_is_exported() -> None:
    from journy_analytics import _exceptions

    elsewhere = [
        entry
        for entry in _exception_classes()
        if not entry.startswith("_exceptions.py:")
        and entry.split(":")[1] not in _INTERNAL_EXCEPTIONS
        and not entry.startswith("collector/")  # the collector is a server: its own
    ]
    assert elsewhere == []
    for name in _exceptions.__all__:
        assert getattr(journy_analytics, name) is getattr(_exceptions, name)
        assert name in journy_analytics.__all__
        assert name in (ROOT.parent.parent / "README.md").read_text(encoding="utf-8")


def _tree_block() -> str:
    text = (ROOT.parent.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    return text.split("```", 2)[1]


def test_the_architecture_page_lists_every_module_of_the_layers() -> None:
    # docs/architecture.md says the folder listing is the architecture: its tree names
    # every top-level module and package, and every module of the three layers.
    tree = _tree_block()
    names = [p.name for p in ROOT.iterdir() if p.suffix == ".py" and p.name != "__init__.py"]
    names += [f"{p.name}/" for p in ROOT.iterdir() if (p / "__init__.py").is_file()]
    for layer in ("_core", "_message", "_lifecycle"):
        names += [p.name for p in (ROOT / layer).glob("_*.py") if p.name != "__init__.py"]
    missing = sorted(name for name in names if name not in tree)
    assert missing == []
