"""The documentation works as written: every Python block runs, and the site builds strictly.

The Python blocks of README.md and docs/*.md run page by page, each page's blocks in order in
one namespace (a page builds on its earlier blocks), in a scratch working folder. A block
preceded by a line ``<!-- run-in: mindone -->`` (or ``mindnlp``) needs that package: its own
suite runs it in its own environment, so it is left out here (tests/doc_blocks.py). The site build is MkDocs with ``--strict``:
a broken link, a page missing from the navigation, an unresolved docstring reference or a
bad anchor fails it.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import mindspore as ms
import pytest
from doc_blocks import blocks_for, python_blocks

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
def test_the_pages_have_examples():
    counts = {p.name: len(python_blocks(p.read_text(encoding="utf-8"))) for p in PAGES}
    for name in ("README.md", "index.md", "getting-started.md", "porting.md", "spectral-norm.md", "paper.md"):
        assert counts[name] > 0, counts


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_python_blocks_run(page, tmp_path, monkeypatch):
    blocks = blocks_for(page.read_text(encoding="utf-8"), None)
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


def build_site(config_dir: Path, site: Path) -> subprocess.CompletedProcess:
    """``mkdocs build --strict`` of the site configured in ``config_dir``, into ``site``."""
    assert importlib.util.find_spec("mkdocs"), "mkdocs is missing: it comes with the test extras (pip install '.[test]')"
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=config_dir, env=dict(os.environ, NO_MKDOCS_2_WARNING="1"), capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site as ``bash run.sh docs`` builds it (strictly: any warning fails the build)."""
    out = tmp_path_factory.mktemp("docs") / "site"
    r = build_site(ROOT, out)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html)).replace("&gt;", ">").replace("&lt;", "<").strip()


def _pages(site: Path) -> List[Path]:
    return sorted(site.rglob("*.html"))


def test_site_builds_strictly(site):
    api = (site / "api.html").read_text(encoding="utf-8")
    # The reference is generated from the docstrings, examples fenced as code.
    assert "Apply weight normalization to Parameter" in api
    assert '<span class="gp">&gt;&gt;&gt; </span>' in api  # a highlighted session, not run-on prose
    assert (site / "demo" / "loss_curves.png").exists()
    assert "ms_weightnorm: compiling the fused CPU kernels once" in (
        site / "getting-started.html").read_text(encoding="utf-8")


def test_site_works_opened_from_disk(site):
    """Opened as file://.../site/index.html, links lead to pages (a folder link would show a
    listing there), search runs without a server, and nothing is fetched from the internet."""
    pages = _pages(site)
    assert {"index.html", "api.html", "getting-started.html", "spectral-norm.html"} <= {p.name for p in pages}
    for page in pages:
        html = page.read_text(encoding="utf-8")
        if page.name == "404.html":
            continue  # a web server's page for missing URLs, linked from the site root; no page links it
        for ref in re.findall(r'(?:href|src)="([^"]*)"', html):
            if ref.startswith(("#", "https://", "http://", "mailto:")):
                continue
            target = ref.split("#", 1)[0].split("?", 1)[0]
            assert target and not target.endswith("/"), f"{page.name}: link to a folder: {ref!r}"
            assert (page.parent / target).resolve().is_file(), f"{page.name}: {ref!r} is no file of the site"
        # Nothing loaded from the internet: no remote scripts, stylesheets, fonts or frames.
        remote = re.findall(r'<(?:script|link|img|iframe)\b[^>]*(?:src|href)="https?://[^"]*"[^>]*>', html)
        assert not remote, f"{page.name} loads {remote}"
        # The theme's script fetches mermaid from a CDN for a page with a diagram; none has one.
        assert 'class="mermaid"' not in html, page.name
    for asset in list(site.rglob("*.css")) + list(site.rglob("*.js")):
        text = asset.read_text(encoding="utf-8", errors="replace")
        assert "fonts.googleapis" not in text and "fonts.gstatic" not in text, asset
    # Offline search: the index as a script a file:// page may load, and the stand-in for the
    # Worker that browsers refuse to file:// pages, loaded before the theme's own script.
    assert (site / "search" / "search_index.js").read_text(encoding="utf-8").startswith("var __index = {")
    index = (site / "index.html").read_text(encoding="utf-8")
    assert index.index('src="javascripts/iframe-worker.js"') < index.index('src="assets/javascripts/bundle.')
    assert 'href="api.html"' in index and 'href="getting-started.html"' in index


# --------------------------------------------------------------------------- the API reference

API_PAGE = ROOT / "docs" / "api.md"


def api_entries(text: str) -> List[str]:
    """The objects an API page documents: its ``::: path`` lines, in order.

    >>> api_entries("# API\\n\\n::: ms_weightnorm.weight_norm.weight_norm\\n    options:\\n      x: 1\\n::: a.b\\n")
    ['ms_weightnorm.weight_norm.weight_norm', 'a.b']
    """
    return re.findall(r"^::: +(\S+) *$", text, flags=re.M)


def import_path(path: str) -> object:
    """The object a dotted path names: its longest importable module prefix, then attributes.

    ``ms_weightnorm.weight_norm.weight_norm`` is the function in the module ``weight_norm``
    (the package's attribute ``weight_norm`` is that function too, not the module).
    """
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(path)


def public_names() -> Dict[str, object]:
    """Every public name and its object, as users import them: ``ms_weightnorm.__all__`` (a
    module listed there contributes its own ``__all__``) and the ``__all__`` of each module in
    ``ms_weightnorm.integrations``."""
    import ms_weightnorm
    import ms_weightnorm.integrations as integrations

    found: Dict[str, object] = {}

    def add(module, names):
        for name in names:
            obj = getattr(module, name)
            if inspect.ismodule(obj):
                assert hasattr(obj, "__all__"), f"{obj.__name__} is exported as a module but lists no __all__"
                add(obj, obj.__all__)
            else:
                found[f"{module.__name__}.{name}"] = obj

    add(ms_weightnorm, ms_weightnorm.__all__)
    for info in pkgutil.iter_modules(integrations.__path__):
        # conftest is the integrations' doctest set-up, not an integration.
        if not info.name.startswith("_") and info.name != "conftest":
            module = importlib.import_module(f"{integrations.__name__}.{info.name}")
            add(module, module.__all__)
    return found


def test_api_page_lists_exactly_the_public_names():
    """Each public object has one entry, and nothing else has one: a new export without an
    entry, or an entry for a helper that is not exported, fails here, named."""
    public = public_names()
    assert {"ms_weightnorm.weight_norm", "ms_weightnorm.functional.set_backend",
            "ms_weightnorm.integrations.mindone.install"} <= set(public)
    names_of: Dict[int, List[str]] = {}
    for name, obj in public.items():
        names_of.setdefault(id(obj), []).append(name)
    documented: Dict[int, str] = {}
    for entry in api_entries(API_PAGE.read_text(encoding="utf-8")):
        obj = import_path(entry)
        assert not inspect.ismodule(obj), f"api.md: '::: {entry}' documents a whole module; list its public names"
        assert id(obj) not in documented, f"api.md documents {entry} twice (also as {documented[id(obj)]})"
        documented[id(obj)] = entry
    missing = sorted(names_of[i][0] for i in names_of if i not in documented)
    extra = sorted(entry for i, entry in documented.items() if i not in names_of)
    assert not missing, f"public names without an entry in docs/api.md (add a '::: <name>' line): {missing}"
    assert not extra, f"docs/api.md documents names that are not public (in no __all__): {extra}"


def test_api_page_shows_functions_and_classes(site):
    api = (site / "api.html").read_text(encoding="utf-8")
    kinds = {ident: kind for kind, ident in
             re.findall(r'<div class="doc doc-object doc-(\w+)">\s*<h\d id="([^"]+)"', api)}
    for entry in api_entries(API_PAGE.read_text(encoding="utf-8")):
        obj = import_path(entry)
        want = "class" if inspect.isclass(obj) else "function" if callable(obj) else "attribute"
        assert kinds.get(entry) == want, (entry, kinds.get(entry), want)
    assert "doc-module" not in api  # no module entries with their internal helpers
    # Grouped as PyTorch's documentation groups them.
    sections = re.findall(r'<h2 id="([^"]+)"', api)
    assert sections[:4] == ["weight-and-spectral-normalization", "parametrizations", "parametrize", "layers"], sections
    assert {"ms_weightnorm.functional", "ms_weightnorm.torch_io", "integrations"} <= set(sections), sections


def test_api_signatures_show_real_defaults(site):
    """The sentinels weight_norm uses to tell module= from cell= stay out of the signatures."""
    api = (site / "api.html").read_text(encoding="utf-8")
    assert "_UNSET" not in api and "_ALIAS" not in api and "_Unset" not in api
    heading = re.search(r'<h3 id="ms_weightnorm\.weight_norm\.weight_norm"[^>]*>(.*?)</h3>', api, flags=re.S)
    assert _text(heading.group(1)).startswith(
        "weight_norm(module: nn.Cell, name: str = 'weight', dim: F.Dim = 0, eps: float = 0.0) -> nn.Cell")
    heading = re.search(r'<h3 id="ms_weightnorm\.remove_weight_norm"[^>]*>(.*?)</h3>', api, flags=re.S)
    assert _text(heading.group(1)).startswith("remove_weight_norm(module: nn.Cell, name: Optional[str] = None)")


def test_docstring_cross_references_are_links(site):
    """Sphinx roles (:func:`x`) in the docstrings become links to the entries they name."""
    for page in _pages(site):
        raw = re.findall(r":(?:py:)?(?:func|class|meth|mod|attr|exc|data|obj):(?:<code>|`)",
                         page.read_text(encoding="utf-8"))
        assert not raw, f"{page.name}: {len(raw)} raw Sphinx roles"
    api = (site / "api.html").read_text(encoding="utf-8")
    entry = api.split('id="ms_weightnorm.weight_norm.weight_norm"', 1)[1].split('<div class="doc doc-object', 1)[0]
    # :func:`apply_weight_norm` in weight_norm's docstring, resolved in its module's scope.
    assert 'href="#ms_weightnorm.apply_weight_norm"><code>apply_weight_norm</code></a>' in entry
    # :mod:`ms_weightnorm.torch_io` leads to the section documenting that module's names.
    assert 'href="#ms_weightnorm.torch_io"><code>ms_weightnorm.torch_io</code></a>' in api
    links = re.findall(r'<a class="autorefs autorefs-internal"[^\n]*?href="#([^"]+)"', api)
    assert len(links) >= 30 and set(links) <= set(re.findall(r'id="([^"]+)"', api))


def _ext(name: str):
    sys.path.insert(0, str(ROOT / "docs" / "_ext"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def test_sphinx_roles_resolve_as_python_would(tmp_path):
    """The role rewriting on a small package: names resolve in the docstring's scope (members,
    imports, relative modules); a name that resolves to nothing stays a plain link, which the
    strict build reports; code blocks are left as written."""
    import griffe

    refs = _ext("sphinx_refs")
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from .core import run\n", encoding="utf-8")
    (pkg / "core.py").write_text(
        'import zipfile\nfrom . import helpers\n\n\ndef run():\n    """Doc."""\n\n\n'
        'class Box:\n    def open(self):\n        """Doc."""\n', encoding="utf-8")
    (pkg / "helpers.py").write_text("LIMIT = 3\n", encoding="utf-8")
    loaded = griffe.load("pkg", search_paths=[str(tmp_path)])
    opened = loaded["core.Box.open"]
    assert refs.reference(opened, "run") == '<autoref identifier="pkg.core.run" optional><code>run</code></autoref>'
    assert 'identifier="pkg.core.Box"' in refs.reference(opened, "Box")
    assert 'identifier="pkg.helpers.LIMIT" optional><code>LIMIT</code>' in refs.reference(opened, "~helpers.LIMIT")
    assert 'identifier="pkg.helpers" optional><code>the helpers</code>' in refs.reference(opened, "the helpers <.helpers>")
    assert 'identifier="zipfile" optional' in refs.reference(opened, "zipfile")  # another package: code unless linked
    assert refs.reference(opened, "runn") == "[`runn`][runn]"  # nothing by that name: autorefs reports it
    assert refs.reference(opened, "helpers.LIMITT") == "[`helpers.LIMITT`][helpers.LIMITT]"
    text = "See :func:`run`.\n\n```pycon\n>>> ':func:`run`'\n```\n"
    assert refs.convert(opened, text) == (
        'See <autoref identifier="pkg.core.run" optional><code>run</code></autoref>.\n\n'
        "```pycon\n>>> ':func:`run`'\n```\n")


def test_strict_build_fails_on_an_unresolved_reference(tmp_path):
    """A docstring reference to nothing (here a typo) fails the strict build, naming it."""
    copy = tmp_path / "copy"
    shutil.copytree(ROOT / "src", copy / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("docs", "CHANGELOG.md", "mkdocs.yml"):
        (copy / name).symlink_to(ROOT / name)
    module = copy / "src" / "ms_weightnorm" / "weight_norm.py"
    text = module.read_text(encoding="utf-8")
    assert ":func:`apply_weight_norm`" in text
    module.write_text(text.replace(":func:`apply_weight_norm`", ":func:`apply_weight_normm`", 1), encoding="utf-8")
    r = build_site(copy, tmp_path / "site")
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "apply_weight_normm" in out and "cross-reference" in out, out[-3000:]


def test_strict_build_fails_on_a_broken_link(tmp_path):
    """--strict is what makes the build a check: a page with a dead link fails it."""
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("docs", "src", "CHANGELOG.md"):
        (copy / name).symlink_to(ROOT / name)
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8").replace("- Home: index.md", "- Home: nowhere.md")
    (copy / "mkdocs.yml").write_text(config, encoding="utf-8")
    r = build_site(copy, tmp_path / "site")
    assert r.returncode != 0 and "nowhere.md" in r.stdout + r.stderr


# --------------------------------------------------------------------------- code fits the column

# Characters of code a line may hold. Measured in Chromium with a 1280 px wide window: the code
# column is 906 px and a character of the monospace font 8.18 px wide, so 110 fit; 100 leaves
# room for a wider system font and for the copy button over the first line.
CODE_COLUMN = 100


def code_lines(text: str) -> List[Tuple[int, str]]:
    """``(line number, line)`` of every line inside a fenced code block of a Markdown text.

    >>> code_lines("text\\n```python\\nx = 1\\n```\\n  ```\\n  y\\n  ```\\n")
    [(3, 'x = 1'), (6, '  y')]
    """
    found, inside = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if re.match(r"^\s*```", line):
            inside = not inside
        elif inside:
            found.append((number, line))
    return found


def _fence():
    return _ext("doctest_fences").fence


def test_code_lines_fit_the_column():
    """No line of a code block on the site is cut off at 1280 px: the pages' code blocks and the
    public docstrings' examples (as the API page shows them) hold at most CODE_COLUMN characters."""
    fence = _fence()
    too_long = []
    for page in sorted((ROOT / "docs").glob("*.md")):
        for number, line in code_lines(page.read_text(encoding="utf-8")):
            if len(line) > CODE_COLUMN:
                too_long.append(f"docs/{page.name}:{number}: {len(line)} characters")
    for name, obj in public_names().items():
        docs = [(name, inspect.getdoc(obj))]
        if inspect.isclass(obj):
            docs += [(f"{name}.{k}", inspect.getdoc(v)) for k, v in vars(obj).items() if not k.startswith("_")]
        for where, doc in docs:
            for _, line in code_lines(fence(doc or "")):
                if len(line) > CODE_COLUMN:
                    too_long.append(f"{where} (docstring example): {len(line)} characters: {line.strip()[:40]}...")
    assert not too_long, f"code lines wider than {CODE_COLUMN} characters:\n" + "\n".join(too_long)


def test_docstring_examples_become_code_blocks():
    fence = _fence()
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
