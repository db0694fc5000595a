"""One mechanism: replace a Parameter of any Cell by a tensor computed from new Parameters.

Why a class swap: MindSpore layers read their weight as ``self.weight`` inside
``construct``. Assigning a computed value into that Parameter (``P.Assign``, ``set_data``)
cuts the computation graph, so the new Parameters get zero gradients. Instead, the cell's
class is swapped for a cached subclass in which ``weight`` is a read-only ``property``
that computes the weight from the new Parameters. The property body is ordinary Python
that MindSpore parses into the graph in GRAPH_MODE and runs eagerly in PyNative, so both
modes share one code path and gradients flow to the new Parameters.

A parametrization may also carry state: non-trainable Parameters (``requires_grad=False``,
saved in checkpoints, skipped by optimizers) that its compose function reads and updates in
place with ``ops.assign``, also inside compiled graphs. Such a compose function also gets the
cell's training flag, a constant while a graph is compiled: so a change of that flag on a
stateful cell drops the compiled graphs (``ms.jit`` functions do not key their graphs on it).

Layers that read a Parameter through a tuple attribute (nn.LSTM and nn.GRU read
``w_ih_list``/``w_hh_list``) get a property for that tuple as well, rebuilt from the
cell's attributes so the computed weight stands in its slot.

A compiled graph does not notice a changed cell (MindSpore caches graphs per top cell),
so every change here drops the cached graphs: the next call compiles afresh.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import mindspore as ms
from mindspore import Parameter, ParameterTuple, Tensor, nn

from ._compat import AMP_FLAG_HOOK, amp_type_name, drop_compiled_graphs, own_params

__all__ = [
    "Parametrization",
    "register_parametrization",
    "remove_parametrization",
    "parametrizations",
    "is_parametrized",
    "original_class",
]


class Parametrization:
    """How a Parameter is split into new Parameters and composed back.

    Subclasses are frozen dataclasses (hashable and picklable: the cached classes are keyed by
    them). They define:

    - ``suffixes``: names of the new Parameters, stored as ``<name>_<suffix>``;
    - ``state_suffixes`` (optional): names of non-trainable state Parameters, stored the same
      way after the trainable ones (``requires_grad=False``; saved in checkpoints);
    - ``split(weight) -> tuple[Tensor, ...]``: their initial values, one per suffix (trainable,
      then state), such that ``compose`` gives back ``weight``;
    - ``compose_fn() -> callable``: a function of the new Parameters (in suffix order) that
      returns the weight. It runs inside traced graphs, so it must be graph-compilable. With
      state, it takes the trainable Parameters, the state Parameters and last the cell's
      training flag (a Python bool), and may update the state with ``ops.assign``; with the
      flag False it must leave the state alone (removal folds the weight that way).

    Error messages name the parametrization by its ``label`` attribute ("weight norm" when
    it has none) and point to ``remove_<label>``.
    """

    suffixes: Tuple[str, ...] = ()
    state_suffixes: Tuple[str, ...] = ()

    def split(self, weight: Tensor) -> Tuple[Tensor, ...]:  # pragma: no cover - interface
        raise NotImplementedError

    def compose_fn(self) -> Callable[..., Tensor]:  # pragma: no cover - interface
        raise NotImplementedError

    def check(self, cell: nn.Cell, name: str, weight: Parameter) -> None:
        """Raise before anything changes if ``weight`` cannot be parametrized."""


@dataclass(frozen=True)
class _Entry:
    """One parametrized Parameter of a class: its attribute name, how, and tuple aliases."""
    name: str
    parametrization: Parametrization
    # ((tuple_attribute, (attr_of_slot0, attr_of_slot1, ...)), ...): tuple attributes that
    # hold this Parameter, each rebuilt from the cell's attributes of its slots.
    aliases: Tuple[Tuple[str, Tuple[str, ...]], ...] = ()

    def param_names(self) -> Tuple[str, ...]:
        """The new Parameters' attribute names: trainable ones, then state."""
        p = self.parametrization
        return tuple(f"{self.name}_{s}" for s in tuple(p.suffixes) + tuple(p.state_suffixes))

    def trainable_names(self) -> Tuple[str, ...]:
        return self.param_names()[:len(self.parametrization.suffixes)]

    @property
    def stateful(self) -> bool:
        return bool(self.parametrization.state_suffixes)


_CLASS_CACHE: Dict[Tuple[type, Tuple[_Entry, ...]], type] = {}


def _amp_cast(w: Tensor, dtype) -> Tensor:
    # MindSpore casts the Parameters a float16/bfloat16 cell reads (``to_float``, amp O2/O3)
    # to that type; a computed weight is no Parameter, so the cast is done here.
    if dtype is None:
        return w
    return w.astype(dtype)


def _make_getter(fn: Callable[..., Tensor], names: Tuple[str, ...],
                 training: bool = False) -> Callable[[Any], Tensor]:
    # Explicit arities: MindSpore's graph parser handles these plain forms everywhere.
    # (Default arguments in a property getter fail to compile in GRAPH_MODE; closures work.)
    if training:
        return _make_training_getter(fn, names)
    if len(names) == 1:
        (a,) = names

        def get1(self):
            return _amp_cast(fn(getattr(self, a)), self._reparam_amp_dtype)
        return get1
    if len(names) == 2:
        a, b = names

        def get2(self):
            return _amp_cast(fn(getattr(self, a), getattr(self, b)), self._reparam_amp_dtype)
        return get2
    if len(names) == 3:
        a, b, c = names

        def get3(self):
            return _amp_cast(fn(getattr(self, a), getattr(self, b), getattr(self, c)), self._reparam_amp_dtype)
        return get3
    raise NotImplementedError("parametrizations with more than 3 parameters are not supported")


def _make_training_getter(fn: Callable[..., Tensor], names: Tuple[str, ...]) -> Callable[[Any], Tensor]:
    # A stateful compose also gets ``self.training``: a constant while a graph is compiled.
    if len(names) == 2:
        a, b = names

        def get2t(self):
            return _amp_cast(fn(getattr(self, a), getattr(self, b), self.training), self._reparam_amp_dtype)
        return get2t
    if len(names) == 3:
        a, b, c = names

        def get3t(self):
            return _amp_cast(fn(getattr(self, a), getattr(self, b), getattr(self, c), self.training),
                             self._reparam_amp_dtype)
        return get3t
    if len(names) == 4:
        a, b, c, d = names

        def get4t(self):
            return _amp_cast(fn(getattr(self, a), getattr(self, b), getattr(self, c), getattr(self, d),
                                self.training), self._reparam_amp_dtype)
        return get4t
    raise NotImplementedError("stateful parametrizations need 2 to 4 Parameters in all")


def _make_tuple_getter(slots: Tuple[str, ...], getters: Dict[str, Callable]) -> Callable[[Any], tuple]:
    """Getter for a tuple attribute whose slots are read from the cell by name.

    Computed slots call their getter directly: in GRAPH_MODE, ``getattr(self, name)`` on a
    property name is evaluated at compile time to a constant, which would cut the gradient.
    For the same reason the tuple is built by recursion on closures, not by a loop.
    """
    if len(slots) == 1:
        (a,) = slots
        if a in getters:
            compute = getters[a]

            def get_computed(self):
                return (compute(self),)
            return get_computed

        def get_param(self):
            return (getattr(self, a),)
        return get_param
    head = _make_tuple_getter(slots[:1], getters)
    tail = _make_tuple_getter(slots[1:], getters)

    def get_tuple(self):
        return head(self) + tail(self)
    return get_tuple


def _read_only(attr: str, sources: Tuple[str, ...], how: str = "weight norm") -> Callable[[Any, Any], None]:
    def fail(self, value):
        raise AttributeError(
            f"{type(self).__name__} cell: '{attr}' is computed by {how} from "
            f"{', '.join(repr(s) for s in sources)}; set those instead "
            f"(e.g. cell.{sources[-1]}.set_data(...)), or remove {how} from '{attr}' first")
    return fail


def _parametrized_class(base: type, entries: Tuple[_Entry, ...]) -> type:
    key = (base, entries)
    cls = _CLASS_CACHE.get(key)
    if cls is not None:
        return cls
    namespace: Dict[str, Any] = {
        "_reparam_base": base,
        "_reparam_entries": entries,
        "__reduce_ex__": _reduce_ex,
        "__setattr__": _guarded_setattr,
        AMP_FLAG_HOOK: _on_amp_flags,
        "_reparam_amp_dtype": None,
        "__module__": base.__module__,
    }
    getters = {e.name: _make_getter(e.parametrization.compose_fn(), e.param_names(), e.stateful)
               for e in entries}
    if any(e.stateful for e in entries):
        namespace["add_flags"] = _add_flags_stateful
    computed = set(getters)
    for entry in entries:
        namespace[entry.name] = property(getters[entry.name], _read_only(
            entry.name, entry.trainable_names(), getattr(entry.parametrization, "label", "weight norm")))
        for attr, slots in entry.aliases:
            # Several entries may share one tuple (two weights of one ParameterTuple); the
            # getter is the same for all of them since it reads every slot by name.
            namespace[attr] = property(_make_tuple_getter(slots, getters),
                                       _read_only(attr, entry.param_names()))
            computed.add(attr)
    namespace["_reparam_computed"] = frozenset(computed)
    # Keep the layer's own class name, so reprs, logs and error messages stay familiar.
    cls = type(base.__name__, (base,), namespace)
    cls.__qualname__ = base.__qualname__
    _CLASS_CACHE[key] = cls
    return cls


def _guarded_setattr(self, attr, value):
    if attr in type(self)._reparam_computed:
        # Cell.__setattr__ would store a Parameter in _params, where the property hides it.
        getattr(type(self), attr).fset(self, value)
    type(self)._reparam_base.__setattr__(self, attr, value)


_AMP_DTYPES = {"FP16": ms.float16, "BF16": ms.bfloat16, "FP32": ms.float32}


def _amp_dtype_of(cell: nn.Cell):
    """The float type ``to_float``/amp set on ``cell`` (None when it has none)."""
    return _AMP_DTYPES.get(amp_type_name(cell))


def _on_amp_flags(self, **flags):
    getattr(type(self)._reparam_base, AMP_FLAG_HOOK)(self, **flags)
    object.__setattr__(self, "_reparam_amp_dtype", _amp_dtype_of(self))


def _add_flags_stateful(self, **flags):
    # The training flag is compiled into graphs as a constant; a cell-keyed graph is also
    # keyed on the top cell's phase, an ``ms.jit`` function's graph is not: a changed flag
    # would silently run a stale graph (updating the state in eval mode, or not in training).
    before = self.__dict__.get("training")
    type(self)._reparam_base.add_flags(self, **flags)
    if "training" in flags and bool(flags["training"]) != bool(before):
        invalidate_compiled_graphs()
    return self


def _rebuild(base: type, entries: Tuple[_Entry, ...]):
    cls = _parametrized_class(base, entries)
    return cls.__new__(cls)


def _reduce_ex(self, protocol):
    # The generated class cannot be found by import, so pickle and deepcopy go through a
    # module-level function that regenerates (or fetches) it.
    cls = type(self)
    return _rebuild, (cls._reparam_base, cls._reparam_entries), self.__getstate__()


def original_class(cell: nn.Cell) -> type:
    """The cell's class before any parametrization (its own class when there is none)."""
    return getattr(type(cell), "_reparam_base", type(cell))


def _entries(cell: nn.Cell) -> Tuple[_Entry, ...]:
    return getattr(type(cell), "_reparam_entries", ())


def parametrizations(cell: nn.Cell) -> Dict[str, Parametrization]:
    """The parametrized attribute names of ``cell`` (not of its children) and how."""
    return {e.name: e.parametrization for e in _entries(cell)}


def is_parametrized(cell: nn.Cell, name: Optional[str] = None) -> bool:
    """Whether ``cell`` has any parametrization, or one on ``name``."""
    entries = _entries(cell)
    return bool(entries) if name is None else any(e.name == name for e in entries)


def _cell_label(cell: nn.Cell) -> str:
    return f"{type(cell).__name__} cell"


def _find_aliases(cell: nn.Cell, param: Parameter) -> Tuple[Tuple[str, Tuple[str, ...]], ...]:
    """Tuple attributes (ParameterTuple) of ``cell`` that hold ``param``, with slot names."""
    by_id = {id(p): key for key, p in own_params(cell).items()}
    aliases = []
    for attr, value in list(vars(cell).items()):
        if not isinstance(value, (ParameterTuple, tuple)) or attr.startswith("_"):
            continue
        if not any(x is param for x in value):
            continue
        slots = []
        for x in value:
            if id(x) not in by_id:
                raise TypeError(
                    f"{_cell_label(cell)}: its tuple attribute '{attr}' holds '{param.name}' next to "
                    f"a value that is not one of the cell's own Parameters, so it cannot be rebuilt")
            slots.append(by_id[id(x)])
        aliases.append((attr, tuple(slots)))
    # Tuples already replaced by a property for another parametrized slot of the same tuple.
    key = next((k for k, p in own_params(cell).items() if p is param), None)
    for entry in _entries(cell):
        for attr, slots in entry.aliases:
            if key in slots and all(attr != a for a, _ in aliases):
                aliases.append((attr, slots))
    return tuple(aliases)


def _replace_params(cell: nn.Cell, old_key: str, new: Dict[str, Parameter]) -> None:
    """Put ``new`` Parameters where ``old_key`` stood in the cell's own Parameters (keeps order)."""
    params = own_params(cell)
    items = []
    for key, p in params.items():
        if key == old_key:
            items.extend(new.items())
        elif key not in new:
            items.append((key, p))
    params.clear()
    params.update(items)


def _validate(cell: nn.Cell, name: str, parametrization: Parametrization) -> Tuple[Parameter, _Entry]:
    """Every check of :func:`register_parametrization`, changing nothing; the Parameter and its entry."""
    if not isinstance(cell, nn.Cell):
        raise TypeError(f"expected a mindspore.nn.Cell, got {type(cell).__name__}")
    label = _cell_label(cell)
    if is_parametrized(cell, name):
        how = getattr(parametrizations(cell)[name], "label", "weight norm")
        raise ValueError(
            f"{label}: {how} is already applied to '{name}'; call remove_{how.replace(' ', '_')}(cell, "
            f"'{name}') first if you want to apply it again with other settings")
    params = own_params(cell)
    if name not in params:
        available = ", ".join(sorted(params)) or "none"
        raise ValueError(
            f"{label} has no Parameter '{name}' of its own (its Parameters: {available}); pass "
            f"name= one of those, or apply it to the child cell that owns the Parameter")
    weight = params[name]
    if not isinstance(weight, Parameter):
        raise TypeError(f"{label}: '{name}' is a {type(weight).__name__}, not a Parameter")
    parametrization.check(cell, name, weight)
    entry = _Entry(name, parametrization, _find_aliases(cell, weight))
    for new_name in entry.param_names():
        if new_name in params or new_name in vars(cell):
            raise ValueError(f"{label} already has an attribute '{new_name}'; cannot add it for '{name}'")
    return weight, entry


def check_registration(cell: nn.Cell, name: str, parametrization: Parametrization) -> None:
    """Raise what :func:`register_parametrization` would raise for ``cell``, changing nothing.

    Callers that change several cells check them all first, so that an error leaves none changed.

    >>> from mindspore import nn
    >>> from ms_weightnorm.weight_norm import WeightNormParametrization
    >>> layer = nn.Dense(2, 2)
    >>> check_registration(layer, "weight", WeightNormParametrization(0))
    >>> check_registration(layer, "kernel", WeightNormParametrization(0))
    Traceback (most recent call last):
    ...
    ValueError: Dense cell has no Parameter 'kernel' of its own (its Parameters: bias, weight); pass name= one of those, or apply it to the child cell that owns the Parameter
    >>> sorted(name for name, _ in layer.parameters_and_names())
    ['bias', 'weight']
    """
    _validate(cell, name, parametrization)


def register_parametrization(cell: nn.Cell, name: str, parametrization: Parametrization) -> nn.Cell:
    """Replace Parameter ``name`` of ``cell`` by ``parametrization``'s new Parameters.

    Afterwards ``cell.<name>`` is computed from ``cell.<name>_<suffix>`` on every read (inside
    graphs too), and the original Parameter is gone from the cell. Each new Parameter is named
    after the original (``body.0.weight`` gives ``body.0.weight_g``) so names stay unique in
    optimizers and checkpoints whether the cell is already attached to a parent or not.
    Validation happens first: on error the cell is unchanged.
    """
    weight, entry = _validate(cell, name, parametrization)
    values = parametrization.split(weight)
    n_trainable = len(parametrization.suffixes)
    all_suffixes = tuple(parametrization.suffixes) + tuple(parametrization.state_suffixes)
    new_params = {
        key: Parameter(value, name=f"{weight.name}_{suffix}",
                       requires_grad=weight.requires_grad and i < n_trainable)
        for i, (key, suffix, value) in enumerate(zip(entry.param_names(), all_suffixes, values))
    }
    # All checks passed and all values computed: only now change the cell.
    base = original_class(cell)
    new_cls = _parametrized_class(base, _entries(cell) + (entry,))
    _replace_params(cell, name, new_params)
    for attr, _ in entry.aliases:
        vars(cell).pop(attr, None)
    object.__setattr__(cell, "__class__", new_cls)
    object.__setattr__(cell, "_reparam_amp_dtype", _amp_dtype_of(cell))
    invalidate_compiled_graphs()
    return cell


def remove_parametrization(cell: nn.Cell, name: str) -> Parameter:
    """Fold the current value of ``cell.<name>`` into a plain Parameter again; return it."""
    entries = _entries(cell)
    entry = next((e for e in entries if e.name == name), None)
    if entry is None:
        applied = ", ".join(e.name for e in entries) or "none"
        raise ValueError(
            f"{_cell_label(cell)}: weight norm is not applied to '{name}' (applied to: {applied}); "
            f"nothing to remove")
    if entry.stateful:
        # Folding reads the weight as in eval mode: removal never advances the state.
        args = [getattr(cell, n) for n in entry.param_names()]
        value = _amp_cast(entry.parametrization.compose_fn()(*args, False), cell._reparam_amp_dtype)
    else:
        value = getattr(cell, name)
    first = getattr(cell, entry.param_names()[0])
    suffix = "_" + entry.parametrization.suffixes[0]
    param_name = first.name[: -len(suffix)] if first.name.endswith(suffix) else name
    folded = Parameter(value, name=param_name, requires_grad=first.requires_grad)

    rest = tuple(e for e in entries if e is not entry)
    base = original_class(cell)
    new_cls = _parametrized_class(base, rest) if rest else base
    old_keys = entry.param_names()
    params = own_params(cell)
    items = []
    for key, p in params.items():
        if key == old_keys[0]:
            items.append((name, folded))
        elif key not in old_keys:
            items.append((key, p))
    params.clear()
    params.update(items)
    object.__setattr__(cell, "__class__", new_cls)
    for attr, slots in entry.aliases:
        # Other entries may still compute some slots: only restore a plain tuple once no
        # remaining entry aliases this attribute.
        if not any(attr == a for e in rest for a, _ in e.aliases):
            object.__setattr__(cell, attr, ParameterTuple(getattr(cell, s) for s in slots))
    invalidate_compiled_graphs()
    return folded


def invalidate_compiled_graphs() -> None:
    """Drop MindSpore's cached graphs so that the next call compiles the changed cells.

    MindSpore keys compiled graphs by the top cell (or the ``ms.jit`` function) and never
    looks at the structure of its children again; after a class swap or a Parameter change
    a cached graph would silently compute with the old structure. Dropping the caches is
    what ``mindspore.ms_memory_recycle`` does to them, without its memory recycling.
    """
    drop_compiled_graphs()
