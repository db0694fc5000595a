"""Re-binding another package's objects wherever a loaded module binds them, and undoing it.

The integrations (mindone, mindnlp) replace a package's classes and functions by identity: every
module namespace that bound one, the package's own modules and any module that imported it
under any name, gets the replacement. Each change is journaled as ``(namespace, key, old, new)``
so that ``uninstall`` puts back exactly what is still ours and leaves a name someone re-bound
since as they set it. Like the integrations, the core never imports this module.
"""
from __future__ import annotations

import sys
from typing import Any, List, Sequence, Tuple

Change = Tuple[dict, str, Any, Any]  # (namespace, key, old, new)


def find_bindings(plan: Sequence[Tuple[Any, Any]]) -> List[Tuple[dict, str, Any, Any, str]]:
    """``(namespace, key, old, new, "module.key")`` wherever a loaded module binds an ``old`` of ``plan``.

    Found by identity, under any name; this package's own modules are left out. Nothing is
    changed, so a caller can check everything before it changes anything.
    """
    found = []
    for mod_name, mod in list(sys.modules.items()):
        namespace = getattr(mod, "__dict__", None)
        if not isinstance(namespace, dict) or mod_name.startswith("ms_weightnorm"):
            continue
        for key, value in list(namespace.items()):
            for old, new in plan:
                if value is old:
                    found.append((namespace, key, old, new, f"{mod_name}.{key}"))
    return found


def rebind(namespace: dict, key: str, old: Any, new: Any, journal: List[Change]) -> None:
    """Bind ``key`` to ``new`` in ``namespace`` and journal the change."""
    namespace[key] = new
    journal.append((namespace, key, old, new))


def undo(journal: List[Change]) -> List[str]:
    """Undo the journal, newest first, where its values are still in place; the ``module.key`` restored."""
    by_id = {id(vars(m)): name for name, m in list(sys.modules.items())
             if isinstance(getattr(m, "__dict__", None), dict)}
    restored = []
    while journal:
        namespace, key, old, new = journal.pop()
        if namespace.get(key) is new:
            namespace[key] = old
            restored.append(f"{by_id.get(id(namespace), '?')}.{key}")
    return restored
