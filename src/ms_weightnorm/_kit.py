"""PyTorch's ``torch.nn.utils.parametrize`` contract on this library's class-swap mechanism.

A parametrization is any ``nn.Cell`` whose ``construct(X)`` returns the new tensor (and that
may define ``right_inverse(Y)``). After registration the cell holds a child cell
``parametrizations`` whose child ``<tensor_name>`` (a :class:`ParametrizationList`) holds the
originals (``original`` or ``original0``..``original{N-1}``) and the chain of parametrization
cells as children ``0``, ``1``, ... The cell's class is swapped (see
:mod:`ms_weightnorm.parametrize`) for one whose ``<tensor_name>`` is a property calling that
list: MindSpore compiles the call into the traced graph in GRAPH_MODE and runs it eagerly in
PyNative, so gradients reach the originals and the chain's own Parameters in both modes.

Parameter names follow the cells' paths, so MindSpore checkpoints use PyTorch's keys:
``parametrizations.weight.original`` and ``parametrizations.weight.0.<param>``.

This module is private: the public names live in :mod:`ms_weightnorm.parametrize`.
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import mindspore as ms
from mindspore import Parameter, Tensor, nn

from . import parametrize as _P
from ._compat import own_params

__all__ = [
    "ParametrizationList",
    "register_cell_parametrization",
    "remove_parametrizations",
    "type_before_parametrizations",
    "cached",
    "transfer_parametrizations_and_params",
]

CONTAINER = "parametrizations"


@dataclass(frozen=True)
class CellChain(_P.Parametrization):
    """Marks an attribute computed by ``cell.parametrizations.<name>`` (a cell chain).

    It owns no Parameters of the cell itself (they live in the chain), so it has no suffixes;
    the shared class-swap mechanism asks it for the getter instead.
    """

    tensor_name: str = "weight"
    label = "parametrization"
    kit = True

    def make_getter(self):
        name = self.tensor_name

        def get_chain(self):
            # In GRAPH_MODE this body is parsed into the graph: the sub-cell call is inlined.
            return _P._amp_cast(getattr(self.parametrizations, name)(), self._reparam_amp_dtype)
        return get_chain


def is_kit_entry(entry) -> bool:
    return bool(getattr(entry.parametrization, "kit", False))


class ParametrizationDict(nn.Cell):
    """``cell.parametrizations``: one :class:`ParametrizationList` per parametrized tensor name."""

    def __contains__(self, name: str) -> bool:
        return name in self._cells

    def __getitem__(self, name: str) -> "ParametrizationList":
        return self._cells[name]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._cells))

    def __len__(self) -> int:
        return len(self._cells)

    def keys(self):
        return list(self._cells)

    def construct(self):  # pragma: no cover - never called, the lists are
        raise RuntimeError("cell.parametrizations is a container; call cell.parametrizations.<name>() instead")


class ParametrizationList(nn.Cell):
    """The originals of one tensor and the chain of parametrization cells applied to them.

    ``construct()`` returns the parametrized tensor: ``chain[0](original)`` (or
    ``chain[0](original0, original1, ...)``), then each further cell on the result, in
    registration order. ``len()`` counts the chain and ``[i]`` indexes it.
    """

    def __init__(self, modules: Sequence[nn.Cell], originals: Sequence[Parameter], is_tensor: bool,
                 unsafe: bool = False):
        super().__init__()
        if not modules:
            raise ValueError("ParametrizationList needs at least one parametrization cell")
        self.unsafe = unsafe
        self.is_tensor = is_tensor
        if is_tensor:
            self.original = originals[0]
            self._original_names = ("original",)
        else:
            for i, p in enumerate(originals):
                setattr(self, f"original{i}", p)
            self._original_names = tuple(f"original{i}" for i in range(len(originals)))
        for m in modules:
            self.append(m)

    @property
    def ntensors(self) -> int:
        return len(self._original_names)

    def append(self, module: nn.Cell) -> None:
        self.insert_child_to_cell(str(len(self._chain_cells())), module)
        # A plain list of the chain, read by construct (as nn.SequentialCell does): the graph
        # parser unrolls the loop over it.
        object.__setattr__(self, "chain", self._chain_cells())

    def _chain_cells(self) -> List[nn.Cell]:
        return [c for k, c in self._cells.items() if k.isdigit()]

    def __len__(self) -> int:
        return len(self._chain_cells())

    def __getitem__(self, i: int) -> nn.Cell:
        return self._chain_cells()[i]

    def __iter__(self) -> Iterator[nn.Cell]:
        return iter(self._chain_cells())

    def originals(self) -> Tuple[Parameter, ...]:
        return tuple(own_params(self)[n] for n in self._original_names)

    def construct(self):
        if self.is_tensor:
            # An attribute read, not getattr: a nested parametrization makes ``original`` a
            # property, which getattr with a name would fold into a constant in GRAPH_MODE.
            x = self.chain[0](self.original)
        else:
            xs = ()
            for n in self._original_names:
                xs = xs + (getattr(self, n),)
            x = self.chain[0](*xs)
        for i in range(1, len(self.chain)):
            x = self.chain[i](x)
        return x

    def right_inverse(self, value: Tensor, where: str) -> None:
        """Set the originals so that ``self()`` gives ``value``: right_inverses, last first."""
        for i in reversed(range(len(self))):
            module = self[i]
            if not hasattr(module, "right_inverse"):
                raise RuntimeError(
                    f"{where}: parametrization {i} ({type(module).__name__}) of the chain does not implement "
                    f"right_inverse, so the value cannot be mapped back to the originals. Define "
                    f"right_inverse(Y) on it, or set the originals (cell.parametrizations.<name>.original) "
                    f"directly")
            value = module.right_inverse(value)
        originals = self.originals()
        if self.is_tensor:
            if not isinstance(value, Tensor):
                raise ValueError(f"{where}: right_inverse should return a Tensor, got {type(value).__name__}")
            values = (value,)
        else:
            if not isinstance(value, (tuple, list)):
                raise ValueError(f"{where}: right_inverse must return a sequence of tensors, got "
                                 f"{type(value).__name__}")
            if len(value) != len(originals):
                raise ValueError(f"{where}: right_inverse must return a sequence of {len(originals)} tensors, "
                                 f"got {len(value)}")
            values = tuple(value)
        for i, (v, o) in enumerate(zip(values, originals)):
            if not isinstance(v, Tensor):
                raise ValueError(f"{where}: right_inverse must return tensors; element {i} is a "
                                 f"{type(v).__name__}")
            if v.dtype != o.dtype:
                raise ValueError(f"{where}: the tensor returned by right_inverse for '{self._original_names[i]}' "
                                 f"has dtype {v.dtype} while the original has dtype {o.dtype}")
            if tuple(v.shape) != tuple(o.shape):
                raise ValueError(f"{where}: the tensor returned by right_inverse for '{self._original_names[i]}' "
                                 f"has shape {tuple(v.shape)} while the original has shape {tuple(o.shape)}")
        # Everything checked: only now change the Parameters (nothing half-set on error).
        for v, o in zip(values, originals):
            o.set_data(v.copy())


# --- registration ---------------------------------------------------------------------------


def _eager(fn, *args):
    """Run a parametrization on concrete values (registration checks, removal, assignment).

    Outside a graph: a Cell called in GRAPH_MODE would be compiled and cached for one call.
    """
    if isinstance(fn, nn.Cell):
        return fn.construct(*args)
    return fn(*args)


def _chain_value(plist: ParametrizationList) -> Tensor:
    """The list's output computed eagerly (PyNative semantics in either mode)."""
    if plist.is_tensor:
        x = _eager(plist[0], plist.original)
    else:
        x = _eager(plist[0], *plist.originals())
    for m in list(plist)[1:]:
        x = _eager(m, x)
    return x


def _path_prefix(param: Parameter, key: str) -> str:
    """``'body.0.'`` for a Parameter named ``body.0.weight`` held as ``weight`` ('' if unknown)."""
    name = param.name
    if name.endswith("." + key):
        return name[: -len(key)]
    return ""


def _rename_chain_params(prefix: str, tensor_name: str, index: int, module: nn.Cell) -> None:
    # Unique names for MindSpore's optimizers and checkpoints, matching torch's state_dict keys.
    for local, p in module.parameters_and_names():
        p.name = f"{prefix}{CONTAINER}.{tensor_name}.{index}.{local}"


def _where(cell: nn.Cell, name: str) -> str:
    return f"{_P.cell_label(cell)}, tensor '{name}'"


def _check_output(Z: Any, shape, dtype, where: str, what: str) -> None:
    if not isinstance(Z, Tensor):
        raise ValueError(f"{where}: a parametrization must return a tensor, got {type(Z).__name__}")
    if Z.dtype != dtype:
        raise ValueError(
            f"{where}: registering a parametrization may not change the dtype of the tensor, unless the "
            f"unsafe flag is set (unsafe=True). {what} dtype: {dtype}; parametrized dtype: {Z.dtype}")
    if tuple(Z.shape) != tuple(shape):
        raise ValueError(
            f"{where}: registering a parametrization may not change the shape of the tensor, unless the "
            f"unsafe flag is set (unsafe=True). {what} shape: {tuple(shape)}; parametrized shape: "
            f"{tuple(Z.shape)}")


def register_cell_parametrization(cell: nn.Cell, tensor_name: str, parametrization: nn.Cell, *,
                                  unsafe: bool = False) -> nn.Cell:
    """See :func:`ms_weightnorm.parametrize.register_parametrization` (the Cell form)."""
    if not isinstance(cell, nn.Cell):
        raise _P._not_a_cell(cell, tensor_name)
    if not isinstance(parametrization, nn.Cell):
        raise TypeError(f"{_where(cell, tensor_name)}: a parametrization must be a mindspore.nn.Cell whose "
                        f"construct(X) returns the new tensor, got {type(parametrization).__name__}")
    where = _where(cell, tensor_name)
    parametrization.set_train(cell.training)
    entries = _P._entries(cell)
    entry = next((e for e in entries if e.name == tensor_name), None)
    if entry is not None:
        if not is_kit_entry(entry):
            kind, remover = _P._kind(entry.parametrization)
            raise ValueError(
                f"{where}: {kind} is applied to it with this library's dataclass mechanism, which does not "
                f"chain with Cell parametrizations; call {remover}(cell, '{tensor_name}') first, or register "
                f"the Cell parametrization on another tensor")
        _append(cell, tensor_name, parametrization, unsafe, where)
    else:
        _first(cell, tensor_name, parametrization, unsafe, where)
    _P.invalidate_compiled_graphs()
    return cell


def _append(cell, tensor_name, parametrization, unsafe, where) -> None:
    plist = cell.parametrizations[tensor_name]
    if not unsafe:
        Y = _chain_value(cell.parametrizations[tensor_name])
        X = _eager(parametrization, Y)
        _check_output(X, Y.shape, Y.dtype, where, f"cell.{tensor_name}")
        if hasattr(parametrization, "right_inverse"):
            try:
                Z = parametrization.right_inverse(X)
            except NotImplementedError:
                Z = None
            if Z is not None:
                if not isinstance(Z, Tensor):
                    raise ValueError(f"{where}: parametrization.right_inverse must return a tensor, got "
                                     f"{type(Z).__name__}")
                if Z.dtype != Y.dtype:
                    raise ValueError(f"{where}: the tensor returned by parametrization.right_inverse must have "
                                     f"the same dtype as cell.{tensor_name} ({Y.dtype}), unless unsafe=True; "
                                     f"it has {Z.dtype}")
                if tuple(Z.shape) != tuple(Y.shape):
                    raise ValueError(f"{where}: the tensor returned by parametrization.right_inverse must have "
                                     f"the same shape as cell.{tensor_name} ({tuple(Y.shape)}), unless "
                                     f"unsafe=True; it has {tuple(Z.shape)}")
    first = plist.originals()[0].name
    marker = f"{CONTAINER}.{tensor_name}."
    prefix = first[: first.find(marker)] if marker in first else ""
    index = len(plist)
    plist.append(parametrization)
    plist.unsafe = plist.unsafe or unsafe
    _rename_chain_params(prefix, tensor_name, index, parametrization)


def _first(cell, tensor_name, parametrization, unsafe, where) -> None:
    params = own_params(cell)
    if tensor_name not in params:
        available = ", ".join(sorted(params)) or "none"
        raise ValueError(
            f"{_P.cell_label(cell)} does not have a parameter or a parametrized tensor named '{tensor_name}' "
            f"(its Parameters: {available}); pass one of those, or the child cell that owns it")
    original = params[tensor_name]
    if not isinstance(original, Parameter):
        raise TypeError(f"{where}: it is a {type(original).__name__}, not a Parameter; only Parameters can be "
                        f"parametrized")
    if getattr(original, "has_init", False):  # built under no_init_parameters: materialize
        original.init_data()
    shape, dtype = tuple(original.shape), original.dtype
    new: Any = original
    if hasattr(parametrization, "right_inverse"):
        try:
            new = parametrization.right_inverse(original)
        except NotImplementedError:
            new = original
    if not isinstance(new, (Tensor, tuple, list)):
        raise ValueError(f"{where}: right_inverse must return a Tensor or a Sequence of tensors (list, "
                         f"tuple...), got {type(new).__name__}")
    is_tensor = isinstance(new, Tensor)
    prefix = _path_prefix(original, tensor_name)
    base = f"{prefix}{CONTAINER}.{tensor_name}."
    if is_tensor:
        if new.dtype != dtype:
            raise ValueError(f"{where}: when right_inverse outputs one tensor, it may not change the dtype "
                             f"(original dtype {dtype}, right_inverse(original) dtype {new.dtype})")
        originals = [original]
        values = [new]
    else:
        values = []
        for i, x in enumerate(new):
            if not isinstance(x, Tensor):
                raise ValueError(f"{where}: right_inverse must return a Tensor or a Sequence of tensors; element "
                                 f"{i} of the sequence has type {type(x).__name__}")
            values.append(x)
        originals = [Parameter(x.copy(), name=f"{base}original{i}", requires_grad=original.requires_grad)
                     for i, x in enumerate(values)]
    if is_tensor:
        # The original Parameter object itself stays the original (as torch keeps it): its
        # value becomes right_inverse(original). Set it only after every check passed.
        probe = Parameter(new.copy() if new is not original else original.copy(), name=f"{base}original",
                          requires_grad=original.requires_grad)
        plist = ParametrizationList([parametrization], [probe], True, unsafe)
    else:
        plist = ParametrizationList([parametrization], originals, False, unsafe)
    if not unsafe:
        try:
            Z = _chain_value(plist)
        except TypeError as e:
            raise TypeError(f"{where}: calling the parametrization on the originals from right_inverse failed "
                            f"({e}); construct must take as many positional arguments as right_inverse returns "
                            f"tensors") from e
        _check_output(Z, shape, dtype, where, "unparametrized")
    # A tie is refused (the other holder would go on reading the bare original). An optimizer
    # that holds the weight keeps training it when it stays the original (one tensor); with
    # several originals it would train a dropped Parameter, so it is refused.
    _P.check_not_shared(cell, tensor_name, refuse_trainers=not is_tensor)
    # --- every check passed: change the cell ---
    if is_tensor:
        if new is not original:
            original.set_data(new.copy() if isinstance(new, Parameter) else new)
        original.name = f"{base}original"
        del own_params(plist)["original"]
        plist.original = original
    _rename_chain_params(prefix, tensor_name, 0, parametrization)
    aliases = _P._find_aliases(cell, original) if is_tensor else _P._find_aliases(cell, own_params(cell)[tensor_name])
    _install(cell, tensor_name, plist, aliases)


def _install(cell: nn.Cell, tensor_name: str, plist: ParametrizationList, aliases=()) -> None:
    """Put ``plist`` in ``cell.parametrizations``, drop the Parameter, swap the class."""
    entry = _P._Entry(tensor_name, CellChain(tensor_name), tuple(aliases))
    container = cell._cells.get(CONTAINER)
    if container is None:
        container = ParametrizationDict()
        cell.insert_child_to_cell(CONTAINER, container)
    container.insert_child_to_cell(tensor_name, plist)
    del own_params(cell)[tensor_name]
    for attr, _ in aliases:
        vars(cell).pop(attr, None)
    new_cls = _P._parametrized_class(_P.original_class(cell), _P._entries(cell) + (entry,))
    object.__setattr__(cell, "__class__", new_cls)
    object.__setattr__(cell, "_reparam_amp_dtype", _P._amp_dtype_of(cell))


# --- assignment, removal ----------------------------------------------------------------------


def assign(cell: nn.Cell, name: str, value: Any) -> None:
    """``cell.<name> = value``: the originals get the chain's right_inverses of value."""
    where = f"{_where(cell, name)}, setting it"
    value = _P._concrete(value, where)
    plist = cell.parametrizations[name]
    plist.right_inverse(value, where)
    # set_data is not seen by graphs compiled under ms.jit (they captured the old data).
    _P.invalidate_compiled_graphs()


def remove_parametrizations(cell: nn.Cell, tensor_name: str, leave_parametrized: bool = True) -> nn.Cell:
    """Remove the parametrizations on ``cell.<tensor_name>``; ``cell.<tensor_name>`` is a Parameter again.

    With ``leave_parametrized=True`` it holds the current parametrized value; with ``False`` it
    is the original (only possible with one original: a ``ValueError`` otherwise). With one
    original the Parameter object is kept (same object, its name restored), so optimizers built
    on it keep training it. Works on dataclass parametrizations (weight norm, spectral norm) as
    well: they are folded (``leave_parametrized=False`` is refused for them).

    >>> from mindspore import nn
    >>> from ms_weightnorm import parametrize
    >>> class Double(nn.Cell):
    ...     def construct(self, x):
    ...         return 2 * x
    >>> layer = parametrize.register_parametrization(nn.Dense(2, 2), "weight", Double())
    >>> w = layer.weight.asnumpy()
    >>> layer = parametrize.remove_parametrizations(layer, "weight")
    >>> bool((layer.weight.asnumpy() == w).all()), parametrize.is_parametrized(layer)
    (True, False)
    """
    if not isinstance(cell, nn.Cell):
        raise _P._not_a_cell(cell, tensor_name)
    entry = next((e for e in _P._entries(cell) if e.name == tensor_name), None)
    if entry is None:
        applied = ", ".join(e.name for e in _P._entries(cell)) or "none"
        raise ValueError(f"{_P.cell_label(cell)} does not have a parametrization on '{tensor_name}' "
                         f"(parametrized: {applied}); pass one of those, or the cell that has it")
    if not is_kit_entry(entry):
        if not leave_parametrized:
            raise ValueError(f"{_where(cell, tensor_name)}: {_P._kind(entry.parametrization)[0]} keeps no single "
                             f"original, so it can only be removed with leave_parametrized=True")
        _P.remove_parametrization(cell, tensor_name)
        return cell
    plist = cell.parametrizations[tensor_name]
    where = _where(cell, tensor_name)
    if plist.is_tensor:
        original = plist.original
        if leave_parametrized:
            with _eval_mode(plist):
                value = _chain_value(plist)
            if value.dtype != original.dtype or tuple(value.shape) != tuple(original.shape):
                # A parametrization with unsafe=True changed them: a new Parameter holds the value.
                original = Parameter(value, name=original.name, requires_grad=original.requires_grad)
            else:
                original.set_data(value)
    else:
        if not leave_parametrized:
            raise ValueError(f"{where}: cannot leave unparametrized (leave_parametrized=False) a tensor that is "
                             f"parametrized in terms of a sequence of tensors ({', '.join(plist._original_names)})")
        with _eval_mode(plist):
            value = _chain_value(plist)
        first = plist.originals()[0]
        original = Parameter(value, name=first.name, requires_grad=first.requires_grad)
    marker = f"{CONTAINER}.{tensor_name}."
    pos = original.name.find(marker)
    original.name = (original.name[:pos] if pos >= 0 else "") + tensor_name
    _detach(cell, entry)
    params = own_params(cell)
    params[tensor_name] = original
    for attr, slots in entry.aliases:
        if not any(attr == a for e in _P._entries(cell) for a, _ in e.aliases):
            object.__setattr__(cell, attr, ms.ParameterTuple(getattr(cell, s) for s in slots))
    _P.invalidate_compiled_graphs()
    return cell


@contextlib.contextmanager
def _eval_mode(module: nn.Cell):
    # Removal reads the value as torch does (the current state, no further update of stateful
    # parametrizations such as power iterations that run in training mode only).
    was = module.training
    module.set_train(False)
    try:
        yield
    finally:
        module.set_train(was)


def _detach(cell: nn.Cell, entry) -> None:
    """Drop ``entry``'s list and property; restore the class when nothing is parametrized."""
    container = cell._cells[CONTAINER]
    del container._cells[entry.name]
    rest = tuple(e for e in _P._entries(cell) if e is not entry)
    base = _P.original_class(cell)
    new_cls = _P._parametrized_class(base, rest) if rest else base
    object.__setattr__(cell, "__class__", new_cls)
    if not any(is_kit_entry(e) for e in rest):
        del cell._cells[CONTAINER]


def type_before_parametrizations(cell: nn.Cell) -> type:
    """The cell's class before any parametrization (its class when it has none).

    >>> from mindspore import nn
    >>> from ms_weightnorm import weight_norm, parametrize
    >>> parametrize.type_before_parametrizations(weight_norm(nn.Dense(2, 2))) is nn.Dense
    True
    """
    return _P.original_class(cell)


# --- cached() ---------------------------------------------------------------------------------

_CACHE: Optional[Dict[Tuple[int, str], Tensor]] = None
_CACHE_DEPTH = 0


@contextlib.contextmanager
def cached():
    """Inside this context each parametrized tensor is computed once, on its first read.

    Useful in PyNative when a tensor is read several times per step (a recurrent layer's
    weight in a loop). In GRAPH_MODE the graph compiler already merges identical reads
    (common subexpression elimination), so reads inside a compiled graph are not cached here.

    >>> from mindspore import nn
    >>> from ms_weightnorm import weight_norm, parametrize
    >>> layer = weight_norm(nn.Dense(2, 2))
    >>> with parametrize.cached():
    ...     layer.weight is layer.weight
    True
    """
    global _CACHE, _CACHE_DEPTH
    _CACHE_DEPTH += 1
    if _CACHE is None:
        _CACHE = {}
    try:
        yield
    finally:
        _CACHE_DEPTH -= 1
        if _CACHE_DEPTH == 0:
            _CACHE = None


def cache_lookup(obj: Any, name: str, compute):
    """The cached value of ``obj.<name>`` inside :func:`cached`, else ``compute()``."""
    if _CACHE is None:
        return compute()
    key = (id(obj), name)
    hit = _CACHE.get(key)
    if hit is None or hit[0] is not obj:
        value = compute()
        _CACHE[key] = (obj, value)
        return value
    return hit[1]


def invalidate_cache() -> None:
    if _CACHE is not None:
        _CACHE.clear()


# --- transfer ---------------------------------------------------------------------------------


def transfer_parametrizations_and_params(from_cell: nn.Cell, to_cell: nn.Cell,
                                         tensor_name: Optional[str] = None) -> nn.Cell:
    """Give ``to_cell`` the Cell parametrizations of ``from_cell`` and their originals' values.

    Every parametrized tensor of ``from_cell`` (or only ``tensor_name``) is parametrized the same
    way on ``to_cell``, which gets a Parameter of that name first if it has none. Unlike torch,
    which shares the parametrization modules and the originals' storage between the two, the
    chain cells are deep copies and the originals are copies of the values: the two cells train
    independently, and each Parameter keeps one unique name (as MindSpore's optimizers need).
    Does nothing when ``from_cell`` has no Cell parametrization.

    >>> import numpy as np
    >>> from mindspore import nn
    >>> from ms_weightnorm import parametrize
    >>> class Double(nn.Cell):
    ...     def construct(self, x):
    ...         return 2 * x
    >>> a = parametrize.register_parametrization(nn.Dense(2, 2), "weight", Double())
    >>> b = parametrize.transfer_parametrizations_and_params(a, nn.Dense(2, 2))
    >>> bool(np.allclose(a.weight.asnumpy(), b.weight.asnumpy())), len(b.parametrizations.weight)
    (True, 1)
    """
    for c, what in ((from_cell, "from_cell"), (to_cell, "to_cell")):
        if not isinstance(c, nn.Cell):
            raise TypeError(f"transfer_parametrizations_and_params: {what} must be a mindspore.nn.Cell, got "
                            f"{type(c).__name__}")
    kit_names = [e.name for e in _P._entries(from_cell) if is_kit_entry(e)]
    if not kit_names:
        return to_cell
    names = kit_names if tensor_name is None else [tensor_name]
    for name in names:
        if name not in kit_names:
            raise ValueError(f"{_P.cell_label(from_cell)} has no Cell parametrization on '{name}' "
                             f"(it has: {', '.join(kit_names)})")
    for name in names:
        src = from_cell.parametrizations[name]
        if _P.is_parametrized(to_cell, name):
            raise ValueError(f"{_where(to_cell, name)}: it is parametrized already; remove its "
                             f"parametrizations first (remove_parametrizations(to_cell, '{name}'))")
        if name not in own_params(to_cell):
            value = _chain_value(src)
            setattr(to_cell, name, Parameter(value.copy(), name=name))
        target = own_params(to_cell)[name]
        shape = tuple(getattr(from_cell, name).shape)
        if tuple(target.shape) != shape:
            raise ValueError(f"{_where(to_cell, name)}: it has shape {tuple(target.shape)}, the transferred "
                             f"tensor has shape {shape}; nothing was changed")
    for name in names:
        src = from_cell.parametrizations[name]
        target = own_params(to_cell)[name]
        chain = [copy.deepcopy(m) for m in src]
        prefix = _path_prefix(target, name)
        base = f"{prefix}{CONTAINER}.{name}."
        if src.is_tensor:
            target.set_data(src.original.copy())
            originals = [target]
        else:
            originals = [Parameter(o.copy(), name=f"{base}original{i}", requires_grad=o.requires_grad)
                         for i, o in enumerate(src.originals())]
        plist = ParametrizationList(chain, originals, src.is_tensor, src.unsafe)
        if src.is_tensor:
            target.name = f"{base}original"
        for i, m in enumerate(chain):
            _rename_chain_params(prefix, name, i, m)
        _install(to_cell, name, plist)
    _P.invalidate_compiled_graphs()
    return to_cell
