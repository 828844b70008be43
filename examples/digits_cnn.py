"""A small CNN on scikit-learn's handwritten digits, with the PyTorch-style API.

This is the main blox demo. It shows `blox.eager` end to end on real data that
ships with scikit-learn (1,797 8x8 grey images of the digits 0-9, no download):

* a model written as an `nn.Module` subclass with `nn.Conv`, `nn.BatchNorm`,
  `nn.Dropout`, `nn.max_pool` and `nn.Linear`;
* a training step compiled with `nn.filter_jit`, gradients from
  `nn.filter_value_and_grad`, and `optax.adam` updating `nn.trainable(model)`.
  Dropout masks and BatchNorm running statistics advance by themselves, inside
  the compiled step, with no state passed around by hand;
* evaluation after `model.eval()` (dropout off, BatchNorm on its running
  statistics);
* a plot of the training curve, and a checkpoint (`nn.save`, a safetensors
  file with the optimizer state and step) read back into a freshly built model
  with `nn.load`, which must score exactly the same.

Run it (about half a minute on two CPU cores):

    pip install -e ".[examples]"
    python examples/digits_cnn.py [--out examples/out] [--fast]

It prints the test accuracy (at least 97%, typically about 99%) and the time
taken, writes `digits_cnn.png` and `digits_cnn.safetensors` into the output folder, and
exits non-zero if the accuracy misses the target or the reloaded model
disagrees. `--fast` (or the environment variable `BLOX_EXAMPLES_FAST=1`) trains
for a few steps on a small subset, skips the accuracy target, and still runs
every step above; CI uses it to keep this file working.
"""

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from _digits import TARGET_ACCURACY, load_data, minibatches, parse_args, plot_history
from tqdm import tqdm

from blox import eager as nn


class DigitsCNN(nn.Module):
    """Two 3x3 convolutions with batch norm, a 2x2 max pool, and a dropout MLP head.

    Maps images `(batch, 8, 8, 1)` to class logits `(batch, 10)`.
    """

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv(1, 32, kernel_size=(3, 3))
        self.bn1 = nn.BatchNorm(32)
        self.conv2 = nn.Conv(32, 64, kernel_size=(3, 3))
        self.bn2 = nn.BatchNorm(64)
        self.drop1 = nn.Dropout(0.25)
        self.fc1 = nn.Linear(4 * 4 * 64, 128)
        self.drop2 = nn.Dropout(0.5)
        self.fc2 = nn.Linear(128, 10)

    def __call__(self, x):
        x = jax.nn.relu(self.bn1(self.conv1(x)))  # (batch, 8, 8, 32)
        x = jax.nn.relu(self.bn2(self.conv2(x)))  # (batch, 8, 8, 64)
        x = nn.max_pool(x, (2, 2))  # (batch, 4, 4, 64)
        x = self.drop1(x.reshape(x.shape[0], -1))
        x = self.drop2(jax.nn.relu(self.fc1(x)))
        return self.fc2(x)


def make_train_step(optimizer):
    """A compiled step: one Adam update on a minibatch; returns the new model and loss.

    `nn.filter_jit` traces arrays and keeps everything else static. Dropout
    counters and BatchNorm statistics that change inside are written back to
    the model passed in, and are in the returned model too.
    """

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


# Checkpointing. `nn.save` writes every array under its state_dict name (RNG
# state included, as raw key data) into a safetensors file, atomically, with
# the optimizer state and step; `nn.load` reads it into a model of the same
# architecture, so training could resume exactly where it stopped.
def save_and_reload(model, opt_state, step, path):
    """Saves a checkpoint to `path`, then loads it into a freshly built `DigitsCNN`.

    The template starts from its own random weights and is left untouched; the
    returned model holds every saved array, the BatchNorm statistics and
    dropout RNG state included. Returns `nn.Checkpoint(model, opt_state, step)`.
    """
    nn.save(path, model, opt_state, step=step)
    like = DigitsCNN().eval()
    return nn.load(path, like=like, opt_state=opt_state)


def main():
    """Trains, evaluates, plots, checkpoints, and checks the results."""
    args = parse_args(__doc__.splitlines()[0])
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    x_train, y_train, x_test, y_test = load_data(args.fast)
    print(f"train {x_train.shape}, test {x_test.shape}")

    nn.manual_seed(0)  # the same initial weights on every run
    model = DigitsCNN()
    optimizer = optax.adam(1e-3)
    opt_state = optimizer.init(nn.trainable(model))
    train_step = make_train_step(optimizer)
    rng = np.random.default_rng(0)  # the same minibatch order on every run

    history = {"loss": [], "accuracy": []}
    steps_per_epoch = len(x_train) // args.batch_size
    with tqdm(total=args.epochs * steps_per_epoch, unit="step") as progress:
        for epoch in range(args.epochs):
            model.train()
            losses = []
            for x, y in minibatches(x_train, y_train, args.batch_size, rng):
                model, opt_state, loss = train_step(model, opt_state, x, y)
                losses.append(loss)
                progress.update()
            history["loss"].append(float(jnp.mean(jnp.stack(losses))))
            history["accuracy"].append(float(accuracy(model.eval(), x_test, y_test)))
            progress.set_postfix(
                epoch=epoch + 1,
                loss=f"{history['loss'][-1]:.4f}",
                test_acc=f"{history['accuracy'][-1]:.3f}",
            )

    model.eval()
    test_accuracy = float(accuracy(model, x_test, y_test))
    elapsed = time.perf_counter() - start
    print(f"test accuracy: {100 * test_accuracy:.2f}% ({len(x_test)} images)")
    print(f"time: {elapsed:.1f} s")

    plot_path = args.out / "digits_cnn.png"
    plot_history(history, plot_path, "blox.eager CNN on scikit-learn digits")
    print(f"plot: {plot_path}")

    checkpoint_path = args.out / "digits_cnn.safetensors"
    steps = args.epochs * steps_per_epoch
    checkpoint = save_and_reload(model, opt_state, steps, checkpoint_path)
    reloaded = checkpoint.model
    reloaded_accuracy = float(accuracy(reloaded, x_test, y_test))
    print(f"checkpoint: {checkpoint_path} (reloaded accuracy {100 * reloaded_accuracy:.2f}%)")

    saved, loaded = (model, opt_state), (reloaded, checkpoint.opt_state)
    same_arrays = checkpoint.step == steps and all(
        np.array_equal(a, b) for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(loaded))
    )
    if reloaded_accuracy != test_accuracy or not same_arrays:
        raise SystemExit(
            f"FAILED: the reloaded model differs (accuracy {reloaded_accuracy:.4f}, "
            f"the trained one {test_accuracy:.4f}; identical arrays: {same_arrays})"
        )
    if not args.fast and test_accuracy < TARGET_ACCURACY:
        raise SystemExit(
            f"FAILED: test accuracy {test_accuracy:.4f} is below the target {TARGET_ACCURACY}"
        )


if __name__ == "__main__":
    main()
