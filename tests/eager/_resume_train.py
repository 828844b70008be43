"""A tiny deterministic training run for the exact-resume checkpoint test.

`test_checkpoint.py` runs steps 0-10 and 0-5 in its own process; the resumed
half runs here in a fresh interpreter:

    python -m tests.eager._resume_train CHECKPOINT_IN CHECKPOINT_OUT

which loads the 5-step checkpoint into a differently seeded model, trains
steps 5-10 and saves the result.
"""

import sys

import equinox as eqx
import jax
import numpy as np
import optax

from blox import eager as nn

BATCH = 8
OPTIMIZER = optax.adam(1e-2)


class ResumeNet(nn.Module):
    """Conv -> BatchNorm -> max pool -> Dropout -> Linear on (batch, 8, 8, 1)."""

    def __init__(self, seed):
        super().__init__()
        self.conv = nn.Conv(1, 4, kernel_size=(3, 3), seed=seed)
        self.bn = nn.BatchNorm(4)
        self.drop = nn.Dropout(0.3, seed=seed + 1)
        self.fc = nn.Linear(4 * 4 * 4, 10, seed=seed + 2)

    def __call__(self, x):
        x = nn.max_pool(jax.nn.relu(self.bn(self.conv(x))), (2, 2))
        return self.fc(self.drop(x.reshape(x.shape[0], -1)))


def batch(step):
    """The minibatch of `step`: the same in every process."""
    rng = np.random.default_rng(step)
    x = rng.standard_normal((BATCH, 8, 8, 1)).astype(np.float32)
    return x, rng.integers(0, 10, BATCH)


@nn.filter_jit
def train_step(model, opt_state, x, y):
    def loss_fn(model):
        return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

    grads = nn.filter_grad(loss_fn)(model)
    updates, opt_state = OPTIMIZER.update(grads, opt_state, nn.trainable(model))
    return eqx.apply_updates(model, updates), opt_state


def train(model, opt_state, start, stop):
    for step in range(start, stop):
        model, opt_state = train_step(model, opt_state, *batch(step))
    return model, opt_state


def fresh(seed=0):
    model = ResumeNet(seed)
    return model, OPTIMIZER.init(nn.trainable(model))


def main(source, target):
    like, template = fresh(seed=100)  # values differ: everything must come from the file
    model, opt_state, step = nn.load(source, like=like, opt_state=template)
    model, opt_state = train(model, opt_state, step, 10)
    nn.save(target, model, opt_state, step=10)


if __name__ == "__main__":
    main(*sys.argv[1:3])
