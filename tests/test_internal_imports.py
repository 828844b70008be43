"""No file of blox reaches into another blox package's private names.

`blox.core` and `blox.eager` (with its `torch_nn`) are separate packages: what
the eager shell needs from the core comes from the core's public names or from
`blox.core.internal`, never from a private `blox.core._x` module or an
underscore name. The scan reads every source file's imports (with `ast`,
relative imports resolved) and its `core._x` attribute reads.
"""

import ast
import pathlib

import pytest

import blox

ROOT = pathlib.Path(blox.__file__).parent
FILES = sorted(ROOT.rglob("*.py"))


def _module_name(path: pathlib.Path) -> list[str]:
    parts = ["blox", *path.relative_to(ROOT).with_suffix("").parts]
    return parts[:-1] if parts[-1] == "__init__" else parts


def _package(parts: list[str]) -> str:
    """The blox package a module belongs to: 'core', 'eager' or '' (blox itself)."""
    return parts[1] if len(parts) > 1 else ""


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _violations(path: pathlib.Path, source: str | None = None) -> list[str]:
    """The private cross-package imports of `path` (whose text is `source` if given)."""
    source = path.read_text() if source is None else source
    here = _module_name(path)
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(source, str(path))):
        targets = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here if is_package else here[:-1]
                base = base[: len(base) - node.level + 1]
                module = base + (node.module.split(".") if node.module else [])
            else:
                module = (node.module or "").split(".")
            targets = [(module, [alias.name for alias in node.names])]
        elif isinstance(node, ast.Import):
            targets = [(alias.name.split("."), []) for alias in node.names]
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "core"
            and _private(node.attr)
            and _package(here) != "core"
        ):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: core.{node.attr}")
        for module, names in targets:
            if module[0] != "blox" or _package(module) == _package(here):
                continue
            bad = [p for p in module[1:] if _private(p)] + [n for n in names if _private(n)]
            if bad:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {'.'.join(module)} {bad}")
    return found


def test_the_scan_sees_the_files():
    names = {str(p.relative_to(ROOT)) for p in FILES}
    assert {"core/internal.py", "eager/_seed.py", "eager/torch_nn/_pool.py"} <= names


@pytest.mark.parametrize(
    ("where", "source", "flagged"),
    [
        ("eager/_x.py", "from blox.core._checks import positive_int\n", True),
        ("eager/_x.py", "from ..core import _checks\n", True),
        ("eager/torch_nn/_x.py", "from ...core._resize import resize\n", True),
        ("eager/_x.py", "from blox.core.internal import _secret\n", True),
        ("eager/_x.py", "import blox.core._graph\n", True),
        ("eager/_x.py", "from blox import core\ncore._checks.is_size(1)\n", True),
        ("eager/_x.py", "from blox.core.internal import checks\n", False),
        ("eager/torch_nn/_x.py", "from .._seed import build_core\n", False),
        ("core/_x.py", "from ._checks import positive_int\n", False),
        ("core/_x.py", "from blox import __version__\n", False),
    ],
)
def test_the_scan_flags_private_imports_across_packages(where, source, flagged):
    found = _violations(ROOT / where, source)
    assert bool(found) == flagged, found


def test_no_private_imports_across_blox_packages():
    found = [v for path in FILES for v in _violations(path)]
    assert found == [], "import these through blox.core.internal (or a public name): " + str(found)
