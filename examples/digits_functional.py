"""The digits CNN again, written with the functional core (`import blox as bx`).

The same task and network as `digits_cnn.py`, without objects that hold state.
It shows the core API end to end:

* a `bx.Graph` that names every part of the model, and one `bx.Rng` whose seed
  and counter live in the parameters, shared by the initialisers and the
  dropout layers;
* a model written as a `bx.Module` whose call is
  `logits, params = model(params, x, is_training=...)`;
* the first call creating every parameter, `bx.display` printing the tree,
  and `params.locked()` so that a later call cannot create new ones by mistake;
* a training step under plain `jax.jit`: `params.split()` separates the
  trainable arrays from the state (BatchNorm statistics, the RNG), `jax.grad`
  differentiates the trainable part, optax updates it, and `merge` puts the
  updated state (which the model returned) back next to it.

Run it (about half a minute on two CPU cores):

    pip install -e ".[examples]"
    python examples/digits_functional.py [--out examples/out] [--fast]

It prints the parameter tree, the test accuracy (at least 97%, typically about
99%) and the time taken, writes `digits_functional.png` into the output folder,
and exits non-zero if the accuracy misses the target. `--fast` (or
`BLOX_EXAMPLES_FAST=1`) trains for a few steps on a small subset and skips the
target; CI uses it.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _digits import TARGET_ACCURACY, load_data, minibatches, parse_args, plot_history
from tqdm import tqdm

import blox as bx


class DigitsCNN(bx.Module):
    """Two 3x3 convolutions with batch norm, a 2x2 max pool, and a dropout MLP head.

    Maps images `(batch, 8, 8, 1)` to class logits `(batch, 10)`. `rng` feeds
    the initialisers and the dropout masks.
    """

    def __init__(self, graph, rng):
        super().__init__(graph)
        self.conv1 = bx.Conv(graph / "conv1", (3, 3), 32, rng=rng)
        self.bn1 = bx.BatchNorm(graph / "bn1")
        self.conv2 = bx.Conv(graph / "conv2", (3, 3), 64, rng=rng)
        self.bn2 = bx.BatchNorm(graph / "bn2")
        self.drop1 = bx.Dropout(graph / "drop1", 0.25, rng=rng)
        self.fc1 = bx.Linear(graph / "fc1", 128, rng=rng)
        self.drop2 = bx.Dropout(graph / "drop2", 0.5, rng=rng)
        self.fc2 = bx.Linear(graph / "fc2", 10, rng=rng)

    def __call__(self, params, x, is_training=True):
        """Returns `(logits, params)`; `params` carries the updated statistics and RNG."""
        x, params = self.conv1(params, x)
        x, params = self.bn1(params, x, is_training=is_training)
        x = jax.nn.relu(x)  # (batch, 8, 8, 32)
        x, params = self.conv2(params, x)
        x, params = self.bn2(params, x, is_training=is_training)
        x = bx.max_pool(jax.nn.relu(x), (2, 2))  # (batch, 4, 4, 64)
        x, params = self.drop1(params, x.reshape(x.shape[0], -1), is_training=is_training)
        x, params = self.fc1(params, x)
        x, params = self.drop2(params, jax.nn.relu(x), is_training=is_training)
        return self.fc2(params, x)


def make_train_step(model, optimizer):
    """A `jax.jit`-compiled step: one Adam update; returns `(params, opt_state, loss)`."""

    @jax.jit
    def train_step(params, opt_state, x, y):
        trainable, state = params.split()  # by Param.trainable

        def loss_fn(trainable):
            logits, new_params = model(trainable.merge(state), x, is_training=True)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return loss, new_params

        (loss, new_params), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
        updates, opt_state = optimizer.update(grads, opt_state, trainable)
        trainable = optax.apply_updates(trainable, updates)
        # The forward pass advanced the RNG counter and the running statistics.
        # Merging both updates into `params` keeps its order of entries, so the
        # returned pytree has the structure of the input and the step compiles once.
        _, new_state = new_params.split()
        return params.merge(new_state).merge(trainable), opt_state, loss

    return train_step


def make_accuracy(model):
    """A compiled function: the fraction of `x` classified as `y`, in inference mode."""

    @jax.jit
    def accuracy(params, x, y):
        logits, _ = model(params, x, is_training=False)
        return jnp.mean(jnp.argmax(logits, axis=-1) == y)

    return accuracy


def main():
    """Builds the model, trains, evaluates, plots, and checks the accuracy."""
    args = parse_args(__doc__.splitlines()[0])
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    x_train, y_train, x_test, y_test = load_data(args.fast)
    print(f"train {x_train.shape}, test {x_test.shape}")

    root = bx.Graph("digits")
    rng = bx.Rng(root / "rng")
    model = DigitsCNN(root / "cnn", rng=rng)

    # The first call creates every parameter. In inference mode it leaves the
    # BatchNorm statistics at their initial values and draws no dropout keys.
    params = rng.seed(bx.Params(), seed=0)
    _, params = model(params, jnp.zeros((1, 8, 8, 1)), is_training=False)
    params = params.locked()
    bx.display(root, params)
    init_counter = int(rng.get_counter(params))  # keys the initialisers drew

    optimizer = optax.adam(1e-3)
    opt_state = optimizer.init(params.split()[0])
    train_step = make_train_step(model, optimizer)
    accuracy = make_accuracy(model)
    batch_rng = np.random.default_rng(0)  # the same minibatch order on every run

    history = {"loss": [], "accuracy": []}
    steps_per_epoch = len(x_train) // args.batch_size
    with tqdm(total=args.epochs * steps_per_epoch, unit="step") as progress:
        for epoch in range(args.epochs):
            losses = []
            for x, y in minibatches(x_train, y_train, args.batch_size, batch_rng):
                params, opt_state, loss = train_step(params, opt_state, x, y)
                losses.append(loss)
                progress.update()
            history["loss"].append(float(jnp.mean(jnp.stack(losses))))
            history["accuracy"].append(float(accuracy(params, x_test, y_test)))
            progress.set_postfix(
                epoch=epoch + 1,
                loss=f"{history['loss'][-1]:.4f}",
                test_acc=f"{history['accuracy'][-1]:.3f}",
            )

    test_accuracy = history["accuracy"][-1]
    elapsed = time.perf_counter() - start
    # Each training step drew one key per dropout layer, all from the one Rng.
    print(f"dropout keys drawn: {int(rng.get_counter(params)) - init_counter}")
    print(f"test accuracy: {100 * test_accuracy:.2f}% ({len(x_test)} images)")
    print(f"time: {elapsed:.1f} s")

    plot_path = args.out / "digits_functional.png"
    plot_history(history, plot_path, "blox.core CNN on scikit-learn digits")
    print(f"plot: {plot_path}")

    if not args.fast and test_accuracy < TARGET_ACCURACY:
        raise SystemExit(
            f"FAILED: test accuracy {test_accuracy:.4f} is below the target {TARGET_ACCURACY}"
        )


if __name__ == "__main__":
    main()
