"""One mechanism: replace a Parameter of any Cell by a tensor computed from new Parameters.

Why a class swap: MindSpore layers read their weight as ``self.weight`` inside
``construct``. Assigning a computed value into that Parameter (``P.Assign``, ``set_data``)
cuts the computation graph, so the new Parameters get zero gradients. Instead, the cell's
class is swapped for a cached subclass in which ``weight`` is a ``property`` that computes
the weight from the new Parameters (assigning it re-splits the value into them, outside
compiled graphs). The property body is ordinary Python
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

import gc
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import mindspore as ms
from mindspore import Parameter, ParameterTuple, Tensor, nn

from ._compat import AMP_FLAG_HOOK, amp_type_name, drop_compiled_graphs, own_params

__all__ = [
    "Parametrization",
    "ComputedTensor",
    "register_parametrization",
    "register_parametrizations",
    "remove_parametrization",
    "parametrizations",
    "parametrizations_of",
    "is_parametrized",
    "remove_parametrizations",
    "type_before_parametrizations",
    "cached",
    "transfer_parametrizations_and_params",
    "ParametrizationList",
    "original_class",
    "assign_parametrized",
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

    Assigning the computed attribute outside a compiled graph (``cell.<name> = X``,
    ``cell.<name>.set_data(X)``) sets the new Parameters to ``split(X)``: PyTorch's
    ``right_inverse``. Parametrizations without an inverse set ``no_inverse`` and refuse it.

    Error messages name the parametrization by its ``label`` ("weight norm") and point to
    ``remove_<label>`` (``remove_weight_norm``); the default label "parametrization" points
    to ``remove_parametrization``.
    """

    suffixes: Tuple[str, ...] = ()
    # What messages call this; the public function that removes it is remove_<label>.
    label: str = "parametrization"
    state_suffixes: Tuple[str, ...] = ()
    # Assigning the computed attribute (``cell.weight = X``, ``cell.weight.set_data(X)``) re-splits
    # X with ``split`` (PyTorch's ``right_inverse``). A parametrization whose ``split`` is no
    # inverse of ``compose`` sets ``no_inverse`` to the sentence that explains why; assignment
    # then raises it.
    no_inverse: Optional[str] = None

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
    raise NotImplementedError(
        f"parametrizations with more than 3 new Parameters are not supported ({', '.join(names)}); "
        f"use at most 3 suffixes")


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


def _read_only_message(cell_name: str, attr: str, sources: Tuple[str, ...], kind: str, remover: str,
                       why: str = "") -> str:
    return (f"{cell_name} cell: '{attr}' is computed by {kind} from {', '.join(repr(s) for s in sources)} on "
            f"every read{why}, so it cannot be set. Set those instead (e.g. cell.{sources[-1]}.set_data(...)), "
            f"or remove {kind} first ({remover}(cell, '{attr}')) and then set cell.{attr}")


def _read_only(entry: _Entry, attr: Optional[str] = None) -> Callable[[Any, Any], None]:
    origin = _origin(entry)
    if attr is not None:  # a tuple attribute that holds the computed weight
        origin = (attr,) + origin[1:]

    def fail(self, value):
        raise AttributeError(_read_only_message(class_name(self), *origin))
    return fail


def _assigner(entry: _Entry) -> Callable[[Any, Any], None]:
    def assign(self, value):
        assign_parametrized(self, entry.name, value)
    return assign


def _concrete(value: Any, where: str) -> Tensor:
    """``value`` as a Tensor holding data: lazy initializer tensors are materialized."""
    if isinstance(value, np.ndarray):
        return Tensor(value)
    if not isinstance(value, Tensor):
        raise TypeError(f"{where}: expected a mindspore Tensor, Parameter or numpy array, got {type(value).__name__}")
    # ``initializer(...)`` (and Parameters built under mindspore's no_init_parameters) hold no data
    # until init_data(); their shape and dtype are known, their values are not.
    if getattr(value, "init", None) is not None or getattr(value, "has_init", False):
        value = value.init_data()
    return value


def assign_parametrized(cell: nn.Cell, name: str, value: Any) -> None:
    """Set the parametrized attribute ``cell.<name>`` to ``value`` by re-splitting it.

    The new Parameters get ``split(value)`` (PyTorch's ``right_inverse``): for weight norm
    ``g = ||value||`` and ``v = value``, so reading ``cell.<name>`` afterwards gives ``value``.
    This is what ``cell.<name> = value`` and ``cell.<name>.set_data(value)`` do outside a compiled
    graph; model init code that runs after weight norm (``initializer(...)`` values included)
    then works. ``value`` must have the weight's shape; it is cast to the Parameters' dtype.
    Cells sharing the Parameters (a kept tie) see the new value too. Parametrizations without
    an inverse (spectral norm) raise ``AttributeError`` and change nothing.

    >>> import numpy as np
    >>> from mindspore import nn, Tensor
    >>> from ms_weightnorm import weight_norm
    >>> dense = weight_norm(nn.Dense(3, 2))
    >>> dense.weight = Tensor(np.array([[3, 4, 0], [0, 0, 2]], np.float32))
    >>> dense.weight_g.asnumpy().ravel().tolist(), dense.weight.asnumpy().tolist()
    ([5.0, 2.0], [[3.0, 4.0, 0.0], [0.0, 0.0, 2.0]])
    """
    entry = next((e for e in _entries(cell) if e.name == name), None)
    if entry is None:
        raise ValueError(f"{cell_label(cell)}: '{name}' is not parametrized, so it cannot be re-split; set it "
                         f"directly (cell.{name}.set_data(...))")
    p = entry.parametrization
    if _kit.is_kit_entry(entry):
        _kit.assign(cell, name, value)
        return
    if p.no_inverse:
        raise AttributeError(_read_only_message(class_name(cell), *_origin(entry), why=f" ({p.no_inverse})"))
    where = f"{cell_label(cell)}, setting '{name}'"
    value = _concrete(value, where)
    params = tuple(own_params(cell)[n] for n in entry.param_names())
    shape = tuple(getattr(cell, name).shape)
    if tuple(value.shape) != shape:
        raise ValueError(f"{where}: the value has shape {tuple(value.shape)}, the weight has shape {shape}; "
                         f"pass a value of the weight's shape (it is split into {', '.join(entry.param_names())})")
    dtype = params[0].dtype
    parts = p.split(value.astype(dtype))
    parts = [Tensor(part).astype(q.dtype) if not isinstance(part, Tensor) else part.astype(q.dtype)
             for part, q in zip(parts, params)]
    for part, q in zip(parts, params):
        if tuple(part.shape) != tuple(q.shape):
            raise ValueError(f"{where}: the split gives '{q.name}' the shape {tuple(part.shape)}, not its "
                             f"shape {tuple(q.shape)}; nothing was changed")
    # Only the trainable Parameters: state (if any) keeps its value, as in PyTorch.
    for part, q in list(zip(parts, params))[:len(p.suffixes)]:
        q.set_data(part)
    # set_data is not seen by graphs compiled under ms.jit (they captured the old data).
    invalidate_compiled_graphs()


def _kind(p: Parametrization) -> Tuple[str, str]:
    """What ``p`` is called in messages, and the public function that removes it."""
    label = getattr(p, "label", None) or "parametrization"
    kind = "a parametrization" if label == "parametrization" else label
    return kind, f"remove_{label.replace(' ', '_')}"


def _origin(entry: _Entry) -> Tuple[str, Tuple[str, ...], str, str]:
    return (entry.name, entry.trainable_names()) + _kind(entry.parametrization)


class ComputedTensor(Tensor):
    """The value of a parametrized attribute read in PyNative: a Tensor that can be set.

    ``layer.weight.set_data(X)`` re-splits X into the new Parameters (:func:`assign_parametrized`),
    as model init code expects of a weight; a parametrization without an inverse says what the
    weight is and what to set instead. It is an ordinary Tensor for every computation
    (operations on it return plain Tensors).
    """

    def _origin(self) -> Tuple[str, str, Tuple[str, ...]]:
        # Absent after a pickle round trip that dropped it: still refuse, with less detail.
        return getattr(self, "_reparam_origin",
                       ("A parametrized", "this attribute", ("its new Parameters",), "a parametrization",
                        "remove_parametrization"))

    def _reassign(self, data):
        owner = getattr(self, "_reparam_owner", None)
        if owner is None:  # a copy that lost its cell (e.g. a pickle round trip): refuse
            raise AttributeError(_read_only_message(*self._origin()))
        cell, name = owner
        assign_parametrized(cell, name, data)
        # Whoever keeps this tensor sees the new value too, as with a Parameter.
        Tensor.assign_value(self, getattr(cell, name))
        return self

    def set_data(self, data, slice_shape=False):
        """Re-split ``data`` into the parametrization's Parameters (see :func:`assign_parametrized`)."""
        return self._reassign(data)

    def assign_value(self, value):
        """Same as :meth:`set_data`."""
        return self._reassign(value)

    # PyTorch-style init code writes ``weight.data.set_data(X)`` (mindone's SEW, SEW-D) and
    # ``weight.data = X``. Tensor's own ``data`` gives a plain copy, on which set_data does not
    # exist and assignment would be lost: ``data`` is this tensor, so both re-split.
    @property
    def data(self) -> "ComputedTensor":
        """The computed value itself; its :meth:`set_data` re-splits, as ``weight.set_data`` does."""
        return self

    @data.setter
    def data(self, value) -> None:
        self._reassign(value)


class _ComputedProperty(property):
    """A computed attribute; setting it re-splits the value (:func:`assign_parametrized`).

    MindSpore's graph parser recognises ``property`` subclasses and compiles ``fget`` into the
    graph, so GRAPH_MODE and ``ms.jit`` never run ``__get__`` below. PyNative reads go through
    it and relabel the fresh result as a :class:`ComputedTensor` (a class assignment, no copy).
    """

    def __init__(self, fget, entry: _Entry):
        super().__init__(fget, _assigner(entry))
        self.origin = _origin(entry)

    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        # Inside parametrize.cached(): one computation per cell and attribute (PyNative reads).
        value = _kit.cache_lookup(obj, self.origin[0], lambda: self.fget(obj))
        if type(value) is Tensor:
            value.__class__ = ComputedTensor
            value._reparam_origin = (class_name(obj),) + self.origin
            value._reparam_owner = (obj, self.origin[0])
        return value


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
    getters = {e.name: (e.parametrization.make_getter() if hasattr(e.parametrization, "make_getter")
                        else _make_getter(e.parametrization.compose_fn(), e.param_names(), e.stateful))
               for e in entries}
    if any(e.stateful for e in entries):
        namespace["add_flags"] = _add_flags_stateful
    computed = set(getters)
    for entry in entries:
        namespace[entry.name] = _ComputedProperty(getters[entry.name], entry)
        for attr, slots in entry.aliases:
            # Several entries may share one tuple (two weights of one ParameterTuple); the
            # getter is the same for all of them since it reads every slot by name.
            namespace[attr] = property(_make_tuple_getter(slots, getters), _read_only(entry, attr))
            computed.add(attr)
    namespace["_reparam_computed"] = frozenset(computed)
    # A name of its own, not the layer's: GRAPH_MODE resolves super(Base, self) by looking the
    # name "Base" up in type(self).mro() (mindspore's parser, analyze_super), so a generated
    # class named like its base would be found first, and a construct calling
    # super(Base, self).construct would call itself until the depth limit. Messages name the
    # layer by original_class (class_name below); the cell's repr uses MindSpore's cls_name,
    # set when the cell was built.
    cls = type(f"Parametrized{base.__name__}", (base,), namespace)
    cls.__qualname__ = f"Parametrized{base.__qualname__}"
    _CLASS_CACHE[key] = cls
    return cls


def _guarded_setattr(self, attr, value):
    if attr in type(self)._reparam_computed:
        # Cell.__setattr__ would store a Parameter in _params, where the property hides it.
        getattr(type(self), attr).fset(self, value)
        return
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


def class_name(cell: nn.Cell) -> str:
    """The name of the cell's class before any parametrization: what messages call the layer."""
    return original_class(cell).__name__


def _entries(cell: nn.Cell) -> Tuple[_Entry, ...]:
    return getattr(type(cell), "_reparam_entries", ())


def parametrizations_of(cell: nn.Cell) -> Dict[str, Parametrization]:
    """The parametrized attribute names of ``cell`` (not of its children) and how.

    A Cell parametrization (PyTorch's form) shows as a ``CellChain``; its cells are in
    ``cell.parametrizations.<name>``.

    >>> from mindspore import nn
    >>> from ms_weightnorm import weight_norm
    >>> parametrizations_of(weight_norm(nn.Dense(2, 2)))
    {'weight': WeightNormParametrization(dim=0, eps=0.0)}
    """
    return {e.name: e.parametrization for e in _entries(cell)}


# The former name. Inside this module it is no clash; ``ms_weightnorm.parametrizations`` is
# now PyTorch's module name (orthogonal, ...), callable with a DeprecationWarning.
parametrizations = parametrizations_of


def is_parametrized(cell: nn.Cell, name: Optional[str] = None) -> bool:
    """Whether ``cell`` has any parametrization, or one on ``name``."""
    entries = _entries(cell)
    return bool(entries) if name is None else any(e.name == name for e in entries)


def cell_path(cell: nn.Cell) -> Optional[str]:
    """The cell's path in its network, as its Parameters' names show it (None when unknown).

    MindSpore names a Parameter after its path once the cell is attached (``body.0.weight``);
    a cell built alone has bare names and no known path.

    >>> from mindspore import nn
    >>> net = nn.SequentialCell([nn.Dense(2, 2)])
    >>> cell_path(net[0]), cell_path(nn.Dense(2, 2))
    ('0', None)
    """
    named = list(own_params(cell).items())
    container = vars(cell).get("_cells", {}).get("parametrizations")
    if container is not None:
        for plist in container._cells.values():
            named.extend((f"parametrizations.{k}", p) for k, p in own_params(plist).items())
    for key, p in named:
        name = getattr(p, "name", None)
        if isinstance(name, str) and name.endswith("." + key) and len(name) > len(key) + 1:
            return name[: -len(key) - 1]
    return None


def cell_label(cell: nn.Cell) -> str:
    """How messages name a cell: ``"Dense cell 'body.0'"`` (its path when known), by its class
    before any parametrization."""
    path = cell_path(cell)
    return f"{class_name(cell)} cell" + (f" '{path}'" if path else "")


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
                    f"{cell_label(cell)}: its tuple attribute '{attr}' holds '{param.name}' next to "
                    f"a value that is not one of the cell's own Parameters, so it cannot be rebuilt; "
                    f"parametrize another Parameter, or rebuild '{attr}' from the cell's own Parameters")
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


# --- who else holds a Parameter (ties) ---------------------------------------------------------
#
# MindSpore ties weights by assignment (``head.weight = embed.embedding_table``): both cells'
# ``_params`` hold the one Parameter object, and nothing records the tie. To find the other
# holders of a Parameter we look at every live Cell (``gc.get_objects()``; about 30 ms with
# 190k live objects). That scan is skipped when the Parameter's reference count shows that
# nothing but the known holders refers to it, the common case, which costs microseconds.

_PROBE_REFS: Optional[int] = None


def _refcounts(params: List[Parameter]) -> List[int]:
    return [sys.getrefcount(p) for p in params]


def _probe_refs() -> int:
    """References a Parameter held by exactly one dict shows through :func:`_refcounts`."""
    global _PROBE_REFS
    if _PROBE_REFS is None:
        holder = {"w": Parameter(Tensor(np.zeros(1, np.float32)), name="ms_weightnorm_refcount_probe")}
        _PROBE_REFS = _refcounts([holder["w"]])[0]
    return _PROBE_REFS


def _tuple_refs(cell: nn.Cell, param: Parameter) -> int:
    return sum(1 for v in vars(cell).values()
               if isinstance(v, tuple) and any(x is param for x in v))


def _scan_holders(ids: set) -> Dict[int, List[Tuple[nn.Cell, str]]]:
    found: Dict[int, List[Tuple[nn.Cell, str]]] = {i: [] for i in ids}
    for obj in gc.get_objects():
        if not issubclass(type(obj), nn.Cell):  # type(): weak proxies raise on isinstance
            continue
        params = vars(obj).get("_params")
        if not params:
            continue
        for key, p in params.items():
            if id(p) in found:
                found[id(p)].append((obj, key))
    return found


def _holders(pairs: Sequence[Tuple[nn.Cell, str]]) -> Dict[int, List[Tuple[nn.Cell, str]]]:
    """Every live ``(cell, key)`` whose ``_params`` holds the Parameter of each pair, by its id.

    ``pairs`` are distinct. Callers should hold no other reference to these Parameters (a
    local variable is enough to force the scan: correct, only slower).
    """
    params = [own_params(cell)[key] for cell, key in pairs]
    counts = _refcounts(params)
    known: Dict[int, List[Tuple[nn.Cell, str]]] = {}
    for pair, p in zip(pairs, params):
        known.setdefault(id(p), []).append(pair)
    base = _probe_refs()
    alone = True
    for p, n in zip(params, counts):
        holders = known[id(p)]
        expected = base + 2 * (len(holders) - 1) + sum(_tuple_refs(c, p) for c, _ in holders)
        alone = alone and n <= expected
    if alone:
        return known
    found = _scan_holders(set(known))
    if any(len(found[i]) > len(known[i]) for i in known):
        # A dead cell caught in a reference cycle still holds its Parameters until the next
        # collection: collect and look again before calling anything a tie (dropping our own
        # references to what was found first, or they would keep it alive).
        found = None
        gc.collect()
        found = _scan_holders(set(known))
    # Known pairs first, in the caller's order; then the others.
    return {i: known[i] + [h for h in found[i] if h not in known[i]] for i in known}


def _is_training_holder(cell: nn.Cell, key: str) -> bool:
    # Optimizers and training wrappers register the Parameters they update under their full
    # names ("0.weight"); they read them from their own lists, never as an attribute.
    return isinstance(cell, (nn.Optimizer, nn.TrainOneStepCell)) or not key.isidentifier()


def _describe(cell: nn.Cell, key: str, paths: Optional[Dict[int, str]] = None) -> str:
    path = (paths or {}).get(id(cell))
    if path is not None:
        return f"cell '{path or '<the network itself>'}' ({class_name(cell)}, as '{key}')"
    cls = class_name(cell)
    return f"{'an' if cls[:1] in 'AEIOU' else 'a'} {cls} cell (as '{key}')"


def _param_ref(key: str, param_name: str) -> str:
    """``'weight'``, or ``'weight' (named 'body.0.weight')`` when the Parameter's name differs.

    >>> _param_ref("weight", "weight"), _param_ref("weight", "0.weight")
    ("'weight'", "'weight' (named '0.weight')")
    """
    return f"'{key}'" if key == param_name else f"'{key}' (named '{param_name}')"


def _training_holder_error(cell: nn.Cell, name: str, weight_name: str,
                           trainers: Sequence[Tuple[nn.Cell, str]]) -> ValueError:
    who = ", ".join(sorted({class_name(c) for c, _ in trainers}))
    return ValueError(
        f"{cell_label(cell)}: its Parameter {_param_ref(name, weight_name)} is also held by {who}, an "
        f"optimizer or training cell built before the parametrization. It would keep updating the "
        f"removed Parameter, and the new ones would never train. Apply weight norm first, then build "
        f"the optimizer and training cells (or delete the old ones)")


def _base_name(weight: Parameter, members: Sequence[Tuple[Optional[str], nn.Cell, str]]) -> str:
    """Name of the new Parameters: the member the Parameter is named after, else the first one.

    A Parameter keeps the name of the cell it was created in; a tied layer (``head.weight =
    embed.embedding_table``) holds one named after another cell. When no holder matches the
    name, the new Parameters are named after the first holder's own path and attribute.
    """
    for path, _, key in members:
        if weight.name == key or weight.name.endswith("." + key):
            if path is None or not path or weight.name.endswith(f"{path}.{key}"):
                return weight.name
    path, _, key = members[0]
    return f"{path}.{key}" if path else key


@dataclass
class _Group:
    """One Parameter and the cells that hold it, all parametrized together (a tie stays a tie)."""

    members: List[Tuple[Optional[str], nn.Cell, str]]   # (path or None, cell, key)
    parametrization: Parametrization
    weight: Parameter
    entries: List[_Entry]
    values: Tuple[Tensor, ...] = ()

    def prepare(self) -> None:
        """Everything that can fail: validation and the split values. Changes nothing."""
        self.validate()
        # A Parameter built under mindspore's no_init_parameters (mindone's from_pretrained does)
        # has no data yet: initialize it, since g and v are computed from its values.
        weight = _concrete(self.weight, f"{cell_label(self.members[0][1])}, Parameter '{self.members[0][2]}'")
        self.values = tuple(self.parametrization.split(weight))

    def validate(self) -> None:
        self.entries = []
        seen = set()
        for path, cell, key in self.members:
            if id(cell) in seen:
                raise ValueError(
                    f"{cell_label(cell)} holds its Parameter {_param_ref(key, self.weight.name)} under "
                    f"more than one name; give each name its own Parameter before parametrizing it")
            seen.add(id(cell))
            self.parametrization.check(cell, key, self.weight)
            entry = _Entry(key, self.parametrization, _find_aliases(cell, self.weight))
            for new_name in entry.param_names():
                if new_name in own_params(cell) or new_name in vars(cell):
                    raise ValueError(
                        f"{cell_label(cell)} already has an attribute '{new_name}', so '{key}' cannot be "
                        f"parametrized (the new Parameters are named '<name>_<suffix>'); rename or "
                        f"remove '{new_name}' first")
            self.entries.append(entry)

    def apply(self) -> None:
        base_name = _base_name(self.weight, self.members)
        n_trainable = len(self.parametrization.suffixes)
        all_suffixes = tuple(self.parametrization.suffixes) + tuple(self.parametrization.state_suffixes)
        new_params = tuple(
            Parameter(value, name=f"{base_name}_{suffix}", requires_grad=self.weight.requires_grad and i < n_trainable)
            for i, (suffix, value) in enumerate(zip(all_suffixes, self.values)))
        for (_, cell, key), entry in zip(self.members, self.entries):
            new_cls = _parametrized_class(original_class(cell), _entries(cell) + (entry,))
            _replace_params(cell, key, dict(zip(entry.param_names(), new_params)))
            for attr, _ in entry.aliases:
                vars(cell).pop(attr, None)
            object.__setattr__(cell, "__class__", new_cls)
            object.__setattr__(cell, "_reparam_amp_dtype", _amp_dtype_of(cell))


def _not_a_cell(obj: Any, name: str) -> TypeError:
    return TypeError(
        f"expected the mindspore.nn.Cell that owns the Parameter '{name}', got a {type(obj).__name__}; "
        f"pass the layer itself (e.g. net.conv1, or a layer of an nn.SequentialCell)")


def _check_own_parameter(cell: nn.Cell, name: str) -> None:
    if not isinstance(cell, nn.Cell):
        raise _not_a_cell(cell, name)
    label = cell_label(cell)
    if is_parametrized(cell, name):
        kind, remover = _kind(parametrizations(cell)[name])
        raise ValueError(
            f"{label}: {kind} is already applied to '{name}'; call {remover}(cell, '{name}') first "
            f"if you want to apply it again with other settings")
    params = own_params(cell)
    if name not in params:
        available = ", ".join(sorted(params)) or "none"
        raise ValueError(
            f"{label} has no Parameter '{name}' of its own (its Parameters: {available}); pass "
            f"name= one of those, or apply it to the child cell that owns the Parameter")
    if not isinstance(params[name], Parameter):
        raise TypeError(
            f"{label}: '{name}' is a {type(params[name]).__name__}, not a Parameter; only Parameters can be "
            f"parametrized")


def check_registration(cell: nn.Cell, name: str, parametrization: Parametrization) -> None:
    """Raise what :func:`register_parametrization` would raise for ``cell`` itself, changing nothing.

    Callers that change several cells check them all first, so that an error leaves none changed.
    (Ties are checked by :func:`register_parametrization`/:func:`register_parametrizations`.)

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
    _check_own_parameter(cell, name)
    _Group([(None, cell, name)], parametrization, own_params(cell)[name], []).validate()


def register_parametrization(cell: nn.Cell, name: str, parametrization: Union[Parametrization, nn.Cell], *,
                             unsafe: bool = False) -> nn.Cell:
    """Parametrize ``cell.<name>``: by an ``nn.Cell`` (PyTorch's contract) or a :class:`Parametrization`.

    **A Cell** (``torch.nn.utils.parametrize.register_parametrization``): its ``construct(X)``
    returns the new tensor; it may define ``right_inverse(Y)`` returning ``X`` or a tuple of
    tensors (then ``construct`` takes them all). Afterwards ``cell.<name>`` is computed on every
    read, inside compiled graphs too, from ``cell.parametrizations.<name>.original`` (or
    ``original0``, ``original1``, ...), and gradients reach the originals and the
    parametrization's own Parameters. Registering again on the same name chains (applied in
    registration order; ``cell.parametrizations.<name>[i]``, ``len(...)``). Assigning
    ``cell.<name> = Y`` sets the originals through the right_inverses, last registered first.
    Without ``unsafe=True`` a parametrization that changes the shape or dtype is refused. With
    one original, the cell's Parameter object itself becomes ``original`` (renamed
    ``<path>.parametrizations.<name>.original``, PyTorch's checkpoint key).

    >>> import numpy as np
    >>> from mindspore import nn, Tensor
    >>> class Symmetric(nn.Cell):
    ...     def construct(self, X):
    ...         return X.triu() + X.triu(1).T
    >>> layer = register_parametrization(nn.Dense(3, 3), "weight", Symmetric())
    >>> w = layer.weight.asnumpy()
    >>> bool(np.allclose(w, w.T)), layer.parametrizations.weight.original.name
    (True, 'parametrizations.weight.original')

    **A Parametrization** (this library's dataclass form, used by weight norm and spectral
    norm): afterwards ``cell.<name>`` is computed from ``cell.<name>_<suffix>`` on every read (inside
    graphs too), and the original Parameter is gone from the cell. Each new Parameter is named
    after the original (``body.0.weight`` gives ``body.0.weight_g``) so names stay unique in
    optimizers and checkpoints whether the cell is already attached to a parent or not.

    A Parameter that another live cell also holds (a tied weight) is refused: changing it here
    alone would untie them. :func:`register_parametrizations` on a cell that contains all the
    holders keeps the tie. Validation happens first: on error the cell is unchanged.

    >>> from mindspore import nn
    >>> from ms_weightnorm import WeightNormParametrization
    >>> dense = register_parametrization(nn.Dense(3, 2), "weight", WeightNormParametrization(0))
    >>> sorted(parametrizations(dense)), dense.weight_g.shape
    (['weight'], (2, 1))
    """
    if isinstance(parametrization, nn.Cell):
        return _kit.register_cell_parametrization(cell, name, parametrization, unsafe=unsafe)
    if not isinstance(parametrization, Parametrization):
        raise TypeError(f"{cell_label(cell) if isinstance(cell, nn.Cell) else 'register_parametrization'}: "
                        f"a parametrization must be a mindspore.nn.Cell (construct(X) returns the new tensor) "
                        f"or a ms_weightnorm Parametrization, got {type(parametrization).__name__}")
    _check_own_parameter(cell, name)
    check_not_shared(cell, name)
    group = _Group([(None, cell, name)], parametrization, own_params(cell)[name], [])
    group.prepare()
    group.apply()
    invalidate_compiled_graphs()
    return cell


def check_not_shared(cell: nn.Cell, name: str, refuse_trainers: bool = True) -> None:
    """Raise when another live cell (a tie), or an optimizer, also holds ``cell.<name>``."""
    holders = _holders([(cell, name)])
    weight = own_params(cell)[name]
    others = [h for h in holders[id(weight)] if h != (cell, name)]
    trainers = [h for h in others if _is_training_holder(*h)]
    if trainers and refuse_trainers:
        raise _training_holder_error(cell, name, weight.name, trainers)
    others = [h for h in others if not _is_training_holder(*h)]
    if others:
        shared = "; ".join(_describe(c, k) for c, k in others)
        raise ValueError(
            f"{cell_label(cell)}: its Parameter {_param_ref(name, weight.name)} is shared with {shared}. "
            f"Parametrizing it in this cell alone would untie them. To keep the tie, apply weight norm "
            f"to a cell that contains all of them (apply_weight_norm(model)): they then share one set of "
            f"new Parameters. To untie on purpose, give this cell its own copy first: "
            f"cell.{name} = Parameter(cell.{name}.copy(), name='...')")


def register_parametrizations(net: nn.Cell, selected: Sequence[Tuple[str, nn.Cell, str]],
                              make: Callable[[nn.Cell, str], Parametrization],
                              follow: Callable[[nn.Cell], bool]) -> List[str]:
    """Parametrize the ``selected`` Parameters of cells inside ``net``: all or nothing, ties kept.

    ``selected`` lists ``(path in net, cell, Parameter name)``; ``make(cell, name)`` validates
    and returns the parametrization of one (raise to refuse). When other cells also hold a
    selected Parameter (``head.weight = embed.embedding_table``), they are parametrized with it
    and share its new Parameters, so they keep reading one weight. That needs every holder to
    be inside ``net`` and accepted by ``follow(cell)``, and the same parametrization for all of
    them; otherwise a ``ValueError`` names the cells and nothing changes. Returns the paths of
    the changed cells in ``net``'s order.

    >>> from mindspore import nn
    >>> from ms_weightnorm import WeightNormParametrization
    >>> net = nn.SequentialCell([nn.Dense(3, 3), nn.Dense(3, 3)])
    >>> net[1].weight = net[0].weight  # tied
    >>> register_parametrizations(net, [("0", net[0], "weight")],
    ...                           lambda cell, name: WeightNormParametrization(0), lambda cell: True)
    ['0', '1']
    >>> net[1].weight_g is net[0].weight_g
    True
    """
    if not isinstance(net, nn.Cell):
        raise TypeError(f"register_parametrizations: net must be a mindspore.nn.Cell (the model that contains "
                        f"the selected cells), got a {type(net).__name__}")
    paths = {}
    for path, cell in net.cells_and_names():
        paths.setdefault(id(cell), path)
    pairs = []
    for _, cell, name in selected:
        _check_own_parameter(cell, name)
        if (cell, name) not in pairs:
            pairs.append((cell, name))
    holders = _holders(pairs)
    chosen = {(id(c), k) for c, k in pairs}
    order = {cell_id: i for i, cell_id in enumerate(paths)}
    groups: List[_Group] = []
    for pid, members in holders.items():
        weight = own_params(members[0][0])[members[0][1]]
        lead_cell, lead_key = members[0]
        trainers = [m for m in members if _is_training_holder(*m)]
        if trainers:
            raise _training_holder_error(lead_cell, lead_key, weight.name, trainers)
        outside = [m for m in members if id(m[0]) not in paths]
        refused = [m for m in members if id(m[0]) in paths and (id(m[0]), m[1]) not in chosen
                   and not follow(m[0])]
        if outside or refused:
            everyone = " and ".join(_describe(c, k, paths) for c, k in members)
            if outside:
                why = (f"{len(outside)} of them outside the {type(net).__name__} given. To keep the tie, apply "
                       f"it to a cell that contains all of them (e.g. the whole model)")
            else:
                names = ", ".join(sorted({class_name(c) for c, _ in refused}))
                why = (f"{names} not selected by cell_types. To keep the tie, add {names} to cell_types "
                       f"(the cells then share one set of new Parameters)")
            raise ValueError(
                f"the Parameter named '{weight.name}' is shared by {everyone}, {why}; parametrizing only "
                f"some of them would untie them. To untie on purpose, first give a cell its own copy: "
                f"cell.<name> = Parameter(cell.<name>.copy(), name='...'). Nothing was changed")
        made = [(paths[id(c)], c, k, make(c, k)) for c, k in members]
        first = made[0][3]
        for path, c, k, p in made[1:]:
            if p != first:
                raise ValueError(
                    f"the Parameter named '{weight.name}' is shared by {_describe(lead_cell, lead_key, paths)} "
                    f"and {_describe(c, k, paths)}, which need different parametrizations ({first} and {p}); "
                    f"a tie needs one. Untie them first, or choose settings valid for both. Nothing was changed")
        members_in_order = sorted(((path, c, k) for path, c, k, _ in made), key=lambda m: order[id(m[1])])
        groups.append(_Group(members_in_order, first, weight, []))
    for group in groups:
        group.prepare()
    # Every check passed and every value is computed: only now change the cells.
    for group in groups:
        group.apply()
    if groups:
        invalidate_compiled_graphs()
    changed = {id(c) for g in groups for _, c, _ in g.members}
    return [path for path, cell in net.cells_and_names() if id(cell) in changed]


class StaleTrainerWarning(UserWarning):
    """A parametrization was removed while an optimizer or training cell still holds its Parameters."""


def _fold_group(cell: nn.Cell, entry: _Entry) -> List[Tuple[nn.Cell, _Entry]]:
    """The cells that share ``entry``'s new Parameters with ``cell`` (itself first)."""
    # Look up the holders before taking any local reference to the Parameters (see _holders).
    found = _holders([(cell, entry.param_names()[0])])
    own = tuple(own_params(cell)[n] for n in entry.param_names())
    holders = found[id(own[0])]
    trainers = [h for h in holders if _is_training_holder(*h)]
    if trainers:
        # The mirror of the refusal at registration: an optimizer built on g and v goes on
        # updating them after the fold, and nothing updates the folded weight. Removal is not
        # refused, because removing after training (to export) is the usual order.
        who = ", ".join(sorted({class_name(c) for c, _ in trainers}))
        names = " and ".join(f"'{p.name}'" for p in own[:len(entry.parametrization.suffixes)])
        warnings.warn(
            f"{cell_label(cell)}: removing the parametrization of '{entry.name}' while {who}, an optimizer or "
            f"training cell built before the removal, still holds {names}. It would keep updating those, and "
            f"the folded '{entry.name}' would never train. To train on, build the optimizer and training "
            f"cells again after the removal. If training is over, this is harmless: delete them first, or "
            f"filter StaleTrainerWarning (a training cell that ran in GRAPH_MODE stays alive inside "
            f"MindSpore after del)",
            StaleTrainerWarning, stacklevel=4)
    group = [(cell, entry)]
    for other, key in holders:
        if other is cell:
            continue
        for e in _entries(other):
            names = e.param_names()
            if names[0] == key and all(own_params(other).get(n) is p for n, p in zip(names, own)):
                group.append((other, e))
    return group


def remove_parametrization(cell: nn.Cell, name: str) -> Parameter:
    """Fold the current value of ``cell.<name>`` into a plain Parameter again; return it.

    Cells that share the parametrization (a tie kept by :func:`register_parametrizations`)
    are folded with it and get the same new Parameter, so the tie stays.

    >>> from mindspore import nn
    >>> from ms_weightnorm import WeightNormParametrization
    >>> dense = register_parametrization(nn.Dense(3, 2), "weight", WeightNormParametrization(0))
    >>> remove_parametrization(dense, "weight").shape, type(dense) is nn.Dense
    ((2, 3), True)
    """
    if not isinstance(cell, nn.Cell):
        raise _not_a_cell(cell, name)
    entries = _entries(cell)
    entry = next((e for e in entries if e.name == name), None)
    if entry is None:
        applied = ", ".join(e.name for e in entries) or "none"
        raise ValueError(
            f"{cell_label(cell)}: '{name}' is not parametrized (parametrized: {applied}), nothing to "
            f"remove; pass name= one of those, or the cell that has it")
    if _kit.is_kit_entry(entry):
        _kit.remove_parametrizations(cell, name, leave_parametrized=True)
        return own_params(cell)[name]
    group = _fold_group(cell, entry)
    if entry.stateful:
        # Folding reads the weight as in eval mode: removal never advances the state.
        args = [getattr(cell, n) for n in entry.param_names()]
        value = _amp_cast(entry.parametrization.compose_fn()(*args, False), cell._reparam_amp_dtype)
    else:
        value = type(cell).__dict__[name].fget(cell)
    first = own_params(cell)[entry.param_names()[0]]
    suffix = "_" + entry.parametrization.suffixes[0]
    param_name = first.name[: -len(suffix)] if first.name.endswith(suffix) else name
    folded = Parameter(value, name=param_name, requires_grad=first.requires_grad)
    for member, member_entry in group:
        _unregister(member, member_entry, folded)
    invalidate_compiled_graphs()
    return folded


def _unregister(cell: nn.Cell, entry: _Entry, folded: Parameter) -> None:
    rest = tuple(e for e in _entries(cell) if e is not entry)
    base = original_class(cell)
    new_cls = _parametrized_class(base, rest) if rest else base
    old_keys = entry.param_names()
    params = own_params(cell)
    items = []
    for key, p in params.items():
        if key == old_keys[0]:
            items.append((entry.name, folded))
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


def invalidate_compiled_graphs() -> None:
    """Drop MindSpore's cached graphs so that the next call compiles the changed cells.

    MindSpore keys compiled graphs by the top cell (or the ``ms.jit`` function) and never
    looks at the structure of its children again; after a class swap or a Parameter change
    a cached graph would silently compute with the old structure. Dropping the caches is
    what ``mindspore.ms_memory_recycle`` does to them, without its memory recycling.
    """
    drop_compiled_graphs()


# The Cell form (PyTorch's contract) lives in _kit, which builds on the names above.
from . import _kit  # noqa: E402
from ._kit import (  # noqa: E402
    ParametrizationList,
    cached,
    remove_parametrizations,
    transfer_parametrizations_and_params,
    type_before_parametrizations,
)
