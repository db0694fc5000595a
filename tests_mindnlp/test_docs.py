"""docs/mindnlp.md's ```py blocks marked ``<!-- run-in: mindnlp -->`` (the main suite runs only
```python blocks, so it leaves them out), in order in one namespace, and the doctests of the
mindnlp integration modules, which need mindnlp."""
import doctest
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARK = "<!-- run-in: mindnlp -->"
_BLOCK = re.compile(r"^```py\n(.*?)^```", re.S | re.M)
PAGE = ROOT / "docs" / "mindnlp.md"


def mindnlp_blocks(text):
    found = []
    for match in _BLOCK.finditer(text):
        before = [ln.strip() for ln in text[:match.start()].splitlines() if ln.strip()]
        if before and before[-1] == MARK:
            found.append((text.count("\n", 0, match.start()) + 1, match.group(1)))
    return found


def test_every_py_block_of_the_page_is_marked_and_runs(tmp_path, monkeypatch, capsys):
    text = PAGE.read_text(encoding="utf-8")
    blocks = mindnlp_blocks(text)
    assert len(blocks) == len(_BLOCK.findall(text)) >= 4  # none left unmarked, so none left untested
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
    assert printed[:2] == ["(1, 4, 14)", "For 'Conv2D', 'w_shape[0]' must be equal to 'out_channel', but got "
                                         "'w_shape[0]': 8, 'out_channel': 4."]
    assert printed[2:] == ["0.0", "True"]
    assert "```text\n(1, 4, 14)\nFor 'Conv2D', 'w_shape[0]' must be equal to 'out_channel'" in text


def test_integration_doctests():
    from ms_weightnorm.integrations import _mindtorch
    from ms_weightnorm.integrations import mindnlp as integration
    try:
        results = [doctest.testmod(mod, optionflags=doctest.ELLIPSIS) for mod in (integration, _mindtorch)]
    finally:
        integration.install()
    assert all(r.failed == 0 for r in results), results
    assert sum(r.attempted for r in results) >= 8, results
