"""The documentation works as written: every Python block runs, and the site builds strictly.

The Python blocks of README.md and docs/*.md run page by page, each page's blocks in order in
one namespace (a page builds on its earlier blocks), in a scratch working folder. A block
preceded by the line ``<!-- run-in: mindone -->`` needs mindone: the mindone suite runs it in
its own environment, so it is left out here. The site build is MkDocs with ``--strict``:
a broken link, a page missing from the navigation, an unresolved docstring reference or a
bad anchor fails it.
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import mindspore as ms
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
MINDONE_MARK = "<!-- run-in: mindone -->"

_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(text: str) -> List[Tuple[int, str, bool]]:
    """``(line number, code, needs mindone)`` of each ```python block of a Markdown text.

    >>> python_blocks("a\\n<!-- run-in: mindone -->\\n\\n```python\\nx = 1\\n```\\n```python\\ny = 2\\n```\\n")
    [(4, 'x = 1\\n', True), (7, 'y = 2\\n', False)]
    """
    found = []
    for match in _BLOCK.finditer(text):
        before = [ln.strip() for ln in text[:match.start()].splitlines() if ln.strip()]
        line = text.count("\n", 0, match.start()) + 1
        found.append((line, match.group(1), bool(before) and before[-1] == MINDONE_MARK))
    return found


def test_the_pages_have_examples():
    counts = {p.name: len(python_blocks(p.read_text(encoding="utf-8"))) for p in PAGES}
    for name in ("README.md", "index.md", "getting-started.md", "porting.md", "spectral-norm.md", "paper.md"):
        assert counts[name] > 0, counts


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_python_blocks_run(page, tmp_path, monkeypatch):
    blocks = [(line, code) for line, code, mindone in python_blocks(page.read_text(encoding="utf-8")) if not mindone]
    monkeypatch.chdir(tmp_path)  # the examples write files (model.pt, ...) where they run
    namespace = {"__name__": f"docs_{page.stem}"}
    mode = ms.get_context("mode")
    try:
        for line, code in blocks:
            # Blank lines in front keep the page's line numbers in a traceback.
            exec(compile("\n" * line + code, str(page), "exec"), namespace)  # noqa: S102 - our own pages
    finally:
        ms.set_context(mode=mode)
        from ms_weightnorm import functional as F
        F.set_backend(os.environ.get("MS_WEIGHTNORM_BACKEND", "auto"))


def test_the_porting_example_checks_itself(tmp_path, monkeypatch):
    """The porting page's example compares against PyTorch; its assertion is live, not decoration."""
    text = (ROOT / "docs" / "porting.md").read_text(encoding="utf-8")
    assert "assert error < 1e-5" in text and 'torch.save(torch_model.state_dict(), "model.pt")' in text


def test_site_builds_strictly(tmp_path):
    assert importlib.util.find_spec("mkdocs"), "mkdocs is missing: it comes with the test extras (pip install '.[test]')"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    site = tmp_path / "site"
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    # The reference is generated from the docstrings, examples fenced as code.
    assert "Apply weight normalization to Parameter" in api
    assert '<span class="gp">&gt;&gt;&gt; </span>' in api  # a highlighted session, not run-on prose
    assert (site / "demo" / "loss_curves.png").exists()
    assert "ms_weightnorm: compiling the fused CPU kernels once" in (
        site / "getting-started" / "index.html").read_text(encoding="utf-8")


def test_strict_build_fails_on_a_broken_link(tmp_path):
    """--strict is what makes the build a check: a page with a dead link fails it."""
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "docs").symlink_to(ROOT / "docs")
    (copy / "src").symlink_to(ROOT / "src")
    (copy / "CHANGELOG.md").symlink_to(ROOT / "CHANGELOG.md")
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8").replace("- Home: index.md", "- Home: nowhere.md")
    (copy / "mkdocs.yml").write_text(config, encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                       cwd=copy, env=dict(os.environ, NO_MKDOCS_2_WARNING="1"), capture_output=True, text=True,
                       timeout=600)
    assert r.returncode != 0 and "nowhere.md" in r.stdout + r.stderr


def test_docstring_examples_become_code_blocks():
    sys.path.insert(0, str(ROOT / "docs" / "_ext"))
    try:
        from doctest_fences import fence
    finally:
        sys.path.pop(0)
    text = "Use it::\n\n    f(x)\n\nor:\n\n    >>> net[0](x)\n    2\n\nDone.\n"
    assert fence(text) == "Use it:\n\n```python\nf(x)\n```\n\nor:\n\n```pycon\n>>> net[0](x)\n2\n```\n\nDone.\n"
    # Prose is untouched, and a "::" with no indented block after it stays as written.
    assert fence("A note:: not a block.\nNext line.\n") == "A note:: not a block.\nNext line.\n"


def test_no_internal_wording():
    """Readers see what the package does, not how its work was tracked."""
    pages = PAGES + [ROOT / "CHANGELOG.md", ROOT / "benchmarks" / "README.md"]
    for page in pages:
        for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            assert not re.search(r"(^|[^-_\w])(issues?|targets?)\b", line, flags=re.I), f"{page.name}:{n}: {line}"
