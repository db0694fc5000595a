"""Fix weight norm in mindnlp's mindtorch: one call, :func:`install`.

mindnlp 0.5 runs Hugging Face transformers' own model code on MindSpore by redirecting
``import torch`` to its mindtorch layer. Both of mindtorch's weight norms give ``g`` an all-zero
gradient (its ``g`` is a Parameter wrapping an op's output), the old ``nn.utils.weight_norm``
also lists the computed weight as an extra Parameter and state-dict entry, and both recurse
without end for a ``dim`` in the middle of the weight. :func:`install`, made after
``import mindnlp`` and before models are built, re-binds, by identity, wherever mindtorch's
objects are bound (mindtorch's modules and any module that imported them by name):

- ``mindtorch.nn.utils.parametrizations._WeightNorm`` (the parametrization that
  ``parametrizations.weight_norm`` registers) by a subclass whose ``right_inverse`` returns leaf
  ``g`` and ``v``;
- ``mindtorch.nn.utils.weight_norm.WeightNorm`` (the old API's hook, which its ``weight_norm``
  looks up when called) by a subclass that keeps the computed weight a plain tensor;
- ``remove_weight_norm`` by one that also removes hooks made before the call.

mindtorch's ``weight_norm`` functions themselves stay: they look the classes up when called.
Parameter names and state-dict keys are torch's. mindtorch modules are not MindSpore Cells, so
this library's core weight norm is not used here. :func:`install` refuses an untested mindnlp
release before changing anything (``allow_untested=True`` overrides); :func:`uninstall` puts
the originals back. Models built meanwhile keep the fixed weight norm, which stays valid (the
replacements subclass mindtorch's classes). The core library never imports this module, and
this module imports mindnlp only when called.
"""
from __future__ import annotations

import sys
from typing import Any, Dict, List, Tuple

from ._rebind import Change, find_bindings, rebind, undo

__all__ = ["install", "uninstall", "is_installed", "TESTED_VERSIONS", "mindnlp_version"]

# The mindnlp releases this was tested against (tests_mindnlp/ runs 0.5.1; 0.5.0's
# mindtorch/nn/utils/{weight_norm,parametrizations,parametrize}.py are byte-identical to 0.5.1's).
TESTED_VERSIONS: Tuple[str, ...] = ("0.5.0", "0.5.1")

# What install() changed, to be undone by uninstall().
_CHANGES: List[Change] = []
_STATE: Dict[str, Any] = {}


def is_installed() -> bool:
    """Whether :func:`install` is in effect."""
    return bool(_STATE)


def mindnlp_version() -> str:
    """The installed mindnlp distribution's version.

    ``mindnlp.__version__`` says ``0.5.0rc2`` in both 0.5.0 and 0.5.1, so the package
    metadata is what is read.
    """
    from importlib import metadata
    try:
        return metadata.version("mindnlp")
    except metadata.PackageNotFoundError:
        raise RuntimeError("ms_weightnorm.integrations.mindnlp.install(): mindnlp is not installed; "
                           f"install mindnlp {' or '.join(TESTED_VERSIONS)} first") from None


def install(*, allow_untested: bool = False) -> List[str]:
    """Fix mindtorch's weight norm; return the ``module.name`` bindings replaced (idempotent).

    Call it after ``import mindnlp`` and before building models. Raises ``RuntimeError`` and
    changes nothing when mindnlp is not a tested release (:data:`TESTED_VERSIONS`), unless
    ``allow_untested=True``, or when mindtorch lacks a part this replaces.

    >>> import mindnlp
    >>> from ms_weightnorm.integrations import mindnlp as integration
    >>> changed = integration.install()
    >>> "mindtorch.nn.utils.parametrizations._WeightNorm" in changed, integration.install() == changed
    (True, True)
    >>> import mindtorch
    >>> m = mindtorch.nn.utils.weight_norm(mindtorch.nn.Linear(4, 3))
    >>> [name for name, _ in m.named_parameters()]
    ['bias', 'weight_g', 'weight_v']
    >>> bool(integration.uninstall()), integration.is_installed()
    (True, False)
    """
    if _STATE:
        return list(_STATE["changed"])
    version = mindnlp_version()
    if version not in TESTED_VERSIONS and not allow_untested:
        raise RuntimeError(
            f"ms_weightnorm.integrations.mindnlp.install(): mindnlp {version} is not a tested release "
            f"(tested: {', '.join(TESTED_VERSIONS)}); nothing was changed. Install mindnlp "
            f"{TESTED_VERSIONS[-1]}, or call install(allow_untested=True) and check the gradients yourself")
    if "mindnlp" not in sys.modules:
        raise RuntimeError("ms_weightnorm.integrations.mindnlp.install(): call it after `import mindnlp` "
                           "(which sets up mindtorch); nothing was changed")
    try:
        from . import _mindtorch as ours
    except (ImportError, AttributeError) as err:
        raise RuntimeError(f"ms_weightnorm.integrations.mindnlp.install(): mindnlp {version}'s mindtorch lacks "
                           f"a part this replaces ({err}); nothing was changed") from None
    # Every module namespace that bound one of mindtorch's objects, under any name. Found first,
    # changed after, so an error leaves nothing half-done.
    plan = ((ours.MINDTORCH_PARAMETRIZATION, ours.WeightNormParametrization),
            (ours.MINDTORCH_WEIGHT_NORM, ours.WeightNorm),
            (ours.MINDTORCH_REMOVE_WEIGHT_NORM, ours.remove_weight_norm))
    found = find_bindings(plan)
    for namespace, key, old, new, _ in found:
        rebind(namespace, key, old, new, _CHANGES)
    _STATE["changed"] = sorted(label for *_, label in found)
    return list(_STATE["changed"])


def uninstall() -> List[str]:
    """Undo :func:`install` where its values are still in place; return what was restored.

    A name re-bound by someone else after :func:`install` is left as they set it.
    """
    if not _STATE:
        return []
    restored = undo(_CHANGES)
    _STATE.clear()
    return sorted(restored)
