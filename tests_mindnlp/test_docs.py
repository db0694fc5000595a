"""docs/mindnlp.md's blocks marked ``<!-- run-in: mindnlp -->`` (the main suite leaves them out),
in order in one namespace, and the doctests of the mindnlp integration modules, which need
mindnlp."""
import doctest
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT / "tests"))  # the one block reader the three suites share

from doc_blocks import blocks_for, python_blocks  # noqa: E402

PAGE = ROOT / "docs" / "mindnlp.md"


def test_every_python_block_of_the_page_is_marked_and_runs(tmp_path, monkeypatch, capsys):
    text = PAGE.read_text(encoding="utf-8")
    blocks = blocks_for(text, "mindnlp")
    assert len(blocks) == len(python_blocks(text)) >= 4  # none left unmarked, so none left untested
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "docs_mindnlp"}
    from ms_weightnorm.integrations import mindnlp as integration
    import standins
    standins.uninstall()  # the page shows mindtorch as it is
    try:
        for line, code in blocks:
            exec(compile("\n" * line + code, str(PAGE), "exec"), namespace)  # noqa: S102 - our own page
    finally:
        standins.install()
        integration.install()  # the session keeps it installed
    printed = capsys.readouterr().out.splitlines()
    # The outputs the page shows are what the blocks print.
    shown = ["(1, 4, 14)", "For 'Conv2D', 'w_shape[0]' must be equal to 'out_channel',",
             "  but got 'w_shape[0]': 8, 'out_channel': 4."]
    assert printed[:3] == shown
    assert printed[3:] == ["0.0", "True"]
    assert "```text\n" + "\n".join(shown) + "\n```" in text


def test_integration_doctests():
    from ms_weightnorm.integrations import _mindtorch
    from ms_weightnorm.integrations import mindnlp as integration
    try:
        results = [doctest.testmod(mod, optionflags=doctest.ELLIPSIS) for mod in (integration, _mindtorch)]
    finally:
        integration.install()
    assert all(r.failed == 0 for r in results), results
    assert sum(r.attempted for r in results) >= 8, results
