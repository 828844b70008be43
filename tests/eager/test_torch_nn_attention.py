"""`torch_nn.MultiheadAttention` against `torch.nn.MultiheadAttention`, weights copied.

Outputs, attention weights and gradients (inputs and every weight) in
float32 within 1e-5 (sequences of 4-5 positions: no long reduction).
"""

import warnings

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from blox.eager import torch_nn as nn

from ._torch_seq_parity import check_parity, torch_state

TOL = 1e-5


def _x(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _as(module, array):
    """`array` as the module's framework takes it (closed-over masks)."""
    return torch.tensor(array) if isinstance(module, torch.nn.Module) else jnp.asarray(array)


def _pair(*args, **kwargs):
    torch.manual_seed(0)
    reference = torch.nn.MultiheadAttention(*args, **kwargs)
    ours = nn.MultiheadAttention(*args, **kwargs)
    assert [(k, tuple(v.shape)) for k, v in ours.state_dict().items()] == [
        (k, tuple(v.shape)) for k, v in reference.state_dict().items()
    ]
    ours.load_state_dict(torch_state(reference))
    return reference, ours


def test_mha_float_attn_mask_and_bool_padding_mask():
    reference, ours = _pair(8, 2)
    q, k, v = _x(4, 3, 8), _x(5, 3, 8, seed=1), _x(5, 3, 8, seed=2)
    attn_mask = _x(4, 5, seed=3)
    padding = np.zeros((3, 5), bool)
    padding[0, -2:] = True

    def call(module, q, k, v):
        return module(
            q, k, v, key_padding_mask=_as(module, padding), attn_mask=_as(module, attn_mask)
        )

    # Training mode (dropout 0); eval mode is checked in test_mha_attention_dropout.
    with warnings.catch_warnings():
        # PyTorch warns that the two masks have different types; both work.
        warnings.simplefilter("ignore", UserWarning)
        check_parity(reference, ours, [q, k, v], call, call, rtol=TOL, atol=TOL)


def test_mha_batch_first_kdim_vdim_bool_mask_per_head_weights():
    reference, ours = _pair(8, 2, batch_first=True, kdim=5, vdim=6)
    assert "q_proj_weight" in ours.state_dict() and "in_proj_weight" not in ours.state_dict()
    q, k, v = _x(3, 4, 8), _x(3, 5, 5, seed=1), _x(3, 5, 6, seed=2)
    attn_mask = np.triu(np.ones((4, 5), bool), k=1)

    def call(module, q, k, v):
        return module(q, k, v, attn_mask=_as(module, attn_mask), average_attn_weights=False)

    check_parity(reference, ours, [q, k, v], call, call, rtol=TOL, atol=TOL)


def test_mha_no_bias_unbatched_no_weights_3d_mask():
    reference, ours = _pair(8, 2, bias=False)
    x = _x(4, 8)
    attn_mask = _x(2, 4, 4, seed=5)  # (N * num_heads, L, S) with N = 1

    def call(module, x):
        out, weights = module(x, x, x, attn_mask=_as(module, attn_mask), need_weights=False)
        assert weights is None
        return (out,)

    check_parity(reference, ours, [x], call, call, rtol=TOL, atol=TOL)


def test_mha_is_causal_hint_uses_the_mask():
    reference, ours = _pair(8, 2)
    x = _x(4, 2, 8)
    causal = torch.nn.Transformer.generate_square_subsequent_mask(4).numpy()

    def call(module, x):
        return module(x, x, x, attn_mask=_as(module, causal), is_causal=True, need_weights=False)[
            :1
        ]

    check_parity(reference, ours, [x], call, call, rtol=TOL, atol=TOL)
    with pytest.raises(ValueError, match="expected an attn_mask with the is_causal hint"):
        ours(x, x, x, is_causal=True)


def test_mha_attention_dropout():
    # Training: each returned weight is 0 or the eval weight / (1 - p), a
    # fresh mask per call; PyTorch drops every weight independently, so about
    # half of them are zero. Eval: PyTorch's outputs.
    reference, ours = _pair(8, 2, dropout=0.5)
    x = _x(6, 4, 8)
    ours.eval()
    clean_out, clean = ours(x, x, x, average_attn_weights=False)
    ours.train()
    _, a = ours(x, x, x, average_attn_weights=False)
    _, b = ours(x, x, x, average_attn_weights=False)
    kept = np.asarray(a) != 0
    np.testing.assert_allclose(np.asarray(a)[kept], 2 * np.asarray(clean)[kept], rtol=1e-5)
    assert 0.35 < 1 - kept.mean() < 0.65
    assert not np.array_equal(a, b)
    reference.eval()
    out, weights = reference(*(torch.tensor(x),) * 3, average_attn_weights=False)
    np.testing.assert_allclose(clean_out, out.detach().numpy(), rtol=TOL, atol=TOL)
    np.testing.assert_allclose(clean, weights.detach().numpy(), rtol=TOL, atol=TOL)


def test_mha_errors():
    with pytest.raises(ValueError, match="expected num_heads to divide embed_dim"):
        nn.MultiheadAttention(8, 3)
    with pytest.raises(ValueError, match=r"expected dropout in \[0, 1\)"):
        nn.MultiheadAttention(8, 2, dropout=1.0)
    with pytest.raises(ValueError, match="add_bias_kv=False"):
        nn.MultiheadAttention(8, 2, add_bias_kv=True)
    mha = nn.MultiheadAttention(8, 2)
    x = jnp.ones((4, 3, 8))
    with pytest.raises(ValueError, match="expected key of rank 2 or 3"):
        mha(x, jnp.ones((4, 3, 5)), x)
    with pytest.raises(ValueError, match=r"expected key_padding_mask of shape \(3, 4\)"):
        mha(x, x, x, key_padding_mask=jnp.zeros((4, 3), bool))
    with pytest.raises(ValueError, match=r"expected attn_mask of shape \(4, 4\)"):
        mha(x, x, x, attn_mask=jnp.zeros((3, 4)))
    with pytest.raises(ValueError, match="expected key and value with the query's batch size"):
        mha(x, jnp.ones((4, 2, 8)), jnp.ones((4, 2, 8)))
