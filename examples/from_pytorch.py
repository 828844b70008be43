"""Move a PyTorch CNN to blox with its weights, then keep training it in JAX.

The PyTorch model below is trained for a few steps on scikit-learn's digits
(channels first, `torch.nn` layers, `torch.optim.Adam`). Its port is the same
class written against `blox.eager.torch_nn`, which has PyTorch's names,
signatures, layouts and `state_dict` keys, so:

* `model.load_state_dict(torch_model.state_dict())` copies every weight and
  BatchNorm statistic across, key for key;
* in evaluation mode the two give the same logits (checked to 1e-4: the
  logits are sums over a few hundred products);
* training continues in blox: optax's Adam, `nn.filter_value_and_grad`, one
  step compiled with `nn.filter_jit` (dropout masks and BatchNorm statistics
  advance inside it);
* the trained weights go back to PyTorch: `torch.save(model.state_dict(as_torch=True))`
  loads into the PyTorch class, whose logits then match blox's again.

Run it (torch is optional: without it the script says so and exits cleanly):

    pip install -e ".[examples]" torch
    python examples/from_pytorch.py [--out examples/out] [--fast]

It prints `logits match` twice and the test accuracy, and writes
`from_pytorch.pt` (the blox-trained weights as a PyTorch state_dict) into the
output folder. `--fast` (or `BLOX_EXAMPLES_FAST=1`) trains a few steps on a
small subset; CI uses it.
"""

import sys
import time

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import optax
from _digits import load_data, minibatches, parse_args

from blox.eager import torch_nn as nn
from blox.eager.torch_nn import functional as F

try:
    import torch
except ImportError:  # torch is optional for this example
    torch = None


def torch_model():
    """The PyTorch original: images `(batch, 1, 8, 8)` -> logits `(batch, 10)`."""

    class TorchCNN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(1, 16, 3, padding=1)
            self.bn1 = torch.nn.BatchNorm2d(16)
            self.conv2 = torch.nn.Conv2d(16, 32, 3, padding=1)
            self.drop = torch.nn.Dropout(0.25)
            self.fc = torch.nn.Linear(32 * 4 * 4, 10)

        def forward(self, x):
            x = torch.nn.functional.relu(self.bn1(self.conv1(x)))
            x = torch.nn.functional.max_pool2d(torch.nn.functional.relu(self.conv2(x)), 2)
            return self.fc(self.drop(torch.flatten(x, 1)))

    return TorchCNN()


class CNN(nn.Module):
    """The port: the same code, `torch.nn` replaced by `torch_nn`."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.drop = nn.Dropout(0.25)
        self.fc = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(self.drop(F.flatten(x, 1)))


def main():
    args = parse_args(__doc__.splitlines()[0])
    if torch is None:
        print("torch is not installed: skipping (pip install torch to run this example).")
        return 0
    start = time.perf_counter()
    x_train, y_train, x_test, y_test = load_data(args.fast)
    # torch_nn is channels first, like PyTorch: (N, 8, 8, 1) -> (N, 1, 8, 8).
    x_train, x_test = x_train.transpose(0, 3, 1, 2), x_test.transpose(0, 3, 1, 2)
    torch.manual_seed(0)
    theirs = torch_model()
    opt = torch.optim.Adam(theirs.parameters(), lr=1e-3)
    steps = 5 if args.fast else 50
    rng = np.random.default_rng(0)
    for x, y in list(minibatches(x_train, y_train, args.batch_size, rng))[:steps]:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(
            theirs(torch.from_numpy(x)), torch.from_numpy(y).long()
        )
        loss.backward()
        opt.step()
    print(f"PyTorch: {steps} steps, last loss {loss.item():.3f}")

    model = CNN()
    model.load_state_dict(theirs.state_dict())
    theirs.eval()
    model.eval()

    def compare(what):
        with torch.no_grad():
            want = theirs(torch.from_numpy(x_test)).numpy()
        got = np.asarray(model(jnp.asarray(x_test)))
        # 1e-4: the logits are long float32 sums, accumulated in different orders.
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
        print(f"{what}: logits match (max difference {np.abs(got - want).max():.1e})")

    compare("after loading PyTorch's state_dict")

    model.train()
    criterion = nn.CrossEntropyLoss()
    optimizer = optax.adam(1e-3)
    opt_state = optimizer.init(nn.trainable(model))

    @nn.filter_jit
    def step(model, opt_state, x, y):
        loss, grads = nn.filter_value_and_grad(lambda m: criterion(m(x), y))(model)
        updates, opt_state = optimizer.update(grads, opt_state, nn.trainable(model))
        return eqx.apply_updates(model, updates), opt_state, loss

    for _ in range(1 if args.fast else 10):
        for x, y in minibatches(x_train, y_train, args.batch_size, rng):
            model, opt_state, loss = step(model, opt_state, jnp.asarray(x), jnp.asarray(y))
    print(f"blox: continued training, last loss {float(loss):.3f}")

    model.eval()
    accuracy = float((np.asarray(model(jnp.asarray(x_test))).argmax(-1) == y_test).mean())
    print(f"test accuracy: {accuracy:.3f}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "from_pytorch.pt"
    torch.save(model.state_dict(as_torch=True), path)
    theirs.load_state_dict(torch.load(path, weights_only=True))
    compare("after loading blox's weights back into PyTorch")
    print(f"done in {time.perf_counter() - start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
