"""PyTorch's test/nn/test_parametrization.py, translated to MindSpore Cells and this library.

Each test is named after the PyTorch test it translates (``test_<torch name>``) and runs in
PyNative and GRAPH_MODE (the ``mode`` fixture). In GRAPH_MODE the values and gradients are
taken from compiled cells (``Read``, ``Loss`` below), so the parametrized read is traced.
Clauses with no MindSpore counterpart (devices, tensor subclasses, pickling whole modules,
complex weights) are left out and named in docs/parametrizations.md.
"""
import copy
import os

import mindspore as ms
import numpy as np
import pytest
from mindspore import Parameter, Tensor, nn, ops

from ms_weightnorm import orthogonal, parametrize, weight_norm
from ms_weightnorm.parametrize import ParametrizationList


# --------------------------------------------------------------------------- helpers


class ReadWeight(nn.Cell):
    """``cell.weight`` through a compiled graph in GRAPH_MODE."""

    def __init__(self, cell):
        super().__init__(auto_prefix=False)  # leave the Parameters' names as they are
        self.cell = cell

    def construct(self):
        return self.cell.weight * 1


class ReadBias(ReadWeight):
    def construct(self):
        return self.cell.bias * 1


class WeightTBias(nn.Cell):
    """torch's loss ``(model.weight.T @ model.bias).sum()``."""

    def __init__(self, cell):
        super().__init__(auto_prefix=False)
        self.cell = cell

    def construct(self):
        return ops.matmul(self.cell.weight.T, self.cell.bias).sum()


def weight(cell):
    return ReadWeight(cell)().asnumpy()


def bias(cell):
    return ReadBias(cell)().asnumpy()


def sgd_step(loss_cell: nn.Cell, params, lr=0.01):
    """One SGD step (a compiled training cell in GRAPH_MODE); returns the gradients."""
    grads = ms.grad(loss_cell, None, params)()
    for p, g in zip(params, grads):
        p.set_data(p - lr * g)
    parametrize.invalidate_compiled_graphs()  # set_data: compiled ms.jit graphs would not see it
    return [g.asnumpy() for g in grads]


class Skew(nn.Cell):
    def construct(self, X):
        X = ops.tril(X, -1)
        return X - X.T


class CayleyOrthogonal(nn.Cell):
    """torch's test ``Orthogonal``: the Cayley map of a skew-symmetric matrix."""

    def construct(self, X):
        eye = ops.eye(X.shape[0], X.shape[0], X.dtype)
        return ops.matrix_solve(eye + X, eye - X)


class Resize(nn.Cell):
    def construct(self, X):
        return X[0:1]


class NoResize(nn.Cell):
    def construct(self, X):
        return X


class FirstZero(nn.Cell):
    def construct(self, x):
        return ops.cat((ops.zeros(1, x.dtype), x[1:]))


class LastZero(nn.Cell):
    def construct(self, x):
        return ops.cat((x[:-1], ops.zeros(1, x.dtype)))


class Identity(nn.Cell):
    def construct(self, X):
        return X


class Double(nn.Cell):
    def construct(self, x):
        return 2.0 * x

    def right_inverse(self, w):
        return 0.5 * w


class AddOne(nn.Cell):
    def construct(self, x):
        return x + 1.0


class MinusOne(nn.Cell):
    def construct(self, x):
        return x - 1.0


class RankOne(nn.Cell):
    def construct(self, x, y):
        return ops.matmul(x.expand_dims(-1), y.expand_dims(-2))

    def right_inverse(self, Y):
        u, s, vh = np.linalg.svd(Y.asnumpy(), full_matrices=False)
        r = np.sqrt(s[0])
        return Tensor((u[:, 0] * r).astype(np.float32)), Tensor((vh[0] * r).astype(np.float32))


def np_orthogonal(shape, rng):
    q, r = np.linalg.qr(rng.standard_normal(shape))
    return (q * np.sign(np.diag(r))).astype(np.float32)


# --------------------------------------------------------------------------- translated tests


def test_register_and_remove_parametrization(mode):
    rng = np.random.default_rng(0)
    model = nn.Dense(8, 8)
    model.bias.set_data(Tensor(rng.standard_normal(8).astype(np.float32)))
    initial_weight_id, initial_bias_id = id(model.weight), id(model.bias)
    initial_weight = model.weight.asnumpy().copy()

    # unsafe flag: a shape change is refused, with nothing changed
    with pytest.raises(ValueError, match="may not change the shape of the tensor"):
        parametrize.register_parametrization(model, "weight", Resize())
    assert not parametrize.is_parametrized(model)
    assert type(model) is nn.Dense

    # one, then two parametrizations with unsafe=True
    for chain in ([Resize()], [Resize(), NoResize()]):
        parametrize.register_parametrization(model, "weight", chain[0], unsafe=True)
        for extra in chain[1:]:
            parametrize.register_parametrization(model, "weight", extra, unsafe=False)
        assert hasattr(model, "parametrizations")
        assert parametrize.is_parametrized(model) and parametrize.is_parametrized(model, "weight")
        assert not parametrize.is_parametrized(model, "bias")
        assert "weight" not in model._params
        assert weight(model).shape[0] == 1
        parametrize.remove_parametrizations(model, "weight", leave_parametrized=False)
        assert not hasattr(model, "parametrizations")
        np.testing.assert_array_equal(model.weight.asnumpy(), initial_weight)
        assert id(model.weight) == initial_weight_id
        assert model.__class__ is nn.Dense

    # unsafe=True does not change the behaviour of a safe parametrization; then without it
    for unsafe in (True, False):
        parametrize.register_parametrization(model, "weight", Skew(), unsafe=unsafe)
        assert "weight" not in model._params
        A = weight(model)
        np.testing.assert_array_equal(A, -A.T)
        parametrize.remove_parametrizations(model, "weight", leave_parametrized=False)
        assert not hasattr(model, "parametrizations")
        np.testing.assert_array_equal(model.weight.asnumpy(), initial_weight)
        assert id(model.weight) == initial_weight_id and model.__class__ is nn.Dense

    # two at once: the result is orthogonal
    parametrize.register_parametrization(model, "weight", Skew())
    parametrize.register_parametrization(model, "weight", CayleyOrthogonal())
    X = weight(model)
    np.testing.assert_allclose(X.T @ X, np.eye(8), atol=1e-5)
    assert "weight" in model.parametrizations and "weight" not in model._params
    parametrize.remove_parametrizations(model, "weight", leave_parametrized=False)
    np.testing.assert_array_equal(model.weight.asnumpy(), initial_weight)
    assert id(model.weight) == initial_weight_id and not hasattr(model, "parametrizations")

    # everything: weight and bias chains, trained by one optimizer across removals
    parametrize.register_parametrization(model, "weight", Skew())
    parametrize.register_parametrization(model, "weight", CayleyOrthogonal())
    parametrize.register_parametrization(model, "bias", FirstZero())
    parametrize.register_parametrization(model, "bias", LastZero())
    assert parametrize.is_parametrized(model, "weight") and parametrize.is_parametrized(model, "bias")
    b = bias(model)
    assert b[0] == 0.0 and b[-1] == 0.0
    params = model.trainable_params()
    assert len(params) == 2  # the two originals, nothing else
    w_before, b_before = weight(model), bias(model)
    sgd_step(WeightTBias(model), params)
    assert not np.allclose(weight(model), w_before) and not np.allclose(bias(model), b_before)

    parametrize.remove_parametrizations(model, "weight", leave_parametrized=False)
    assert parametrize.is_parametrized(model) and not parametrize.is_parametrized(model, "weight")
    b = bias(model)
    assert b[0] == 0.0 and b[-1] == 0.0
    assert not np.allclose(model.weight.asnumpy(), initial_weight)  # it was trained
    assert id(model.weight) == initial_weight_id
    assert len(model.trainable_params()) == 2
    w_before, b_before = weight(model), bias(model)
    sgd_step(WeightTBias(model), params)  # the same Parameter objects, still training
    assert not np.allclose(weight(model), w_before) and not np.allclose(bias(model), b_before)

    parametrize.remove_parametrizations(model, "bias", leave_parametrized=False)
    assert not parametrize.is_parametrized(model)
    assert model.bias.asnumpy()[0] != 0.0 and model.bias.asnumpy()[-1] != 0.0
    assert id(model.bias) == initial_bias_id
    assert not hasattr(model, "parametrizations") and model.__class__ is nn.Dense
    assert len(model.trainable_params()) == 2
    w_before, b_before = weight(model), bias(model)
    sgd_step(WeightTBias(model), params)
    assert not np.allclose(weight(model), w_before) and not np.allclose(bias(model), b_before)

    # leave_parametrized=True keeps the Parameter object (same dtype, one original)
    for _ in range(2):
        parametrize.register_parametrization(model, "weight", Skew())
        parametrize.register_parametrization(model, "weight", CayleyOrthogonal())
        expected = weight(model)
        parametrize.remove_parametrizations(model, "weight", leave_parametrized=True)
        np.testing.assert_allclose(model.weight.asnumpy(), expected, atol=1e-6)
        assert id(model.weight) == initial_weight_id and id(model.bias) == initial_bias_id
        assert model.weight.name == "weight"  # its name back
        w_before, b_before = weight(model), bias(model)
        sgd_step(WeightTBias(model), params)
        assert not np.allclose(weight(model), w_before) and not np.allclose(bias(model), b_before)


def test_register_and_remove_nested_parametrization(mode):
    model = nn.Dense(8, 8)
    parametrize.register_parametrization(model, "weight", Skew())
    assert "weight" not in model._params
    A = weight(model)
    np.testing.assert_array_equal(A, -A.T)

    param_mod = model.parametrizations.weight
    assert not hasattr(param_mod, "parametrizations")
    assert not parametrize.is_parametrized(param_mod)
    parametrize.register_parametrization(param_mod, "original", Skew())
    assert parametrize.is_parametrized(param_mod, "original")
    assert "original" not in param_mod._params
    A = param_mod.original.asnumpy()
    np.testing.assert_array_equal(A, -A.T)
    # The nested original is read inside the compiled chain: gradients reach the innermost one.
    inner = param_mod.parametrizations.original.original
    assert inner.name == "parametrizations.weight.parametrizations.original.original"  # torch's key
    g = ms.grad(WeightTBias(model), None, [inner])()[0].asnumpy()
    assert np.abs(g).sum() > 0

    parametrize.remove_parametrizations(param_mod, "original", leave_parametrized=False)
    assert not hasattr(param_mod, "parametrizations")
    assert param_mod.__class__ is ParametrizationList
    parametrize.remove_parametrizations(model, "weight", leave_parametrized=False)
    assert not hasattr(model, "parametrizations") and model.__class__ is nn.Dense


def test_register_and_remove_buffer_parametrization(mode):
    # MindSpore's buffer: a Parameter that does not train.
    model = nn.Dense(8, 8)
    del model._params["bias"]
    model.bias = Parameter(Tensor(np.ones(8, np.float32)), name="bias", requires_grad=False)
    parametrize.register_parametrization(model, "bias", FirstZero())
    parametrize.register_parametrization(model, "bias", LastZero())
    assert parametrize.is_parametrized(model, "bias")
    b = bias(model)
    assert b[0] == 0.0 and b[-1] == 0.0 and (b[1:-1] == 1).all()
    assert len(model.trainable_params()) == 1
    parametrize.remove_parametrizations(model, "bias", leave_parametrized=True)
    assert not parametrize.is_parametrized(model)
    b = model.bias.asnumpy()
    assert b[0] == 0.0 and b[-1] == 0.0 and (b[1:-1] == 1).all()
    assert len(model.trainable_params()) == 1 and not model.bias.requires_grad


class StatefulOrthogonal(nn.Cell):
    """torch's test_serialization ``Orthogonal``: buffers id and B (non-trainable Parameters)."""

    def __init__(self, n, seed):
        super().__init__()
        self.id = Parameter(Tensor(np.eye(n, dtype=np.float32)), name="id", requires_grad=False)
        self.B = Parameter(Tensor(np_orthogonal((n, n), np.random.default_rng(seed))), name="B",
                           requires_grad=False)

    def construct(self, X):
        A = ops.triu(X, 1)
        A = A - A.T
        return ops.matmul(self.B, ops.matrix_solve(self.id + A, self.id - A))


def test_serialization_parametrization(mode, tmp_path):
    def get_model(seed):
        ms.set_seed(seed)
        model = nn.SequentialCell([nn.Dense(5, 5), nn.ReLU(), nn.Dense(5, 1)])
        parametrize.register_parametrization(model[0], "weight", StatefulOrthogonal(5, seed))
        return model

    model = get_model(1)
    prev_weight = weight(model[0])
    prev_B = model[0].parametrizations.weight[0].B.asnumpy()
    new_model = get_model(2)
    assert not np.allclose(weight(new_model[0]), prev_weight)
    path = os.path.join(tmp_path, "m.ckpt")
    ms.save_checkpoint(model, path)
    names = set(ms.load_checkpoint(path))
    assert names == {"0.bias", "0.parametrizations.weight.original", "0.parametrizations.weight.0.id",
                     "0.parametrizations.weight.0.B", "2.weight", "2.bias"}  # torch's state_dict keys
    not_loaded, _ = ms.load_param_into_net(new_model, ms.load_checkpoint(path))
    assert not not_loaded
    parametrize.invalidate_compiled_graphs()
    assert parametrize.is_parametrized(new_model[0], "weight")
    np.testing.assert_allclose(weight(new_model[0]), prev_weight, atol=1e-6)
    np.testing.assert_array_equal(new_model[0].parametrizations.weight[0].B.asnumpy(), prev_B)


class CheckedSkew(nn.Cell):
    def construct(self, X):
        A = ops.triu(X, 1)
        return A - A.T

    def right_inverse(self, X):
        x = X.asnumpy()
        if not np.allclose(x, -x.T, atol=1e-6):
            raise ValueError("The matrix is not skew-symmetric.")
        return ops.triu(X, 1)


class CayleyWithBase(nn.Cell):
    """A Cayley map whose right_inverse is not quite its inverse: it moves the base B."""

    def __init__(self, n):
        super().__init__()
        self.B = Parameter(Tensor(np.eye(n, dtype=np.float32)), name="B", requires_grad=False)

    def construct(self, X):
        eye = ops.eye(X.shape[0], X.shape[0], X.dtype)
        return ops.matmul(self.B, ops.matrix_solve(eye + X, eye - X))

    def right_inverse(self, X):
        x = X.asnumpy()
        if not np.allclose(x.T @ x, np.eye(x.shape[0]), atol=1e-4):
            raise ValueError("The input is not orthogonal.")
        self.B.set_data(X.copy())  # cayley(0) == Id, so B @ cayley(0) == B
        return ops.zeros_like(X)


def test_initialization_parametrization(mode):
    rng = np.random.default_rng(3)
    N = 5
    model = nn.Dense(N, N)
    skew = CheckedSkew()
    model.weight.set_data(skew(model.weight))  # make it skew-symmetric first
    parametrize.register_parametrization(model, "weight", skew)
    X = rng.random((N, N)).astype(np.float32)
    before = model.parametrizations.weight.original.asnumpy().copy()
    with pytest.raises(ValueError, match="not skew-symmetric"):
        model.weight = Tensor(X)
    np.testing.assert_array_equal(model.parametrizations.weight.original.asnumpy(), before)
    X = X - X.T
    model.weight = Tensor(X)
    np.testing.assert_allclose(model.parametrizations.weight.original.asnumpy(), np.triu(X, 1), atol=1e-6)
    np.testing.assert_allclose(weight(model), X, atol=1e-6)

    parametrize.register_parametrization(model, "weight", CayleyWithBase(N))
    X = rng.random((N, N)).astype(np.float32)
    with pytest.raises(ValueError, match="not orthogonal"):
        model.weight = Tensor(X)
    X = np_orthogonal((N, N), rng)
    model.weight = Tensor(X)
    np.testing.assert_allclose(weight(model), X, atol=1e-5)
    np.testing.assert_array_equal(model.parametrizations.weight.original.asnumpy(), np.zeros_like(X))


class ChangeDtype(nn.Cell):
    def construct(self, x):
        return x.astype(ms.bool_)


class ChangeShape(nn.Cell):
    def construct(self, x):
        return x[:-1]


class Sum(nn.Cell):
    def construct(self, x, y):
        return x + y

    def right_inverse(self, z):
        return z, ops.zeros_like(z)


def test_errors_unparametrized_tensor_parametrization(mode):
    module = nn.Dense(3, 4)
    weight_init = module.weight.asnumpy().copy()

    with pytest.raises(ValueError, match="does not have a parameter"):
        parametrize.register_parametrization(module, "foo", Identity())
    assert not parametrize.is_parametrized(module)

    with pytest.raises(ValueError, match="does not have a parametrization"):
        parametrize.remove_parametrizations(module, "bias")
    assert not parametrize.is_parametrized(module)

    parametrize.register_parametrization(module, "weight", Sum())
    with pytest.raises(ValueError, match="leave_parametrized=False"):
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
    parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)

    class WrongNumberParams(nn.Cell):
        def construct(self, x, y, z):
            return x + y + z

        def right_inverse(self, w):
            return w, ops.zeros_like(w)

    class WrongRightInverse(Identity):
        def right_inverse(self, z):
            return None

    class WrongRightInverseSequence(nn.Cell):
        def construct(self, x, y):
            return x

        def right_inverse(self, z):
            return None, z

    class ChangeDtypeInverse(nn.Cell):
        def construct(self, x):
            return x.astype(ms.float32)

        def right_inverse(self, w):
            return w.astype(ms.bool_)

    class NotTensor(nn.Cell):
        def construct(self, x):
            return 2

    class ChangeDtypeMulti(nn.Cell):
        def construct(self, x, y):
            return (x + y).astype(ms.bool_)

        def right_inverse(self, w):
            return w, w + 1

    # Each is refused at registration, and leaves the module unparametrized.
    for bad, error, message in (
            (WrongNumberParams, TypeError, "positional argument"),
            (WrongRightInverse, ValueError, "Tensor or a Sequence of"),
            (WrongRightInverseSequence, ValueError, "element 0 of the sequence has type NoneType"),
            (ChangeDtypeInverse, ValueError, "outputs one tensor, it may not change the dtype"),
            (NotTensor, ValueError, "must return a tensor"),
            (ChangeDtype, ValueError, "may not change the dtype"),
            (ChangeShape, ValueError, "may not change the shape"),
            (ChangeDtypeMulti, ValueError, "may not change the dtype"),
    ):
        with pytest.raises(error, match=message):
            parametrize.register_parametrization(module, "weight", bad())
        assert not parametrize.is_parametrized(module)

    class SequenceLen1(nn.Cell):
        def construct(self, x):
            return x

        def right_inverse(self, w):
            return (w,)

    parametrize.register_parametrization(module, "weight", SequenceLen1())
    assert hasattr(module.parametrizations.weight, "original0")
    assert not hasattr(module.parametrizations.weight, "original1")
    weight(module)  # does not raise
    parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)

    # none of the above altered the weight
    assert not parametrize.is_parametrized(module)
    np.testing.assert_array_equal(module.weight.asnumpy(), weight_init)


def test_errors_parametrized_tensor_parametrization(mode):
    module = nn.Dense(3, 4)
    parametrize.register_parametrization(module, "weight", Identity())

    def unchanged():
        assert parametrize.is_parametrized(module)
        assert len(module.parametrizations.weight) == 1
        assert isinstance(module.parametrizations.weight[0], Identity)

    class WrongReturn(nn.Cell):
        def construct(self, x):
            return x, x

    class WrongReturnInverse(Identity):
        def right_inverse(self, x):
            return x, x

    class ChangeDtypeInverse(Identity):
        def right_inverse(self, x):
            return x.astype(ms.bool_)

    class ChangeShapeInverse(Identity):
        def right_inverse(self, x):
            return x[:-1]

    for bad, message in ((WrongReturn, "must return a tensor"), (ChangeDtype, "may not change the dtype"),
                         (ChangeShape, "may not change the shape"),
                         (WrongReturnInverse, "right_inverse must return a tensor"),
                         (ChangeDtypeInverse, "must have the same dtype"),
                         (ChangeShapeInverse, "must have the same shape")):
        with pytest.raises(ValueError, match=message):
            parametrize.register_parametrization(module, "weight", bad())
        unchanged()


def test_multiple_inputs_parametrization(mode):
    model = nn.Dense(3, 3)
    parametrize.register_parametrization(model, "weight", RankOne())
    assert parametrize.is_parametrized(model, "weight")
    plist = model.parametrizations.weight
    assert "original0" in plist._params and "original1" in plist._params
    assert not parametrize.is_parametrized(model, "bias") and "weight" not in model._params
    assert np.linalg.matrix_rank(weight(model)) == 1

    with pytest.raises(ValueError, match="leave_parametrized=False"):
        parametrize.remove_parametrizations(model, "weight", leave_parametrized=False)
    parametrize.remove_parametrizations(model, "weight", leave_parametrized=True)
    assert not hasattr(model, "parametrizations") and model.__class__ is nn.Dense
    assert np.linalg.matrix_rank(model.weight.asnumpy()) == 1 and "weight" in model._params

    # one-input parametrizations on top of a many-input one
    init_weight = model.weight.asnumpy().copy()
    parametrize.register_parametrization(model, "weight", RankOne())
    np.testing.assert_allclose(weight(model), init_weight, atol=1e-5)
    parametrize.register_parametrization(model, "weight", Double())
    np.testing.assert_allclose(weight(model), 2.0 * init_weight, atol=1e-5)
    assert np.linalg.matrix_rank(weight(model)) == 1
    params = model.trainable_params()
    assert len(params) == 3
    for _ in range(2):
        grads = sgd_step(WeightTBias(model), params, lr=0.1)
        assert all(np.abs(g).sum() > 0 for g in grads[:2])  # both originals train

    with pytest.raises(ValueError, match="leave_parametrized=False"):
        parametrize.remove_parametrizations(model, "weight", leave_parametrized=False)
    parametrize.remove_parametrizations(model, "weight", leave_parametrized=True)
    assert not hasattr(model, "parametrizations") and model.__class__ is nn.Dense
    assert np.linalg.matrix_rank(model.weight.asnumpy()) == 1
    params = model.trainable_params()
    assert len(params) == 2
    for _ in range(2):
        sgd_step(WeightTBias(model), params, lr=0.1)


def test_caching_parametrization(mode):
    model = nn.Dense(5, 5)
    parametrize.register_parametrization(model, "weight", Skew())
    parametrize.register_parametrization(model, "weight", CayleyOrthogonal())
    with parametrize.cached():
        X = model.weight
        Y = model.weight
        assert id(X) == id(Y)
    assert model.weight is not model.weight  # computed on each read outside the context


def test_caching_parametrization_with_transfer_parametrizations_and_params(mode):
    model = nn.Dense(5, 5)
    parametrize.register_parametrization(model, "weight", Skew())
    parametrize.register_parametrization(model, "weight", CayleyOrthogonal())
    to_model = nn.Dense(5, 5)
    parametrize.transfer_parametrizations_and_params(model, to_model)
    with parametrize.cached():
        X, Y = model.weight, model.weight
        assert id(X) == id(Y)
        A, B = to_model.weight, to_model.weight
        assert id(A) == id(B)
        assert id(A) != id(X)


def test_parametrization_same_training_mode(mode):
    module = nn.Dense(4, 4)
    module.set_train(False)
    parametrize.register_parametrization(module, "weight", Identity())
    assert not module.parametrizations.weight[0].training
    module.set_train(True)
    parametrize.register_parametrization(module, "weight", Identity().set_train(False))
    assert module.parametrizations.weight[0].training
    assert module.parametrizations.weight[1].training


def test_type_before_parametrizations(mode):
    model = nn.Dense(5, 5)
    assert parametrize.type_before_parametrizations(model) is nn.Dense
    parametrize.register_parametrization(model, "weight", Identity())
    assert parametrize.type_before_parametrizations(model) is nn.Dense
    assert type(model) is not nn.Dense


class ModelWithoutDeepcopy(nn.Cell):
    def __init__(self):
        super().__init__()
        self.weight = Parameter(Tensor(np.ones(4, np.float32)), name="weight")
        self.bias = Parameter(Tensor(np.zeros(4, np.float32)), name="bias")
        self.attr = [1.0, 2.0, 3.0, 4.0]

    def construct(self, x):
        return x * self.weight + self.bias


class ActualModel(ModelWithoutDeepcopy):
    def __deepcopy__(self, memo):
        result = self.__new__(self.__class__)
        memo[id(self)] = result
        result.__dict__ = copy.deepcopy(self.__dict__, memo)
        return result


def test_deepcopy_after_parametrization(mode):
    def check_deepcopy(m1, m2):
        w1, w2 = m1.parametrizations.weight.original, m2.parametrizations.weight.original
        b1 = m1.parametrizations.bias.original if parametrize.is_parametrized(m1, "bias") else m1.bias
        b2 = m2.parametrizations.bias.original if parametrize.is_parametrized(m2, "bias") else m2.bias
        assert m1.__dict__.keys() == m2.__dict__.keys()
        assert m1 is not m2
        np.testing.assert_array_equal(w1.asnumpy(), w2.asnumpy())
        assert w1 is not w2
        np.testing.assert_array_equal(b1.asnumpy(), b2.asnumpy())
        assert b1 is not b2
        assert m1.attr == m2.attr and m1.attr is not m2.attr
        x = Tensor(np.arange(4, dtype=np.float32))
        # A __deepcopy__ that skips __init__ leaves MindSpore's C++ Cell unset: such a copy
        # cannot be compiled, parametrized or not, so ActualModel's copy runs its construct eagerly.
        run = (lambda m: m.construct(x)) if isinstance(m1, ActualModel) else (lambda m: m(x))
        np.testing.assert_array_equal(run(m1).asnumpy(), run(m2).asnumpy())

    for model in (ModelWithoutDeepcopy(), ActualModel()):
        parametrize.register_parametrization(model, "weight", AddOne())
        check_deepcopy(model, copy.deepcopy(model))
        parametrize.register_parametrization(model, "bias", AddOne())
        check_deepcopy(model, copy.deepcopy(model))
        parametrize.register_parametrization(model, "weight", AddOne())
        check_deepcopy(model, copy.deepcopy(model))


def assert_transferred(model, to_model, name="weight", originals=("original",)):
    """to_model.<name> and its originals equal model's (torch's transfer checks)."""
    assert parametrize.is_parametrized(to_model, name)
    np.testing.assert_array_equal(getattr(model, name).asnumpy(), getattr(to_model, name).asnumpy())
    for k in originals:
        np.testing.assert_array_equal(getattr(model.parametrizations[name], k).asnumpy(),
                                      getattr(to_model.parametrizations[name], k).asnumpy())


def test_transfer_parametrizations_and_params(mode):
    model = nn.Dense(5, 5)
    parametrize.register_parametrization(model, "weight", AddOne())
    parametrize.register_parametrization(model, "weight", Double())
    parametrize.register_parametrization(model, "weight", MinusOne())
    hold_weight = weight(model)
    to_model = nn.Dense(5, 5)
    parametrize.transfer_parametrizations_and_params(model, to_model)

    assert_transferred(model, to_model)
    np.testing.assert_array_equal(weight(to_model), weight(model))  # compiled reads too
    np.testing.assert_array_equal(hold_weight, weight(model))

    parametrize.remove_parametrizations(to_model, "weight")
    assert not parametrize.is_parametrized(to_model, "weight")
    assert parametrize.is_parametrized(model, "weight")

    # a parameter that does not exist in to_model is created there
    model.test_param = Parameter(Tensor(np.random.default_rng(0).standard_normal((5, 5)).astype(np.float32)),
                                 name="test_param")
    assert not hasattr(to_model, "test_param")
    parametrize.register_parametrization(model, "test_param", Double())
    hold_test_param = model.test_param.asnumpy()
    parametrize.transfer_parametrizations_and_params(model, to_model, "test_param")
    assert_transferred(model, to_model, "test_param")
    np.testing.assert_array_equal(hold_test_param, model.test_param.asnumpy())
    # copies, not shared: each cell trains its own originals under unique names
    assert to_model.parametrizations.test_param.original is not model.parametrizations.test_param.original
    both = nn.SequentialCell([model, to_model])
    names = [p.name for p in both.trainable_params()]
    assert len(names) == len(set(names)) == 6
    nn.Adam(both.trainable_params())  # MindSpore's optimizers refuse duplicate names


def test_transfer_parametrizations_and_params_right_inverse(mode):
    model = nn.Dense(5, 5)
    parametrize.register_parametrization(model, "weight", Double())
    hold_weight = weight(model)
    to_model = nn.Dense(5, 5)
    parametrize.transfer_parametrizations_and_params(model, to_model)
    assert_transferred(model, to_model)
    np.testing.assert_array_equal(hold_weight, weight(model))


def test_transfer_parametrizations_and_params_single_param(mode):
    model = nn.Dense(5, 5, has_bias=True)
    for name in ("weight", "bias"):
        for p in (AddOne(), Double(), MinusOne()):
            parametrize.register_parametrization(model, name, p)
    to_model = nn.Dense(5, 5, has_bias=True)
    parametrize.transfer_parametrizations_and_params(model, to_model, "weight")
    assert_transferred(model, to_model)
    assert "bias" not in to_model.parametrizations


def test_transfer_parametrizations_and_params_many_to_one(mode):
    model = nn.Dense(3, 3)
    parametrize.register_parametrization(model, "weight", RankOne())
    parametrize.register_parametrization(model, "weight", Double())
    hold_weight = weight(model)
    to_model = nn.Dense(3, 3)
    parametrize.transfer_parametrizations_and_params(model, to_model)
    assert_transferred(model, to_model, originals=("original0", "original1"))
    np.testing.assert_array_equal(weight(to_model), weight(model))
    np.testing.assert_array_equal(hold_weight, weight(model))

    model.test_param = Parameter(Tensor(np.random.default_rng(1).standard_normal((3, 3)).astype(np.float32)),
                                 name="test_param")
    assert not hasattr(to_model, "test_param")
    parametrize.register_parametrization(model, "test_param", RankOne())
    hold_test_param = model.test_param.asnumpy()
    parametrize.transfer_parametrizations_and_params(model, to_model, "test_param")
    assert_transferred(model, to_model, "test_param", ("original0", "original1"))
    np.testing.assert_array_equal(hold_test_param, model.test_param.asnumpy())


def test_register_parametrization_no_grad(mode):
    class SplitAndCat(nn.Cell):
        def right_inverse(self, x):
            return ops.split(x, x.shape[1] // 2)

        def construct(self, x0, x1):
            return ops.cat((x0, x1))

    model = nn.Dense(8, 8)
    model.weight.requires_grad = False
    parametrize.register_parametrization(model, "weight", SplitAndCat())
    assert not model.parametrizations.weight.original0.requires_grad
    assert not model.parametrizations.weight.original1.requires_grad
    params = model.trainable_params()
    assert len(params) == 1 and params[0] is model.bias


# --- orthogonal (torch.nn.utils.parametrizations.orthogonal) -----------------------------------


def assert_is_orthogonal(X):
    n, k = X.shape[-2], X.shape[-1]
    if n < k:
        X = np.swapaxes(X, -1, -2)
        n, k = k, n
    eps = 10 * n * np.finfo(np.float32).eps
    np.testing.assert_allclose(np.swapaxes(X, -1, -2) @ X, np.eye(k), atol=eps, rtol=0)


def assert_weight_allclose_Q(w, W):
    wide = W.shape[-2] < W.shape[-1]
    if wide:
        W = W.T
    Q, R = np.linalg.qr(W.astype(np.float64))
    Q = Q * np.sign(np.diag(R))[None, :]
    if wide:
        Q = Q.T
    np.testing.assert_allclose(Q, w, atol=1e-5, rtol=0)


class NormLoss(nn.Cell):
    def __init__(self, m, x):
        super().__init__(auto_prefix=False)
        self.m = m
        self.x = x

    def construct(self):
        y = self.m(self.x)
        return ops.sqrt((y * y).sum())


@pytest.mark.parametrize("shape", [(4, 4), (5, 3), (3, 5)], ids=["square", "tall", "wide"])
def test_orthogonal_parametrization(mode, shape):
    rng = np.random.default_rng(7)
    x = Tensor(rng.standard_normal((3, shape[1])).astype(np.float32))
    for parametrization in ("matrix_exp", "cayley", "householder"):
        for use_trivialization in (False, True):
            can_initialize = use_trivialization or parametrization == "householder"
            m = nn.Dense(shape[1], shape[0])  # weight (out, in) = shape, like torch's Linear(*shape[::-1])
            w_init = m.weight.asnumpy().copy()
            wide = w_init.shape[-2] < w_init.shape[-1]
            orthogonal(m, "weight", parametrization, use_trivialization=use_trivialization)
            w = weight(m)  # compiled in GRAPH_MODE; the reads below are eager (compile time)
            assert w.shape == w_init.shape
            assert_is_orthogonal(w)
            if can_initialize:
                assert_weight_allclose_Q(w, w_init)

            X = rng.standard_normal(w.shape)
            w_new = np.linalg.qr(X.T if wide else X)[0]
            w_new = (w_new.T if wide else w_new).astype(np.float32)
            if can_initialize:
                m.weight = Tensor(w_new)
                np.testing.assert_allclose(m.weight.asnumpy(), w_new, atol=1e-5, rtol=0)
            else:
                with pytest.raises(NotImplementedError, match="assign to the matrix exponential or the Cayley"):
                    m.weight = Tensor(w_new)

            w_new = rng.standard_normal(w.shape).astype(np.float32)
            if can_initialize:
                m.weight = Tensor(w_new)
                assert_weight_allclose_Q(m.weight.asnumpy(), w_new)
            else:
                with pytest.raises(NotImplementedError, match="assign to the matrix exponential or the Cayley"):
                    m.weight = Tensor(w_new)

            original = m.parametrizations.weight.original
            params = m.trainable_params()
            assert any(p is original for p in params) and len(params) == 2  # base is not trainable
            for _ in range(2):
                grads = sgd_step(NormLoss(m, x), params, lr=0.1)
                grad = grads[[p is original for p in params].index(True)]
                assert np.abs(grad).sum() > 0
                zeros_grad = np.triu(grad, 1) if grad.shape[-2] >= grad.shape[-1] else np.tril(grad, -1)
                np.testing.assert_array_equal(zeros_grad, 0)
                np.testing.assert_array_equal(np.diagonal(grad), 0)
                assert_is_orthogonal(m.weight.asnumpy())


def test_orthogonal_errors(mode):
    m = nn.Dense(4, 3)
    with pytest.raises(ValueError, match="has to be one of"):
        orthogonal(m, "weight", "foo")
    with pytest.raises(ValueError, match="expected a matrix"):
        orthogonal(m, "bias")
    orthogonal(m, "weight")
    with pytest.raises(ValueError, match="matrices of shape"):
        m.weight = Tensor(np.random.default_rng(0).standard_normal((5, 5)).astype(np.float32))
    parametrize.remove_parametrizations(m, "weight")
    assert_is_orthogonal(m.weight.asnumpy())


def test_weight_norm_deepcopy(mode):
    m = weight_norm(nn.Dense(4, 5))
    m2 = copy.deepcopy(m)
    x = Tensor(np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32))
    np.testing.assert_array_equal(m(x).asnumpy(), m2(x).asnumpy())


def test_weight_norm_parametrization(mode):
    # TestNNParametrizationDevice: this library's weight norm, g's shapes as torch's original0.
    x = Tensor(np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32))
    m = nn.Dense(4, 5)
    expected = m(x).asnumpy()
    m = weight_norm(m)
    assert m.weight_v.shape == m.weight.shape and m.weight_g.shape == (5, 1)
    np.testing.assert_allclose(m(x).asnumpy(), expected, atol=1e-6)
    parametrize.remove_parametrizations(m, "weight")
    assert not parametrize.is_parametrized(m)
    np.testing.assert_allclose(m(x).asnumpy(), expected, atol=1e-6)
    m = weight_norm(m, dim=1)
    assert m.weight_g.shape == (1, 4)
    np.testing.assert_allclose(m(x).asnumpy(), expected, atol=1e-6)
    m = nn.Dense(4, 5)
    expected = m(x).asnumpy()
    m = weight_norm(m, dim=None)
    np.testing.assert_allclose(m(x).asnumpy(), expected, atol=1e-6)


# --------------------------------------------------------------------------- beyond torch's file


def test_many_originals(mode):
    """The limit the issue asks about: 12 originals go through the graph parser and train."""
    n = 12

    class SumN(nn.Cell):
        def construct(self, *xs):
            out = xs[0]
            for x in xs[1:]:
                out = out + x
            return out

        def right_inverse(self, w):
            return tuple(w / n for _ in range(n))

    model = nn.Dense(3, 3)
    w0 = model.weight.asnumpy().copy()
    parametrize.register_parametrization(model, "weight", SumN())
    originals = model.parametrizations.weight.originals()
    assert [p.name for p in originals] == [f"parametrizations.weight.original{i}" for i in range(n)]
    np.testing.assert_allclose(weight(model), w0, atol=1e-6)
    grads = ms.grad(WeightTBias(model), None, list(originals))()
    expected = np.outer(np.ones(3), model.bias.asnumpy()).T  # d sum(W^T b) / dW = b 1^T
    for g in grads:
        np.testing.assert_allclose(g.asnumpy(), expected, rtol=1e-6)


def test_assignment_reaches_compiled_graphs(mode):
    """cell.weight = Y after a compiled step: the next compiled step uses the new originals."""
    model = nn.Dense(3, 3)
    parametrize.register_parametrization(model, "weight", Double())
    read = ReadWeight(model)
    read()
    target = np.arange(9, dtype=np.float32).reshape(3, 3)
    model.weight = Tensor(target)
    np.testing.assert_allclose(read().asnumpy(), target)
    np.testing.assert_allclose(model.parametrizations.weight.original.asnumpy(), target / 2)


def test_error_names_the_path(mode):
    net = nn.SequentialCell([nn.Dense(3, 3), nn.Dense(3, 3)])
    parametrize.register_parametrization(net[1], "weight", Skew())
    with pytest.raises(RuntimeError, match=r"Dense cell '1', tensor 'weight'.*Skew.*right_inverse"):
        net[1].weight = Tensor(np.zeros((3, 3), np.float32))


def test_deprecated_parametrizations_call():
    import ms_weightnorm

    layer = weight_norm(nn.Dense(2, 2))
    with pytest.warns(DeprecationWarning, match="parametrizations_of"):
        found = ms_weightnorm.parametrizations(layer)
    assert found == ms_weightnorm.parametrizations_of(layer) and list(found) == ["weight"]
    assert ms_weightnorm.parametrizations.orthogonal is orthogonal
