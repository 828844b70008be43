"""The model, data and training step shared by the sharding checks.

Imported by `_sharding_check.py` (one process, 8 host devices) and
`_distributed_worker.py` (two processes, 4 host devices each), so both train
exactly the same thing. Not a test module: it runs only in those subprocesses.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from blox import eager as nn

BATCH, FEATURES, HIDDEN, OUT, STEPS = 32, 6, 16, 4, 10
MOMENTUM = 0.9

# Logical axis names the layers carry, and three ways to map them onto a mesh.
RULES_DATA = [("embed", None), ("mlp", None)]  # params replicated, batch split
RULES_MODEL = [("embed", None), ("mlp", "model")]  # hidden units split over 'model'
RULES_FSDP = [("embed", None), ("mlp", "data")]  # params split over the data axis too

OPTIMIZER = optax.adam(1e-2)
TRACES = []  # one entry per trace of `train_step`


def auto_mesh(shape, names, devices=None):
    """A mesh whose axes let XLA propagate shardings (layers need no out_sharding)."""
    auto = (jax.sharding.AxisType.Auto,) * len(names)
    return jax.make_mesh(shape, names, axis_types=auto, devices=devices)


def make_model():
    # No bias before BatchNorm: its gradient is zero in exact arithmetic, and Adam
    # would turn rounding noise there into full-size steps that differ per layout.
    return nn.Sequential(
        nn.Linear(FEATURES, HIDDEN, use_bias=False, kernel_sharding=("embed", "mlp"), seed=0),
        nn.BatchNorm(HIDDEN, momentum=MOMENTUM, seed=1),
        nn.Dropout(0.25, seed=2),
        nn.Linear(HIDDEN, OUT, kernel_sharding=("mlp", "embed"), seed=3),
    )


def make_data():
    rng = np.random.RandomState(0)
    x = rng.normal(size=(BATCH, FEATURES)).astype(np.float32)
    y = rng.normal(size=(BATCH, OUT)).astype(np.float32)
    return x, y


@nn.filter_jit
def train_step(model, opt_state, x, y):
    TRACES.append(jax.tree.structure(model))

    def loss_fn(model):
        return jnp.mean((model(x) - y) ** 2)

    loss, grads = nn.filter_value_and_grad(loss_fn)(model)
    updates, opt_state = OPTIMIZER.update(grads, opt_state, nn.trainable(model))
    return eqx.apply_updates(model, updates), opt_state, loss


def train(model, opt_state, x, y, on_step=None):
    for _ in range(STEPS):
        model, opt_state, _ = train_step(model, opt_state, x, y)
        if on_step is not None:
            on_step(model, opt_state)
    return model, opt_state
