"""A character-level LSTM language model trained on Python's own source code.

It shows recurrent models in `blox.eager` on text every Python install ships:
the source files of a few standard-library modules (`argparse`, `inspect`,
`dataclasses`, about 280 KB). It covers:

* a model of `nn.Embed`, `nn.LSTM` (a batch-first sequence in, outputs and the
  final state out) and `nn.Linear`, trained with `nn.filter_jit`,
  `nn.filter_value_and_grad` and optax on random windows of the text;
* the validation cross-entropy, in nats per character, on a held-out tail of
  the text, next to a baseline: the entropy of the training text's character
  frequencies (about what a model that ignores context achieves);
* generation one character at a time with `lstm.step` and a temperature.

Run it (about a minute on two CPU cores):

    pip install -e ".[examples]"
    python examples/char_lstm.py [--out examples/out] [--fast]

It prints the baseline and the final validation loss (about 3.06 and 1.75
nats/char, 40-45% lower), the time taken, and a generated sample that already
looks like Python (indentation, `self.`, `def`, argument names, not yet sense;
the numbers vary a little with the Python version, whose source this is);
writes `char_lstm.png` (training and validation loss) into the output folder;
and exits non-zero unless the validation loss ends at least 25% below the
baseline. `--fast` (or `BLOX_EXAMPLES_FAST=1`) trains for a few steps, skips
that check, and still runs every step above; CI uses it.
"""

import argparse
import dataclasses
import inspect
import os
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import optax
from tqdm import tqdm

from blox import eager as nn

matplotlib.use("Agg")  # write files only, never open a window

SOURCE_MODULES = (argparse, inspect, dataclasses)
REQUIRED_IMPROVEMENT = 0.25  # the validation loss must end this far below the baseline


class CharLSTM(nn.Module):
    """Embedding, one LSTM layer, and a linear read-out to next-character logits.

    `model(ids)` maps ids `(batch, time)` to logits `(batch, time, vocab_size)`
    and the final state; `model.step(ids, state)` advances one character.
    """

    def __init__(self, vocab_size, *, embedding_size=64, hidden_size=128):
        super().__init__()
        self.embed = nn.Embed(vocab_size, embedding_size)
        self.lstm = nn.LSTM(embedding_size, hidden_size)
        self.head = nn.Linear(hidden_size, vocab_size)

    def __call__(self, ids, state=None):
        hidden, state = self.lstm(self.embed(ids), state)
        return self.head(hidden), state

    def step(self, ids, state):
        """One character per row: ids `(batch,)` -> logits `(batch, vocab_size)`, state."""
        hidden, state = self.lstm.step(self.embed(ids), state)
        return self.head(hidden), state


def load_text():
    """The concatenated source code of `SOURCE_MODULES`."""
    return "\n".join(Path(module.__file__).read_text(encoding="utf-8") for module in SOURCE_MODULES)


def unigram_entropy(ids, vocab_size):
    """Entropy (nats) of the character frequencies of `ids`."""
    counts = np.bincount(ids, minlength=vocab_size)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def random_windows(ids, batch_size, length, rng):
    """`batch_size` windows of `length + 1` characters at random offsets: `(inputs, targets)`."""
    starts = rng.integers(0, len(ids) - length - 1, size=batch_size)
    windows = np.stack([ids[s : s + length + 1] for s in starts])
    return windows[:, :-1], windows[:, 1:]


def consecutive_windows(ids, length):
    """`ids` cut into non-overlapping windows of `length + 1`: `(inputs, targets)`."""
    count = (len(ids) - 1) // length
    inputs = ids[: count * length].reshape(count, length)
    targets = ids[1 : count * length + 1].reshape(count, length)
    return inputs, targets


def cross_entropy(model, inputs, targets):
    """Mean next-character cross-entropy (nats) of `model` on `(batch, time)` ids."""
    logits, _ = model(inputs)
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()


def make_train_step(optimizer):
    """A compiled step: one optimizer update on a batch of windows; returns the loss too."""

    @nn.filter_jit
    def train_step(model, opt_state, inputs, targets):
        loss, grads = nn.filter_value_and_grad(cross_entropy)(model, inputs, targets)
        updates, opt_state = optimizer.update(grads, opt_state, nn.trainable(model))
        return eqx.apply_updates(model, updates), opt_state, loss

    return train_step


evaluate = nn.filter_jit(cross_entropy)


@nn.filter_jit
def sample_step(model, ids, state, key, temperature):
    """Feeds one character per row and draws the next from `softmax(logits / temperature)`."""
    logits, state = model.step(ids, state)
    return jax.random.categorical(key, logits / temperature), state


def generate(model, prompt, length, *, encode, decode, temperature=0.7, seed=0):
    """Continues `prompt` by `length` characters, one `lstm.step` at a time."""
    key = jax.random.key(seed)
    state = model.lstm.initial_state(1)
    ids = jnp.asarray(encode(prompt))
    # Feed the prompt one character at a time; the last draw is the first new character.
    for i in range(len(prompt)):
        key, subkey = jax.random.split(key)
        next_id, state = sample_step(model, ids[i : i + 1], state, subkey, temperature)
    generated = []
    for _ in range(length):
        generated.append(int(next_id[0]))
        key, subkey = jax.random.split(key)
        next_id, state = sample_step(model, next_id, state, subkey, temperature)
    return prompt + decode(generated)


def plot_history(history, baseline, path):
    """Saves training and validation loss against the step, with the baseline, as a PNG."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(history["train_step"], history["train"], alpha=0.6, label="training (per batch)")
    ax.plot(history["val_step"], history["val"], marker="o", label="validation (held-out tail)")
    ax.axhline(baseline, color="grey", linestyle="--", label="unigram baseline")
    ax.set(xlabel="step", ylabel="cross-entropy (nats/char)", title="char-LSTM on Python source")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args():
    """Command-line options; `BLOX_EXAMPLES_FAST=1` in the environment also sets `--fast`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--length", type=int, default=64, help="characters per window")
    parser.add_argument("--fast", action="store_true", help="a few steps, for CI")
    args = parser.parse_args()
    args.fast = args.fast or os.environ.get("BLOX_EXAMPLES_FAST") == "1"
    if args.fast:
        args.steps, args.batch_size, args.length = 4, 8, 16
    return args


def main():
    """Trains, evaluates against the baseline, plots, samples, and checks the result."""
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    text = load_text()
    vocab = sorted(set(text))
    index = {char: i for i, char in enumerate(vocab)}
    ids = np.array([index[char] for char in text], dtype=np.int32)
    split = int(0.9 * len(ids))
    train_ids, val_ids = ids[:split], ids[split:]
    val_inputs, val_targets = consecutive_windows(val_ids, args.length)
    if args.fast:
        val_inputs, val_targets = val_inputs[:16], val_targets[:16]
    baseline = unigram_entropy(train_ids, len(vocab))
    print(f"text: {len(text):,} characters, {len(vocab)} distinct; {len(val_ids):,} held out")
    print(f"unigram baseline (entropy of the training text): {baseline:.3f} nats/char")

    nn.manual_seed(0)
    model = CharLSTM(len(vocab))
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(3e-3))
    opt_state = optimizer.init(nn.trainable(model))
    train_step = make_train_step(optimizer)
    rng = np.random.default_rng(0)  # the same windows on every run

    history = {"train_step": [], "train": [], "val_step": [], "val": []}
    eval_every = max(1, args.steps // 10)
    with tqdm(range(1, args.steps + 1), unit="step") as progress:
        for step in progress:
            inputs, targets = random_windows(train_ids, args.batch_size, args.length, rng)
            model, opt_state, loss = train_step(model, opt_state, inputs, targets)
            history["train_step"].append(step)
            history["train"].append(loss)
            if step % eval_every == 0 or step == args.steps:
                val_loss = float(evaluate(model.eval(), val_inputs, val_targets))
                model.train()
                history["val_step"].append(step)
                history["val"].append(val_loss)
                progress.set_postfix(loss=f"{float(loss):.3f}", val=f"{val_loss:.3f}")
    history["train"] = [float(loss) for loss in history["train"]]

    final = history["val"][-1]
    elapsed = time.perf_counter() - start
    print(
        f"validation loss: {final:.3f} nats/char ({100 * (final / baseline - 1):+.0f}% vs the baseline)"
    )
    print(f"time: {elapsed:.1f} s")

    plot_path = args.out / "char_lstm.png"
    plot_history(history, baseline, plot_path)
    print(f"plot: {plot_path}")

    model.eval()
    sample = generate(
        model,
        "def ",
        50 if args.fast else 400,
        encode=lambda s: [index[c] for c in s],
        decode=lambda ids: "".join(vocab[i] for i in ids),
    )
    print("sample (temperature 0.7):\n" + "-" * 60 + "\n" + sample + "\n" + "-" * 60)

    if not args.fast and final > (1 - REQUIRED_IMPROVEMENT) * baseline:
        raise SystemExit(
            f"FAILED: validation loss {final:.3f} is not {REQUIRED_IMPROVEMENT:.0%} below "
            f"the unigram baseline {baseline:.3f}"
        )


if __name__ == "__main__":
    main()
