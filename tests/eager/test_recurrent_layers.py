"""Eager recurrent layers: stacked, bidirectional, sequence-first and padded.

Each eager layer holds no numerics: compiled, it equals its compiled core
layer bit for bit. Stacks are checked against a loop over single layers.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxtyping import TypeCheckError

from blox import eager as nn

XS = jax.random.normal(jax.random.key(0), (3, 5, 4))  # (batch, time, in)
LENGTHS = jnp.array([5, 2, 4])


def _eager(layer, *args, **kwargs):
    return nn.filter_jit(lambda m, *a: m(*a, **kwargs))(layer, *args)


def _core(layer, xs, **kwargs):
    core, params = layer.core_layer, layer.core_params()
    run = jax.jit(lambda p, x: core.apply(p, x, None, None, layer.training, **kwargs)[0])
    return run(params, xs)


@pytest.mark.parametrize(
    "make",
    [
        lambda: nn.LSTM(4, 3, num_layers=2, bidirectional=True),
        lambda: nn.GRU(4, 3, batch_first=False),
        lambda: nn.RNN(4, 3, nonlinearity="relu", num_layers=2),
        lambda: nn.LSTMCell(4, 3),
        lambda: nn.GRUCell(4, 3),
    ],
    ids=["lstm_stacked_bi", "gru_time_first", "rnn_relu_stacked", "lstm_cell", "gru_cell"],
)
def test_eager_equals_core_bit_for_bit(make):
    layer = make()
    xs = XS if layer.batch_first else jnp.swapaxes(XS, 0, 1)
    got = _eager(layer, xs, seq_lengths=LENGTHS)
    want = _core(layer, xs, time_major=not layer.batch_first, seq_lengths=LENGTHS)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(a, b)


def test_stacked_bidirectional_lstm_equals_a_loop_over_single_layers():
    deep = nn.LSTM(4, 3, num_layers=2, bidirectional=True, seed=0)
    ys, state = deep(XS)
    xs, hidden, cell = XS, [], []
    for layer in range(2):
        outs = []
        for suffix in ("", "_reverse"):
            single = nn.LSTM(xs.shape[-1], 3)
            single.gates.kernel = getattr(deep, f"l{layer}{suffix}").gates.kernel
            single.gates.bias = getattr(deep, f"l{layer}{suffix}").gates.bias
            if suffix:
                out, s = single(xs[:, ::-1])
                out = out[:, ::-1]
            else:
                out, s = single(xs)
            outs.append(out)
            hidden.append(s.hidden)
            cell.append(s.cell)
        xs = jnp.concatenate(outs, axis=-1)
    np.testing.assert_allclose(ys, xs, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(state.hidden, jnp.stack(hidden), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(state.cell, jnp.stack(cell), rtol=1e-6, atol=1e-6)
    # The state round-trips: two halves equal one run (forward direction only).
    uni = nn.GRU(4, 3, num_layers=2, seed=1)
    whole, _ = uni(XS)
    first, mid = uni(XS[:, :2])
    second, _ = uni(XS[:, 2:], mid)
    np.testing.assert_allclose(jnp.concatenate([first, second], 1), whole, rtol=1e-6, atol=1e-6)


def test_batch_first_false_and_seq_lengths():
    gru = nn.GRU(4, 3, seed=0)
    time_first = nn.GRU(4, 3, batch_first=False, seed=0)
    ys, state = gru(XS, seq_lengths=LENGTHS)
    ys_t, state_t = time_first(jnp.swapaxes(XS, 0, 1), seq_lengths=LENGTHS)
    np.testing.assert_allclose(jnp.swapaxes(ys_t, 0, 1), ys, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(state_t.hidden, state.hidden, rtol=1e-6, atol=1e-6)
    _, short = gru(XS[1:2, :2])
    np.testing.assert_allclose(state.hidden[1], short.hidden[0], rtol=1e-6, atol=1e-6)


def test_dropout_between_layers_only_in_training():
    lstm = nn.LSTM(4, 3, num_layers=2, dropout=0.5, seed=0)
    a, _ = lstm(XS)
    b, _ = lstm(XS)
    assert not np.allclose(a, b)  # fresh masks each call: the RNG is threaded
    assert int(lstm.rng.counter) > 0
    lstm.eval()
    c, _ = lstm(XS)
    d, _ = lstm(XS)
    np.testing.assert_array_equal(c, d)
    plain = nn.LSTM(4, 3, num_layers=2, seed=0)
    np.testing.assert_allclose(c, plain(XS)[0], rtol=1e-6, atol=1e-6)


def test_step_of_a_stack_and_of_a_cell():
    stack = nn.GRU(4, 3, num_layers=2, seed=0)
    ys, _ = stack(XS)
    state = None
    for t in range(XS.shape[1]):
        out, state = stack.step(XS[:, t], state)
    np.testing.assert_allclose(out, ys[:, -1], rtol=1e-6, atol=1e-6)
    cell = nn.LSTMCell(4, 3, seed=0)
    ys, carry = cell(XS)
    out, _ = cell.step(XS[:, 0])
    np.testing.assert_allclose(out, ys[:, 0], rtol=1e-6, atol=1e-6)
    assert isinstance(carry, tuple) and len(carry) == 2  # flax's (c, h)


def test_errors_name_the_layer():
    with pytest.raises(ValueError, match=r"^nn\.LSTM\(4, 3\): expected num_layers >= 1"):
        nn.LSTM(4, 3, num_layers=0)
    with pytest.raises(TypeError, match=r"^nn\.GRU\(4, 3\): expected num_layers to be an int"):
        nn.GRU(4, 3, num_layers=2.0)
    with pytest.raises(ValueError, match=r"^nn\.GRU\(4, 3\): expected dropout in \[0, 1\)"):
        nn.GRU(4, 3, num_layers=2, dropout=1.5)
    with pytest.raises(TypeError, match=r"^nn\.GRU\(4, 3\): expected dropout to be a float"):
        nn.GRU(4, 3, num_layers=2, dropout="0.1")
    with pytest.raises(ValueError, match=r"^nn\.RNN\(4, 3\): expected nonlinearity 'tanh'"):
        nn.RNN(4, 3, nonlinearity="sigmoid")
    lstm = nn.LSTM(4, 3, num_layers=2)
    # A sequence-first input to a batch_first layer: its state's batch disagrees.
    _, state = lstm(XS)
    with pytest.raises(TypeCheckError, match=r"^LSTM\(4, 3, num_layers=2\): expected state"):
        lstm(jnp.swapaxes(XS, 0, 1), state)
    with pytest.raises(TypeCheckError, match=r"seq_lengths"):
        lstm(jnp.swapaxes(XS, 0, 1), seq_lengths=LENGTHS)
    with pytest.raises(ValueError, match=r"expected a unidirectional stack"):
        nn.GRU(4, 3, bidirectional=True).step(XS[:, 0])
