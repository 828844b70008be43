"""The documentation site: its code runs as written and `mkdocs build --strict` passes.

Every ```python block of a page in docs/ runs, in page order, in one namespace
per page (so a page reads as one session). A ```text block that directly
follows a python block is that block's printed output and must match it. A
block preceded by ``<!-- skip-test -->`` is shown but not run. Pages run in a
temporary folder, so the files they write (checkpoints) land there.
"""

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
SKIP = "<!-- skip-test -->"
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def _blocks(text: str) -> list[tuple[str, str, int, bool]]:
    """`(language, code, line, skipped)` of every fenced block, in order."""
    out = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip().splitlines()
        skipped = bool(before) and before[-1].strip() == SKIP
        line = text.count("\n", 0, match.start()) + 2
        out.append((match.group(1), match.group(2), line, skipped))
    return out


def _gap_is_blank(text: str, first: re.Match, second: re.Match) -> bool:
    return not text[first.end() : second.start()].strip()


def _runs(text: str) -> list[tuple[str, int, bool, str | None]]:
    """`(code, line, skipped, expected output or None)` of every python block."""
    matches = list(FENCE.finditer(text))
    blocks = _blocks(text)
    runs = []
    for i, (language, code, line, skipped) in enumerate(blocks):
        if language != "python":
            continue
        expected = None
        if (
            i + 1 < len(blocks)
            and blocks[i + 1][0] == "text"
            and _gap_is_blank(text, matches[i], matches[i + 1])
        ):
            expected = blocks[i + 1][1]
        runs.append((code, line, skipped, expected))
    return runs


def test_every_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = [p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")]
    assert pages
    assert [p for p in pages if f": {p}" not in nav] == []


def _isolate_global_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages seed the init stream and switch checks: give them their own copies
    so nothing leaks into the rest of the suite (the stale-RNG warning is per
    draw site, so a page's warning cannot silence another's)."""
    from blox.eager import _seed, _typecheck

    monkeypatch.setattr(_seed, "_stream", dict(_seed._stream))
    monkeypatch.setattr(_typecheck, "_enabled", list(_typecheck._enabled))


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_code_runs(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = page.read_text()
    runs = _runs(text)
    monkeypatch.chdir(tmp_path)
    _isolate_global_state(monkeypatch)
    namespace: dict = {"__name__": f"docs.{page.stem}"}
    for code, line, skipped, expected in runs:
        if skipped:
            continue
        printed = io.StringIO()
        where = f"{page.relative_to(ROOT)}:{line}"
        with contextlib.redirect_stdout(printed):
            # Padded so tracebacks give the page's line numbers.
            exec(compile("\n" * (line - 1) + code, str(page), "exec"), namespace)
        if expected is not None:
            got = printed.getvalue().rstrip()
            assert got == expected.rstrip(), f"output of the block at {where} differs"


@pytest.mark.parametrize("package", ["eager", "core"])
def test_api_reference_lists_every_public_name(package: str) -> None:
    import importlib

    module = importlib.import_module(f"blox.{package}")
    page = (DOCS / "api" / f"{package}.md").read_text()
    listed = set(re.findall(rf"^::: blox\.{package}\.(\w+)\s*$", page, flags=re.MULTILINE))
    assert sorted(set(module.__all__) - listed) == []
    assert sorted(listed - set(module.__all__)) == []


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-6000:]
    assert (tmp_path / "site" / "api" / "eager" / "index.html").exists()
