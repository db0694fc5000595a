"""MeanOnlyBatchNorm against a numpy reference: training, inference, running mean, gradients."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn

from ms_weightnorm.layers import MeanOnlyBatchNorm

SHAPES = {"dense": (5, 3), "conv1d": (4, 3, 7), "conv2d": (3, 3, 4, 5)}


def _axes(ndim):
    return (0,) + tuple(range(2, ndim))


def _col(a, ndim):
    return np.asarray(a).reshape((1, -1) + (1,) * (ndim - 2))


@pytest.mark.parametrize("kind", sorted(SHAPES))
def test_training_inference_and_running_mean_match_numpy(mode, kind, rng):
    shape = SHAPES[kind]
    bn = MeanOnlyBatchNorm(3, momentum=0.7)
    bias = rng.normal(size=3).astype(np.float32)
    bn.bias.set_data(Tensor(bias))
    x1 = rng.normal(2.0, 3.0, size=shape).astype(np.float32)
    x2 = rng.normal(-1.0, 1.0, size=shape).astype(np.float32)

    bn.set_train(True)
    running = np.zeros(3)
    for x in (x1, x2):
        out = bn(Tensor(x)).asnumpy()
        mean = x.mean(_axes(x.ndim))
        np.testing.assert_allclose(out, x - _col(mean, x.ndim) + _col(bias, x.ndim), atol=1e-5)
        running = 0.7 * running + 0.3 * mean
        np.testing.assert_allclose(bn.moving_mean.asnumpy(), running, rtol=1e-5, atol=1e-6)

    bn.set_train(False)
    out = bn(Tensor(x1)).asnumpy()
    np.testing.assert_allclose(out, x1 - _col(running, x1.ndim) + _col(bias, x1.ndim), atol=1e-5)
    np.testing.assert_allclose(bn.moving_mean.asnumpy(), running, rtol=1e-5, atol=1e-6)  # no update


def test_no_division_by_the_std(rng):
    bn = MeanOnlyBatchNorm(2).set_train(True)
    x = rng.normal(0.0, 5.0, size=(50, 2)).astype(np.float32)
    out = bn(Tensor(x)).asnumpy()
    np.testing.assert_allclose(out.std(0), x.std(0), rtol=1e-5)


@pytest.mark.parametrize("kind", ["dense", "conv2d"])
def test_gradients(mode, kind, rng):
    shape = SHAPES[kind]
    bn = MeanOnlyBatchNorm(3).set_train(True)
    x = Tensor(rng.normal(size=shape).astype(np.float32))
    w_np = rng.normal(size=shape).astype(np.float32)
    w = Tensor(w_np)

    def loss(a):
        return (bn(a) * w).sum()
    grad_fn = ms.grad(loss, grad_position=0, weights=bn.trainable_params())
    gx, (gbias,) = grad_fn(x)
    axes = _axes(len(shape))
    # d/dx of sum(w * (x - mean(x))) = w - mean(w), per feature.
    np.testing.assert_allclose(gx.asnumpy(), w_np - w_np.mean(axes, keepdims=True), atol=1e-5)
    np.testing.assert_allclose(gbias.asnumpy(), w_np.sum(axes), rtol=1e-5)
    assert [p.name for p in bn.trainable_params()] == ["bias"]


def test_use_batch_statistics_overrides_the_training_flag(rng):
    x = rng.normal(3.0, 1.0, size=(6, 2)).astype(np.float32)
    always = MeanOnlyBatchNorm(2, use_batch_statistics=True).set_train(False)
    np.testing.assert_allclose(always(Tensor(x)).asnumpy(), x - x.mean(0), atol=1e-5)
    np.testing.assert_array_equal(always.moving_mean.asnumpy(), [0.0, 0.0])  # only training updates it
    never = MeanOnlyBatchNorm(2, use_batch_statistics=False).set_train(True)
    np.testing.assert_allclose(never(Tensor(x)).asnumpy(), x, atol=1e-6)


def test_save_and_load_checkpoint(tmp_path, rng):
    bn = MeanOnlyBatchNorm(4).set_train(True)
    bn.bias.set_data(Tensor(rng.normal(size=4).astype(np.float32)))
    bn(Tensor(rng.normal(1.0, 1.0, size=(8, 4, 3)).astype(np.float32)))
    path = str(tmp_path / "mobn.ckpt")
    ms.save_checkpoint(bn, path)
    fresh = MeanOnlyBatchNorm(4)
    not_loaded, _ = ms.load_param_into_net(fresh, ms.load_checkpoint(path))
    assert not_loaded == []
    for name in ("bias", "moving_mean"):
        np.testing.assert_array_equal(getattr(fresh, name).asnumpy(), getattr(bn, name).asnumpy())
    x = Tensor(rng.normal(size=(2, 4, 3)).astype(np.float32))
    np.testing.assert_array_equal(fresh.set_train(False)(x).asnumpy(), bn.set_train(False)(x).asnumpy())


def test_trains_inside_a_graph_mode_step(rng):
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        net = nn.SequentialCell([nn.Dense(3, 4), MeanOnlyBatchNorm(4), nn.ReLU(), nn.Dense(4, 1)])
        x = Tensor(rng.normal(size=(16, 3)).astype(np.float32))
        y = Tensor(rng.normal(size=(16, 1)).astype(np.float32))
        step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.MSELoss()), nn.SGD(net.trainable_params(), 0.05))
        step.set_train(True)
        bias = net[1].bias.asnumpy().copy()
        losses = [float(step(x, y).asnumpy()) for _ in range(5)]
        assert losses[-1] < losses[0]
        assert not np.array_equal(net[1].bias.asnumpy(), bias)
        assert np.abs(net[1].moving_mean.asnumpy()).max() > 0
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="num_features"):
        MeanOnlyBatchNorm(0)
    with pytest.raises(ValueError, match="momentum"):
        MeanOnlyBatchNorm(3, momentum=1.5)
    with pytest.raises(ValueError, match="use_batch_statistics"):
        MeanOnlyBatchNorm(3, use_batch_statistics="yes")
    with pytest.raises(ValueError, match=r"shape \(2, 4\).*\(N, 3, \.\.\.\)"):
        MeanOnlyBatchNorm(3).set_train(True)(Tensor(np.ones((2, 4), np.float32)))
    with pytest.raises(ValueError, match="axis 1"):
        MeanOnlyBatchNorm(3).set_train(False)(Tensor(np.ones(3, np.float32)))
