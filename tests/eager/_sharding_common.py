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


# A pre-norm Transformer block: self-attention and an MLP, each with a residual.
SEQ, EMBED, HEADS, MLP = 5, 8, 2, 16
RULES_BLOCK = [("embed", None), ("heads", "model"), ("kv", None), ("mlp", "model")]


class Block(nn.Module):
    """`(batch, SEQ, EMBED)` -> the same; heads and hidden units carry logical names."""

    def __init__(self):
        super().__init__()
        self.ln1 = nn.LayerNorm(EMBED, seed=10)
        # No attention biases: the key bias has a zero gradient in exact
        # arithmetic, and Adam would turn rounding noise there into full steps.
        self.attn = nn.MultiHeadAttention(
            EMBED,
            HEADS,
            use_bias=False,
            kernel_sharding=("embed", "heads", "kv"),
            out_kernel_sharding=("heads", "kv", "embed"),
            seed=11,
        )
        self.ln2 = nn.LayerNorm(EMBED, seed=12)
        self.fc1 = nn.Linear(EMBED, MLP, kernel_sharding=("embed", "mlp"), bias_sharding=("mlp",))
        self.drop = nn.Dropout(0.1, seed=13)
        self.fc2 = nn.Linear(MLP, EMBED, kernel_sharding=("mlp", "embed"), seed=14)

    def __call__(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(self.drop(jax.nn.relu(self.fc1(self.ln2(x)))))


def make_block():
    nn.manual_seed(15)
    return Block()


def make_sequences():
    rng = np.random.RandomState(1)
    x = rng.normal(size=(BATCH // 4, SEQ, EMBED)).astype(np.float32)
    return x, np.roll(x, 1, axis=1)  # learn to shift each sequence by one step
