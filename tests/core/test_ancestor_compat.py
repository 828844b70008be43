"""Programs written for jax-blox 0.1.6 run unchanged with `import blox as bx`.

Each test is a small program in the ancestor's style, checked against numbers
computed here by hand from the documented formulas.
"""

import jax
import jax.numpy as jnp
import numpy as np

import blox as bx
from blox import core as bx_core


def key_data(key):
    return np.asarray(jax.random.key_data(key))


# -- (1) MLP training loop -----------------------------------------------------------------


def test_mlp_training_loop_with_split_grad_merge_and_sgd():
    graph = bx.Graph("net")
    rng = bx.Rng(graph.child("rng"))
    model = bx.Sequential(
        graph.child("mlp"),
        [
            bx.Linear(graph.child("l1"), 32, rng=rng),
            jax.nn.relu,
            bx.Linear(graph.child("l2"), 1, rng=rng),
        ],
    )

    params = rng.seed(bx.Params(), seed=42)
    x = jax.random.uniform(jax.random.key(0), (64, 2), minval=-1.0, maxval=1.0)
    y = jnp.sin(3.0 * x[:, :1]) + 0.5 * x[:, 1:]

    _, params = model(params, x)  # the first call creates the parameters
    params = params.locked()
    assert sorted("/".join(p) for p in params.keys()) == [
        "net/l1/bias",
        "net/l1/kernel",
        "net/l2/bias",
        "net/l2/kernel",
        "net/rng/counter",
        "net/rng/seed",
    ]

    def loss_fn(trainable, non_trainable, x, y):
        params = trainable.merge(non_trainable)
        pred, params = model(params, x)
        return jnp.mean((pred - y) ** 2), params

    @jax.jit
    def train_step(params, x, y):
        trainable, non_trainable = params.split()
        grads, params = jax.grad(loss_fn, has_aux=True)(trainable, non_trainable, x, y)
        trainable, non_trainable = params.split()
        trainable = jax.tree.map(lambda p, g: p - 0.1 * g, trainable, grads)
        return trainable.merge(non_trainable)

    @jax.jit
    def loss(params):
        return loss_fn(*params.split(), x, y)[0]

    losses = [float(loss(params))]
    for _ in range(2):
        for _ in range(100):
            params = train_step(params, x, y)
        losses.append(float(loss(params)))
    first = losses[0]
    assert params.is_locked
    assert losses[-1] < 0.3 * first
    assert losses[0] > losses[1] > losses[2]
    # Training draws no keys: the counter stays where initialisation left it.
    assert int(rng.get_counter(params)) == 4


# -- (2) BatchNorm train then eval -----------------------------------------------------------


def test_batchnorm_training_then_inference():
    graph = bx.Graph("net")
    rng = bx.Rng(graph.child("rng"))
    bn = bx.BatchNorm(graph.child("bn"), momentum=0.9, rng=rng)
    params = rng.seed(bx.Params(), seed=0)

    batches = [
        jax.random.normal(jax.random.key(i), (8, 3)) * jnp.array([[1.0, 2.0, 0.5]]) + i
        for i in range(5)
    ]
    running_mean = np.zeros(3)
    running_var = np.ones(3)
    for xb in batches:
        y, params = bn(params, xb, is_training=True)
        xb64 = np.asarray(xb, np.float64)
        mean, var = xb64.mean(0), xb64.var(0)
        np.testing.assert_allclose(y, (xb64 - mean) / np.sqrt(var + 1e-5), rtol=1e-5, atol=1e-5)
        running_mean = 0.9 * running_mean + 0.1 * mean
        running_var = 0.9 * running_var + 0.1 * var
        if xb is batches[0]:
            params = params.locked()

    path = ("net", "bn")
    np.testing.assert_allclose(
        params[path + ("running_mean",)].value, running_mean, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(params[path + ("running_var",)].value, running_var, rtol=1e-5)
    assert params[path + ("running_mean",)].trainable is False
    assert params[path + ("running_var",)].trainable is False

    x_eval = jnp.array([[0.0, 1.0, 2.0], [3.0, -1.0, 0.5]])
    y_eval, after = bn(params, x_eval, is_training=False)
    expected = (np.asarray(x_eval, np.float64) - running_mean) / np.sqrt(running_var + 1e-5)
    np.testing.assert_allclose(y_eval, expected, rtol=1e-5, atol=1e-5)
    # Inference leaves the running statistics alone.
    np.testing.assert_array_equal(
        after[path + ("running_mean",)].value, params[path + ("running_mean",)].value
    )
    # scale/bias are trainable and were created as ones/zeros with one key each.
    assert params[path + ("scale",)].trainable is True
    np.testing.assert_array_equal(params[path + ("scale",)].value, np.ones(3))
    np.testing.assert_array_equal(params[path + ("bias",)].value, np.zeros(3))
    assert int(rng.get_counter(params)) == 4


# -- (3) LSTM over a sequence ------------------------------------------------------------------


def reference_lstm(kernel, bias, xs, hidden):
    """A hand-written LSTM in numpy float64, gate order i, g, f, o."""
    kernel = np.asarray(kernel, np.float64)
    bias = np.asarray(bias, np.float64)
    xs = np.asarray(xs, np.float64)
    batch, time, _ = xs.shape
    h = np.zeros((batch, hidden))
    c = np.zeros((batch, hidden))

    def sigmoid(v):
        return 1.0 / (1.0 + np.exp(-v))

    outs = []
    for t in range(time):
        z = np.concatenate([xs[:, t], h], axis=-1) @ kernel + bias
        i, g, f, o = np.split(z, 4, axis=-1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        outs.append(h)
    return np.stack(outs, axis=1), h, c


def test_lstm_apply_equals_hand_written_lstm():
    graph = bx.Graph("net")
    rng = bx.Rng(graph.child("rng"))
    lstm = bx.LSTM(graph.child("lstm"), 5, rng=rng)
    params = rng.seed(bx.Params(), seed=3)
    xs = jax.random.normal(jax.random.key(1), (2, 7, 3))

    (outputs, state), params = lstm.apply(params, xs)
    kernel = params[("net", "lstm", "gates", "kernel")].value
    bias = params[("net", "lstm", "gates", "bias")].value
    assert kernel.shape == (3 + 5, 4 * 5)
    assert bias.shape == (4 * 5,)
    ref_out, ref_h, ref_c = reference_lstm(kernel, bias, xs, 5)
    assert outputs.shape == (2, 7, 5)
    np.testing.assert_allclose(outputs, ref_out, rtol=1e-5, atol=1e-5)
    assert isinstance(state, bx.LSTMState)
    np.testing.assert_allclose(state.hidden, ref_h, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(state.cell, ref_c, rtol=1e-5, atol=1e-5)

    # A zero bias hides a gate-order mistake in the bias; use a distinct one per gate.
    bias = jnp.concatenate([jnp.full(5, v) for v in (0.5, -0.3, 1.0, -1.0)])
    params = lstm.gates.set_param(params.locked(), "bias", bias)
    (outputs, state), _ = jax.jit(lstm.apply)(params, xs)
    ref_out, ref_h, ref_c = reference_lstm(kernel, bias, xs, 5)
    np.testing.assert_allclose(outputs, ref_out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(state.cell, ref_c, rtol=1e-5, atol=1e-5)

    # Stepping by hand with __call__ gives the same sequence.
    state, _ = lstm.initial_state(params, xs[:, 0])
    for t in range(7):
        (h, state), _ = lstm(params, xs[:, t], state)
        np.testing.assert_allclose(h, ref_out[:, t], rtol=1e-5, atol=1e-5)


# -- (4) a custom Module written the ancestor way --------------------------------------------


class MyModel(bx.Module):
    def __init__(self, graph, rng, hidden=32, out=3):
        super().__init__(graph)
        self.l1 = bx.Linear(graph.child("l1"), hidden, rng=rng)
        self.norm = bx.LayerNorm(graph.child("norm"))
        self.l2 = bx.Linear(graph.child("l2"), out, rng=rng)

    def __call__(self, params, x):
        h, params = self.l1(params, x)
        h, params = self.norm(params, jax.nn.gelu(h))
        return self.l2(params, h)


def test_custom_module_written_the_ancestor_way():
    graph = bx.Graph("root")
    rng = bx.Rng(graph.child("rng"))
    model = MyModel(graph.child("model"), rng)
    params = rng.seed(bx.Params(), seed=7)
    x = jax.random.normal(jax.random.key(5), (4, 6))
    y, params = model(params, x)
    assert y.shape == (4, 3)
    assert [path for path, _ in graph.walk()] == [
        ("root", "rng"),
        ("root", "model"),
        ("root", "model", "l1"),
        ("root", "model", "norm"),
        ("root", "model", "l2"),
    ]
    assert model._init_args == {"rng": rng, "hidden": 32, "out": 3}

    p = {"/".join(k[2:]): v.value for k, v in params.items() if k[1] == "model"}
    h = np.asarray(x, np.float64) @ np.asarray(p["l1/kernel"], np.float64) + np.asarray(
        p["l1/bias"]
    )
    h = np.asarray(jax.nn.gelu(jnp.asarray(h, jnp.float32)), np.float64)
    mu = h.mean(-1, keepdims=True)
    h = (h - mu) / np.sqrt(((h - mu) ** 2).mean(-1, keepdims=True) + 1e-5)
    h = h * np.asarray(p["norm/scale"]) + np.asarray(p["norm/bias"])
    expected = h @ np.asarray(p["l2/kernel"], np.float64) + np.asarray(p["l2/bias"])
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)

    # A jitted second call on locked params gives the same output.
    y2, _ = jax.jit(model)(params.locked(), x)
    np.testing.assert_allclose(y2, y, rtol=1e-5, atol=1e-5)


def test_from_blox_import_core_as_bx_works():
    class Tiny(bx_core.Module):
        def __init__(self, graph, rng):
            super().__init__(graph)
            self.lin = bx_core.Linear(graph.child("lin"), 2, rng=rng)

        def __call__(self, params, x):
            return self.lin(params, x)

    graph = bx_core.Graph("net")
    rng = bx_core.Rng(graph.child("rng"))
    tiny = Tiny(graph.child("tiny"), rng)
    y, params = tiny(rng.seed(bx_core.Params(), seed=0), jnp.ones((1, 4)))
    assert y.shape == (1, 2)
    assert isinstance(params, bx.Params)
    for name in bx_core.__all__:
        assert getattr(bx, name) is getattr(bx_core, name)


# -- (5) initialisation numbers ----------------------------------------------------------------


def test_initialisation_follows_the_key_drawing_rule():
    graph = bx.Graph("net")
    rng = bx.Rng(graph.child("rng"))
    model = bx.Sequential(
        graph.child("mlp"),
        [
            bx.Linear(graph.child("l1"), 4, rng=rng),
            jax.nn.relu,
            bx.Linear(graph.child("l2"), 2, rng=rng, bias_init=jax.nn.initializers.normal()),
        ],
    )
    params = rng.seed(bx.Params(), seed=42)
    _, params = model(params, jnp.ones((1, 3)))

    base = jax.random.key(42)
    lecun = jax.nn.initializers.lecun_normal()
    # Creation order: l1/kernel draws counter 0, l1/bias 1, l2/kernel 2, l2/bias 3.
    expected = {
        ("net", "l1", "kernel"): lecun(jax.random.fold_in(base, 0), (3, 4), jnp.float32),
        ("net", "l1", "bias"): jnp.zeros(4),
        ("net", "l2", "kernel"): lecun(jax.random.fold_in(base, 2), (4, 2), jnp.float32),
        ("net", "l2", "bias"): jax.nn.initializers.normal()(
            jax.random.fold_in(base, 3), (2,), jnp.float32
        ),
    }
    for path, value in expected.items():
        np.testing.assert_array_equal(params[path].value, np.asarray(value))
    assert int(rng.get_counter(params)) == 4
    # The documented rule with plain jax.random, no blox in the loop.
    np.testing.assert_array_equal(
        key_data(jax.random.fold_in(rng.get_seed(params), 0)),
        key_data(jax.random.fold_in(jax.random.key(42), 0)),
    )
