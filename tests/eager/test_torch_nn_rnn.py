"""`torch_nn`'s recurrent layers against `torch.nn`'s, weights copied by `load_state_dict`.

Outputs, final states and gradients (inputs and every weight) in float32
within 1e-5: the sequences are a few steps, so no long reduction widens it.
"""

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from blox.eager import torch_nn as nn

from ._torch_seq_parity import check_parity, torch_state

TOL = 1e-5


def _x(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _pair(name: str, *args, **kwargs):
    torch.manual_seed(0)
    reference = getattr(torch.nn, name)(*args, **kwargs)
    ours = getattr(nn, name)(*args, **kwargs)
    assert list(ours.state_dict()) == list(reference.state_dict())
    ours.load_state_dict(torch_state(reference))
    return reference, ours


def _lstm_call(module, x, h0, c0):
    out, (h, c) = module(x, (h0, c0))
    return out, h, c


def _rnn_call(module, x, h0, c0):
    return module(x, h0)


# One configuration per family keeps the compiles few; together they cover
# stacking, both directions, batch_first, bias=False and relu. Training mode
# here; eval mode in test_lstm_dropout_between_layers.
@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("LSTM", dict(num_layers=2)),
        ("GRU", dict(batch_first=True, bias=False, bidirectional=True)),
        ("RNN", dict(nonlinearity="relu")),
    ],
    ids=["lstm-2layer", "gru-batch_first-nobias-bidirectional", "rnn-relu"],
)
def test_recurrent_matches_torch(name, kwargs):
    reference, ours = _pair(name, 3, 4, **kwargs)
    layers = kwargs.get("num_layers", 1) * (2 if kwargs.get("bidirectional") else 1)
    x = _x(2, 5, 3) if kwargs.get("batch_first") else _x(5, 2, 3)
    h0, c0 = _x(layers, 2, 4, seed=1), _x(layers, 2, 4, seed=2)
    call = _lstm_call if name == "LSTM" else _rnn_call
    grad_inputs = None if name == "LSTM" else [0, 1]  # c0 is LSTM's only
    check_parity(
        reference, ours, [x, h0, c0], call, call, rtol=TOL, atol=TOL, grad_inputs=grad_inputs
    )


@pytest.mark.parametrize("name", ["LSTMCell", "GRUCell", "RNNCell"])
def test_cells_match_torch(name):
    reference, ours = _pair(name, 3, 4)
    x, h, c = _x(2, 3), _x(2, 4, seed=1), _x(2, 4, seed=2)
    if name == "LSTMCell":

        def call(module, x, h, c):
            return module(x, (h, c))

        check_parity(reference, ours, [x, h, c], call, call, rtol=TOL, atol=TOL)
    else:

        def call(module, x, h):
            return (module(x, h),)

        check_parity(reference, ours, [x, h], call, call, rtol=TOL, atol=TOL)
    if name == "RNNCell":  # unbatched, from a zero state (the cells share this code)
        want = reference(torch.tensor(x[0])).detach().numpy()
        np.testing.assert_allclose(ours(jnp.asarray(x[0])), want, rtol=TOL, atol=TOL)


def test_lstm_unbatched_and_default_state():
    reference, ours = _pair("LSTM", 3, 4)
    x = _x(5, 3)
    want, (h, _) = reference(torch.tensor(x))
    got, (h2, c2) = ours(jnp.asarray(x))
    np.testing.assert_allclose(got, want.detach().numpy(), rtol=TOL, atol=TOL)
    np.testing.assert_allclose(h2, h.detach().numpy(), rtol=TOL, atol=TOL)
    assert got.shape == (5, 4) and h2.shape == (1, 4) and c2.shape == (1, 4)


def test_lstm_state_round_trips():
    # Two halves fed through the returned (h_n, c_n) equal one pass over the whole.
    _, ours = _pair("LSTM", 3, 4)
    x = jnp.asarray(_x(6, 2, 3))
    whole, (h, c) = ours(x)
    first, state = ours(x[:3])
    second, (h2, c2) = ours(x[3:], state)
    np.testing.assert_allclose(jnp.concatenate([first, second]), whole, rtol=TOL, atol=TOL)
    np.testing.assert_allclose(h2, h, rtol=TOL, atol=TOL)
    np.testing.assert_allclose(c2, c, rtol=TOL, atol=TOL)


def test_lstm_dropout_between_layers():
    # Training: layer 0's outputs are dropped (p=0.5) before layer 1, a fresh
    # mask each call; eval: no dropout, PyTorch's outputs.
    reference, ours = _pair("LSTM", 3, 4, num_layers=2, dropout=0.5)
    x = _x(4, 2, 3)
    a, _ = ours(jnp.asarray(x))
    b, _ = ours(jnp.asarray(x))
    assert not np.allclose(a, b)
    reference.eval()
    ours.eval()
    want, _ = reference(torch.tensor(x))
    np.testing.assert_allclose(ours(jnp.asarray(x))[0], want.detach().numpy(), rtol=TOL, atol=TOL)


def test_lstm_dropout_is_between_layers_only():
    # With one layer PyTorch's dropout does nothing (it warns); so does ours.
    with pytest.warns(UserWarning):
        reference = torch.nn.LSTM(3, 4, dropout=0.5)
    ours = nn.LSTM(3, 4, dropout=0.5)
    ours.load_state_dict(torch_state(reference))
    x = _x(4, 2, 3)
    want, _ = reference(torch.tensor(x))
    np.testing.assert_allclose(ours(jnp.asarray(x))[0], want.detach().numpy(), rtol=TOL, atol=TOL)


def test_lstm_errors():
    with pytest.raises(ValueError, match=r"nn.LSTM\(3, 4\): expected dropout in \[0, 1\)"):
        nn.LSTM(3, 4, dropout=1.5)
    with pytest.raises(ValueError, match="expected proj_size=0"):
        nn.LSTM(3, 4, proj_size=2)
    with pytest.raises(ValueError, match="expected hidden_size to be a positive int"):
        nn.LSTM(3, 0)
    lstm = nn.LSTM(3, 4)
    with pytest.raises(ValueError, match=r"expected input of shape \(time, batch, 3\)"):
        lstm(jnp.ones((2, 5, 4)))
    with pytest.raises(TypeError, match=r"expected hx to be a pair \(h_0, c_0\)"):
        lstm(jnp.ones((5, 2, 3)), jnp.zeros((1, 2, 4)))
    with pytest.raises(ValueError, match=r"expected each initial state of shape \(1, 2, 4\)"):
        lstm(jnp.ones((5, 2, 3)), (jnp.zeros((1, 3, 4)), jnp.zeros((1, 3, 4))))
