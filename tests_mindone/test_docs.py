"""docs/*.md blocks marked ``<!-- run-in: mindone -->`` (the main suite leaves them out), and the
doctests of ms_weightnorm.integrations.mindone, which need mindone."""
import doctest
import sys
from pathlib import Path

import mindspore as ms
import pytest

ROOT = Path(__file__).resolve().parents[1]
MARK = "<!-- run-in: mindone -->"
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
sys.path.append(str(ROOT / "tests"))  # the one block reader the three suites share

from doc_blocks import blocks_for  # noqa: E402


def mindone_blocks(text):
    return blocks_for(text, "mindone")


def test_the_mindone_page_has_mindone_blocks():
    assert len(mindone_blocks((ROOT / "docs" / "mindone.md").read_text(encoding="utf-8"))) >= 2


@pytest.mark.parametrize("page", [p for p in PAGES if p.exists() and MARK in p.read_text(encoding="utf-8")],
                         ids=lambda p: p.name)
def test_mindone_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"docs_{page.stem}"}
    try:
        for line, code in mindone_blocks(page.read_text(encoding="utf-8")):
            exec(compile("\n" * line + code, str(page), "exec"), namespace)  # noqa: S102 - our own pages
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
        from ms_weightnorm.integrations import mindone as integration
        integration.install()  # a page may uninstall; the session keeps it installed


def test_integration_doctests():
    from ms_weightnorm.integrations import mindone as integration
    try:
        result = doctest.testmod(integration, optionflags=doctest.ELLIPSIS)
    finally:
        integration.install()
    assert result.attempted >= 8 and result.failed == 0, result
