"""Models, data and reference formulas shared by the state-threading tests."""

import jax
import jax.numpy as jnp
import numpy as np

from blox import eager as nn

MOMENTUM = 0.9


class Net(nn.Module):
    """The spec's example network."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv(1, 8, kernel_size=(3, 3))
        self.bn = nn.BatchNorm(8)
        self.drop = nn.Dropout(0.25)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def __call__(self, x):
        x = jax.nn.relu(self.bn(self.conv(x)))
        x = nn.max_pool(x, (2, 2))
        return self.fc(self.drop(x.reshape(x.shape[0], -1)))


def randn(seed, *shape):
    """Test data from NumPy: no per-shape XLA compilation of random kernels."""
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def templates_dataset(n=200, noise=0.5):
    """10 classes of 8x8x1 images: a fixed random template per class plus noise."""
    labels = np.arange(n) % 10
    x = randn(0, 10, 8, 8, 1)[labels] + noise * randn(1, n, 8, 8, 1)
    return x, jnp.asarray(labels)


def small_model(seed=0):
    """Linear -> BatchNorm -> Dropout -> Linear, every stateful kind once."""
    return nn.Sequential(
        nn.Linear(3, 6, seed=seed),
        nn.BatchNorm(6),
        jax.nn.relu,
        nn.Dropout(0.5, seed=seed + 1),
        nn.Linear(6, 2, seed=seed + 2),
    )


def dropout_reference(drop, x, counter):
    """The core formula for one training call of `drop` at RNG `counter`."""
    key = jax.random.fold_in(jax.random.wrap_key_data(drop.rng.seed), counter)
    keep = 1.0 - drop.rate
    return x * jax.random.bernoulli(key, keep, x.shape) / keep


def batchnorm_stats_reference(x, running_mean, running_var):
    """Running statistics after one training call, in float64."""
    x = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
    mean, var = x.mean(0), x.var(0)
    return (
        MOMENTUM * np.asarray(running_mean) + (1 - MOMENTUM) * mean,
        MOMENTUM * np.asarray(running_var) + (1 - MOMENTUM) * var,
    )


def concrete_leaves(*trees):
    return all(
        isinstance(leaf, jax.Array) and not isinstance(leaf, jax.core.Tracer)
        for leaf in jax.tree.leaves(trees)
    )


def close(actual, expected, tol=1e-5):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=tol, atol=tol)
