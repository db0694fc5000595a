"""Replacement weight-norm classes for mindnlp's mindtorch (imported only by the mindnlp install()).

This module imports mindtorch at its top, so it is imported only by
:func:`ms_weightnorm.integrations.mindnlp.install`, after ``import mindnlp``. Its classes live at
module level so that pickled models find them again by name.

What is replaced, and why (mindnlp 0.5.0 and 0.5.1, whose weight-norm files are identical):

- mindtorch's Parameter is a ``mindspore.Tensor``; one built from an op's output (``Parameter(
  norm(w))``) stays tied to that op in autograd, so ``mindspore.value_and_grad`` gives it an
  all-zero gradient. Both of mindtorch's APIs build ``g`` that way. Here ``g`` and ``v`` are made
  from detached tensors: leaves, as in torch.
- The old API's computed weight is a Parameter too, so ``named_parameters()`` and
  ``state_dict()`` list an extra ``weight``. Here it is a plain tensor attribute, as in torch.
- mindtorch's ``norm_except_dim`` recurses without end for a dim that is neither the first nor
  the last (e.g. ``dim=1`` on a Conv2d weight). Here the norm is one reduction over the other axes.
"""
from __future__ import annotations

import importlib
from typing import Any, Optional, Tuple

import mindtorch
from mindtorch import nn

_parametrizations = importlib.import_module("mindtorch.nn.utils.parametrizations")
# By module path: the package attribute mindtorch.nn.utils.weight_norm is the function (its
# __init__ star-imports the module's names over the submodule's).
_old_api = importlib.import_module("mindtorch.nn.utils.weight_norm")

# The classes as mindnlp defines them, captured when this module is first imported (by install(),
# before anything is re-bound).
MINDTORCH_WEIGHT_NORM = _old_api.WeightNorm
MINDTORCH_PARAMETRIZATION = _parametrizations._WeightNorm
MINDTORCH_REMOVE_WEIGHT_NORM = _old_api.remove_weight_norm


def _axis(dim: Optional[int], ndim: int) -> Optional[int]:
    # torch: dim=None and dim=-1 both mean "the norm of the whole tensor" (a 0-d g); any other
    # negative dim is an ordinary index from the end.
    if dim is None or dim == -1:
        return None
    if not -ndim <= dim < ndim:
        raise IndexError(f"weight norm: dim={dim} is out of range for a {ndim}-d weight")
    return dim % ndim


def norm_except_dim(v: mindtorch.Tensor, dim: Optional[int]) -> mindtorch.Tensor:
    """The 2-norm of ``v`` over every axis but ``dim`` (kept as size-1 axes), or over all of it.

    One ``linalg.vector_norm`` call: that op (unlike ``sum``) also runs on the "meta" device that
    ``from_pretrained`` builds models on before loading weights.

    >>> import numpy as np
    >>> v = mindtorch.tensor(np.ones((3, 2, 4), np.float32))
    >>> tuple(norm_except_dim(v, 1).shape), round(float(norm_except_dim(v, None)), 5)
    ((1, 2, 1), 4.89898)
    """
    axis = _axis(dim, v.ndim)
    if axis is None:
        return mindtorch.linalg.vector_norm(v, 2, dim=tuple(range(v.ndim)), keepdim=False)
    others = tuple(i for i in range(v.ndim) if i != axis)
    if not others:  # a 1-d weight normed along its only axis: |v| elementwise, as torch
        return v.abs()
    return mindtorch.linalg.vector_norm(v, 2, dim=others, keepdim=True)


def compose(g: mindtorch.Tensor, v: mindtorch.Tensor, dim: Optional[int]) -> mindtorch.Tensor:
    """``g * v / ||v||``, traced through mindtorch's ops so that ``g`` and ``v`` get gradients."""
    return v * (g / norm_except_dim(v, dim))


class WeightNormParametrization(MINDTORCH_PARAMETRIZATION):
    """``nn.utils.parametrizations.weight_norm``'s parametrization, with leaf ``g`` and ``v``.

    A subclass of mindtorch's ``_WeightNorm`` (same ``dim`` attribute, same place in
    ``parametrizations.<name>``), so parameter names and state-dict keys stay torch's:
    ``parametrizations.weight.original0`` (g) and ``original1`` (v).
    """

    def forward(self, weight_g, weight_v):
        return compose(weight_g, weight_v, self.dim)

    def right_inverse(self, weight) -> Tuple[mindtorch.Tensor, mindtorch.Tensor]:
        # Detached: ParametrizationList wraps these in Parameters, and a Parameter wrapping an op's
        # output gets an all-zero gradient in mindtorch (see the module docstring).
        weight = weight.detach()
        return norm_except_dim(weight, self.dim).detach(), weight


class WeightNorm(MINDTORCH_WEIGHT_NORM):
    """The old ``nn.utils.weight_norm`` hook: ``<name>_g`` and ``<name>_v`` Parameters, the weight
    recomputed before every forward as a plain tensor (not a Parameter, as in torch).

    A subclass of mindtorch's ``WeightNorm``, so mindtorch's own ``remove_weight_norm`` and its
    "two weight_norm hooks" check still recognise it after ``uninstall()``.
    """

    def compute_weight(self, module: nn.Module) -> mindtorch.Tensor:
        return compose(getattr(module, self.name + "_g"), getattr(module, self.name + "_v"), self.dim)

    @staticmethod
    def apply(module: nn.Module, name: str, dim: Optional[int]) -> "WeightNorm":
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, MINDTORCH_WEIGHT_NORM) and hook.name == name:
                raise RuntimeError(f"Cannot register two weight_norm hooks on the same parameter {name}")
        fn = WeightNorm(name, dim)  # mindtorch's __init__: dim None -> -1, torch's whole-tensor norm
        weight = getattr(module, name)
        if not isinstance(weight, nn.Parameter):
            raise TypeError(f"weight_norm: {type(module).__name__}.{name} is {type(weight).__name__}, "
                            f"not a Parameter; weight norm applies to a module's Parameter")
        w = weight.detach()
        g = norm_except_dim(w, fn.dim).detach()  # leaves: see the module docstring
        del module._parameters[name]
        module.register_parameter(name + "_g", nn.Parameter(g, weight.requires_grad))
        module.register_parameter(name + "_v", nn.Parameter(w, weight.requires_grad))
        # A plain attribute (not in _parameters): torch's layout, no extra "weight" entry.
        object.__setattr__(module, name, fn.compute_weight(module))
        module.register_forward_pre_hook(fn)
        return fn

    def remove(self, module: nn.Module) -> None:
        weight = self.compute_weight(module).detach()
        vars(module).pop(self.name, None)
        del module._parameters[self.name + "_g"]
        del module._parameters[self.name + "_v"]
        module.register_parameter(self.name, nn.Parameter(weight))

    def __call__(self, module: nn.Module, inputs: Any) -> None:
        object.__setattr__(module, self.name, self.compute_weight(module))


def remove_weight_norm(module: nn.Module, name: str = "weight") -> nn.Module:
    """``nn.utils.remove_weight_norm``: removes this module's hook or one mindtorch made before
    ``install()`` (mindtorch's own looks only for the class currently bound as ``WeightNorm``)."""
    for key, hook in list(module._forward_pre_hooks.items()):
        if isinstance(hook, MINDTORCH_WEIGHT_NORM) and hook.name == name:
            hook.remove(module)
            del module._forward_pre_hooks[key]
            return module
    raise ValueError(f"weight_norm of '{name}' not found in {type(module).__name__}")
