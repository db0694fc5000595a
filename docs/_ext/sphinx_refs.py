"""Griffe extension for the API pages: the docstrings' Sphinx roles become autorefs links.

The package's docstrings cross-reference each other the Sphinx way (``:func:`weight_norm```,
``:class:`~ms_weightnorm.WeightNorm```, ``:mod:`.limits```), which Markdown shows as raw text.
Here, once the whole package is loaded, each role is resolved in its docstring's scope, as
Python would resolve the name there, and rewritten as a mkdocs-autorefs reference to the full
path. The source files stay as they are (``help()`` and Sphinx read them too).

What the strict build then checks (``mkdocs build --strict``):

- a name that resolves to nothing (a typo, a renamed function) becomes a plain autorefs link,
  ``[`name`][name]``, which autorefs reports as unresolved: the build fails;
- a name that resolves to an object of this package or to another package (``zipfile``,
  ``mindspore.nn.Cell``) becomes an *optional* reference: a link when the site documents that
  object, plain code otherwise (internal helpers and other projects' objects have no page here).

Used by mkdocstrings (see mkdocs.yml); nothing in the package imports it.
"""
from __future__ import annotations

import html
import re
from typing import Any, Iterator, Optional

import griffe

# :func:`name`, :py:class:`~a.b.C`, :meth:`title <a.b.c>`: Sphinx's Python-domain roles.
ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|exc|data|obj|const):`(?P<body>[^`]+)`")
_TITLED = re.compile(r"^(?P<title>.*?)\s*<(?P<target>[^<>]+)>$")
_FENCE = re.compile(r"^\s*```")


def _package_of(module: griffe.Module, dots: int) -> Optional[griffe.Module]:
    """The package a relative name with ``dots`` leading dots starts from, as ``import`` reads it."""
    base: Optional[griffe.Object] = module if module.is_init_module else module.parent
    for _ in range(dots - 1):
        base = base.parent if base is not None else None
    return base  # type: ignore[return-value]


def _exists(root: griffe.Module, path: str) -> bool:
    """Whether ``path`` (inside ``root``'s package) names a loaded object."""
    try:
        root.modules_collection[path]
    except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return False
    return True


def resolve(obj: griffe.Object, name: str) -> Optional[str]:
    """The full path ``name`` means in ``obj``'s docstring, or None when it names nothing.

    A leading dot is relative to ``obj``'s module, as in a relative import; a dotted name
    resolves its first part in scope (``functional.spectral_matrix`` inside the package);
    a dotted name unknown in scope is taken as absolute (``mindspore.nn.Cell``).
    """
    module = obj if isinstance(obj, griffe.Module) else obj.module
    package = module.package
    if name.startswith("."):
        dots = len(name) - len(name.lstrip("."))
        base = _package_of(module, dots)
        if base is None:
            return None
        path = f"{base.path}.{name[dots:]}"
    else:
        first, _, rest = name.partition(".")
        try:
            path = obj.resolve(first) + (f".{rest}" if rest else "")
        except griffe.NameResolutionError:
            if not rest:
                return None
            path = name
    if path == package.path or path.startswith(package.path + "."):
        return path if _exists(package, path) else None
    return path


def reference(obj: griffe.Object, body: str) -> str:
    """The Markdown for one role's ``body`` (``name``, ``~a.b`` or ``title <a.b>``) in ``obj``."""
    titled = _TITLED.match(body)
    if titled:
        title, name = titled["title"], titled["target"]
    else:
        name = body
        title = body.lstrip("~")
        if body.startswith("~"):
            title = title.rsplit(".", 1)[-1]
    name = name.lstrip("~")
    path = resolve(obj, name)
    if path is None:
        # autorefs reports this one; the strict build fails on it.
        return f"[`{title}`][{name}]"
    return f'<autoref identifier="{html.escape(path)}" optional><code>{html.escape(title)}</code></autoref>'


def convert(obj: griffe.Object, text: str) -> str:
    """``text`` with its roles rewritten, leaving fenced code blocks (the examples) as written."""
    out = []
    in_fence = False
    for line in text.split("\n"):
        if _FENCE.match(line):
            in_fence = not in_fence
        out.append(line if in_fence else ROLE.sub(lambda m: reference(obj, m["body"]), line))
    return "\n".join(out)


def _objects(obj: griffe.Object) -> Iterator[griffe.Object]:
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _objects(member)  # type: ignore[arg-type]


class SphinxRefs(griffe.Extension):
    """Rewrites the Sphinx roles of every docstring in a package once it is fully loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        for obj in _objects(pkg):
            if obj.docstring is not None:
                obj.docstring.value = convert(obj, obj.docstring.value)
