"""Data-parallel training on every device there is, with the PyTorch-style API.

An MLP (Linear, BatchNorm, Dropout, Linear) learns scikit-learn's handwritten
digits with each batch split over all devices along a mesh axis `'data'`:

* `jax.make_mesh` builds the mesh; `nn.shard` places the model (replicated
  here: no param carries sharding names) and the optimizer state on it;
* each batch goes onto the mesh split by rows (`jax.device_put` with
  `NamedSharding(mesh, P('data'))`; with several processes each would pass
  only its rows to `jax.make_array_from_process_local_data`);
* the same `nn.filter_jit` step as on one device: XLA inserts the gradient
  all-reduce, BatchNorm's batch statistics are those of the whole batch, and
  the step compiles once because the state it writes back keeps its placement.

Run it:

    pip install -e ".[examples]"
    python examples/data_parallel.py [--out examples/out] [--fast]

On a machine with one CPU, simulate 8 devices with
`XLA_FLAGS=--xla_force_host_platform_device_count=8`. `--fast` (or
`BLOX_EXAMPLES_FAST=1`, as CI runs it) trains a few steps on a subset, skips
the accuracy target, and simulates 8 CPU devices unless XLA_FLAGS already sets
a count. It prints the test accuracy (at least 97% in a full run), writes
`data_parallel.png`, and exits non-zero if the accuracy misses the target or
a param left its placement.
"""

import os
import sys

if (
    os.environ.get("BLOX_EXAMPLES_FAST") == "1" or "--fast" in sys.argv
) and "device_count" not in os.environ.get("XLA_FLAGS", ""):
    # Before JAX starts: it fixes the number of host devices then.
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count=8".strip()

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from _digits import TARGET_ACCURACY, load_data, minibatches, parse_args, plot_history
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from blox import eager as nn


class MLP(nn.Module):
    """`(batch, 64)` pixels -> `(batch, 10)` logits."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 256, use_bias=False)  # BatchNorm brings its own bias
        self.bn = nn.BatchNorm(256)
        self.drop = nn.Dropout(0.2)
        self.fc2 = nn.Linear(256, 10)

    def __call__(self, x):
        return self.fc2(self.drop(jax.nn.relu(self.bn(self.fc1(x)))))


def make_train_step(optimizer):
    """The training step: nothing in it knows about devices."""

    @nn.filter_jit
    def train_step(model, opt_state, x, y):
        def loss_fn(model):
            logits = model(x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = nn.filter_value_and_grad(loss_fn)(model)
        updates, opt_state = optimizer.update(grads, opt_state, nn.trainable(model))
        return eqx.apply_updates(model, updates), opt_state, loss

    return train_step


@nn.filter_jit
def accuracy(model, x, y):
    """Fraction of `x` classified as `y`. Call it on a model in eval mode."""
    return jnp.mean(jnp.argmax(model(x), axis=-1) == y)


def main():
    """Trains data-parallel, evaluates, plots, and checks placements and accuracy."""
    args = parse_args(__doc__.splitlines()[0])
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    devices = jax.device_count()
    mesh = jax.make_mesh((devices,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    rows = NamedSharding(mesh, P("data"))
    batch_size = args.batch_size - args.batch_size % devices  # rows split evenly
    print(f"{devices} devices, {batch_size // devices} rows of each batch per device")

    x_train, y_train, x_test, y_test = load_data(args.fast)
    x_train, x_test = x_train.reshape(len(x_train), -1), x_test.reshape(len(x_test), -1)

    nn.manual_seed(0)
    model = nn.shard(MLP(), mesh)
    optimizer = optax.adam(1e-3)
    opt_state = nn.shard(optimizer.init(nn.trainable(model)), mesh)
    placements = {name: value.sharding for name, value in model.state_dict().items()}
    train_step = make_train_step(optimizer)
    rng = np.random.default_rng(0)

    history = {"loss": [], "accuracy": []}
    usable = len(x_test) - len(x_test) % devices
    test_x, test_y = (
        jax.device_put(x_test[:usable], rows),
        jax.device_put(y_test[:usable], rows),
    )
    for epoch in range(args.epochs):
        model.train()
        losses = []
        for x, y in minibatches(x_train, y_train, batch_size, rng):
            x, y = jax.device_put(x, rows), jax.device_put(y, rows)
            model, opt_state, loss = train_step(model, opt_state, x, y)
            losses.append(loss)
        history["loss"].append(float(jnp.mean(jnp.stack(losses))))
        history["accuracy"].append(float(accuracy(model.eval(), test_x, test_y)))
        print(f"epoch {epoch + 1}: loss {history['loss'][-1]:.4f}")

    model.eval()
    test_accuracy = float(accuracy(model, test_x, test_y))
    print(f"test accuracy: {100 * test_accuracy:.2f}% ({usable} images)")
    print(f"time: {time.perf_counter() - start:.1f} s")
    plot_path = args.out / "data_parallel.png"
    plot_history(history, plot_path, f"blox.eager MLP, data parallel over {devices} devices")
    print(f"plot: {plot_path}")

    moved = [n for n, v in model.state_dict().items() if v.sharding != placements[n]]
    if moved:
        raise SystemExit(f"FAILED: these arrays left their placement: {moved}")
    if not args.fast and test_accuracy < TARGET_ACCURACY:
        raise SystemExit(
            f"FAILED: test accuracy {test_accuracy:.4f} is below the target {TARGET_ACCURACY}"
        )


if __name__ == "__main__":
    main()
