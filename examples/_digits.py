"""Data, batching, plotting and options shared by the two digits examples.

`digits_cnn.py` (the eager API) and `digits_functional.py` (the core API) solve
the same task, so everything but the model and its training step lives here.
"""

import argparse
import os
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

matplotlib.use("Agg")  # write files only, never open a window

TARGET_ACCURACY = 0.97


def load_data(fast):
    """The digits as `(N, 8, 8, 1)` floats in [0, 1] and int labels, split 80/20.

    The split is stratified and fixed (`random_state=0`). In fast mode only a
    small subset is kept.
    """
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., None]
    labels = digits.target.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.2, stratify=labels, random_state=0
    )
    if fast:
        x_train, y_train, x_test, y_test = x_train[:256], y_train[:256], x_test[:128], y_test[:128]
    return x_train, y_train, x_test, y_test


def minibatches(x, y, batch_size, rng):
    """Yields shuffled `(x, y)` batches of exactly `batch_size` rows (drops the rest).

    Dropping the ragged last batch keeps every batch the same shape, so the
    training step compiles once.
    """
    order = rng.permutation(len(x))
    for start in range(0, len(x) - batch_size + 1, batch_size):
        idx = order[start : start + batch_size]
        yield x[idx], y[idx]


def plot_history(history, path, title):
    """Saves the per-epoch training loss and test accuracy as a two-panel PNG."""
    epochs = np.arange(1, len(history["loss"]) + 1)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax_loss.plot(epochs, history["loss"], marker="o")
    ax_loss.set(xlabel="epoch", ylabel="training cross-entropy", yscale="log")
    ax_acc.plot(epochs, 100 * np.asarray(history["accuracy"]), marker="o", color="C1")
    ax_acc.axhline(100 * TARGET_ACCURACY, color="grey", linestyle="--", label="target")
    ax_acc.set(xlabel="epoch", ylabel="test accuracy (%)")
    ax_acc.legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(description):
    """Command-line options; `BLOX_EXAMPLES_FAST=1` in the environment also sets `--fast`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--fast", action="store_true", help="a few steps, for CI")
    args = parser.parse_args()
    args.fast = args.fast or os.environ.get("BLOX_EXAMPLES_FAST") == "1"
    if args.fast:
        args.epochs = 2
    return args
