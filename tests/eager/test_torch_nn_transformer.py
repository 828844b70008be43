"""`torch_nn`'s Transformer blocks against `torch.nn`'s, weights copied by `load_state_dict`.

Outputs and gradients (inputs and every weight) in float32 within 1e-5,
through two stacked layers and a final norm too (sequences of 4-6 positions,
8 features: no long reduction).
"""

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from blox.eager import torch_nn as nn

from ._torch_seq_parity import check_parity

TOL = 1e-5


def _x(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _as(module, array):
    """`array` as the module's framework takes it (closed-over masks)."""
    return torch.tensor(array) if isinstance(module, torch.nn.Module) else jnp.asarray(array)


def _load(reference, ours):
    assert [(k, tuple(v.shape)) for k, v in ours.state_dict().items()] == [
        (k, tuple(v.shape)) for k, v in reference.state_dict().items()
    ]
    ours.load_state_dict(reference.state_dict())  # torch tensors, as PyTorch gives them
    return reference, ours


def _causal(n: int) -> np.ndarray:
    return torch.nn.Transformer.generate_square_subsequent_mask(n).numpy()


def test_encoder_stack_matches_torch():
    # Post-norm, relu, time first; boolean causal and padding masks (PyTorch
    # warns when their types differ).
    torch.manual_seed(0)
    kw = dict(dim_feedforward=16, dropout=0.0)
    reference = torch.nn.TransformerEncoder(
        torch.nn.TransformerEncoderLayer(8, 2, **kw),
        2,
        norm=torch.nn.LayerNorm(8),
        enable_nested_tensor=False,
    )
    ours = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, **kw), 2, norm=nn.LayerNorm(8))
    _load(reference, ours)
    x = _x(5, 2, 8)
    padding = np.zeros((2, 5), bool)
    padding[1, -2:] = True

    def call(module, x):
        causal = np.triu(np.ones((5, 5), bool), k=1)
        return (module(x, mask=_as(module, causal), src_key_padding_mask=_as(module, padding)),)

    check_parity(reference, ours, [x], call, call, rtol=TOL, atol=TOL)


def test_encoder_layer_norm_first_gelu_batch_first():
    torch.manual_seed(0)
    kw = dict(dim_feedforward=16, dropout=0.0, activation="gelu", batch_first=True)
    reference = torch.nn.TransformerEncoderLayer(8, 2, norm_first=True, **kw)
    ours = nn.TransformerEncoderLayer(8, 2, norm_first=True, **kw)
    _load(reference, ours)

    def call(module, x):
        return (module(x, src_mask=_as(module, _causal(5)), is_causal=True),)

    check_parity(reference, ours, [_x(2, 5, 8)], call, call, rtol=TOL, atol=TOL)


def test_decoder_stack_matches_torch():
    # One post-norm layer and a final norm, with a causal target mask and a
    # memory padding mask (the encoder test covers stacking).
    torch.manual_seed(0)
    kw = dict(dim_feedforward=16, dropout=0.0)
    reference = torch.nn.TransformerDecoder(
        torch.nn.TransformerDecoderLayer(8, 2, **kw), 1, norm=torch.nn.LayerNorm(8)
    )
    ours = nn.TransformerDecoder(nn.TransformerDecoderLayer(8, 2, **kw), 1, norm=nn.LayerNorm(8))
    _load(reference, ours)
    memory_padding = np.zeros((2, 6), bool)
    memory_padding[0, -1] = True

    def call(module, tgt, memory):
        out = module(
            tgt,
            memory,
            tgt_mask=_as(module, np.triu(np.ones((4, 4), bool), k=1)),
            memory_key_padding_mask=_as(module, memory_padding),
        )
        return (out,)

    check_parity(
        reference,
        ours,
        [_x(4, 2, 8), _x(6, 2, 8, seed=1)],
        call,
        call,
        rtol=TOL,
        atol=TOL,
    )


def test_decoder_layer_norm_first_eval():
    # Eval mode (PyTorch's dropout p=0.1 off), pre-norm, batch first, no biases.
    torch.manual_seed(0)
    kw = dict(dim_feedforward=16, batch_first=True, norm_first=True, bias=False)
    reference = torch.nn.TransformerDecoderLayer(8, 2, **kw).eval()
    ours = nn.TransformerDecoderLayer(8, 2, **kw).eval()
    _load(reference, ours)
    tgt, memory = _x(2, 4, 8), _x(2, 6, 8, seed=1)
    want = reference(torch.tensor(tgt), torch.tensor(memory)).detach().numpy()
    np.testing.assert_allclose(ours(tgt, memory), want, rtol=TOL, atol=TOL)


def test_cloned_layers_have_their_own_streams():
    # PyTorch's deep copies draw different masks from the global generator;
    # blox's copies are re-seeded by index, weights equal.
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, dim_feedforward=16), 2)
    first, second = encoder.layers
    assert not np.array_equal(first.dropout.rng.seed, second.dropout.rng.seed)
    assert not np.array_equal(first.self_attn.rng.seed, second.self_attn.rng.seed)
    np.testing.assert_array_equal(first.linear1.weight, second.linear1.weight)


def test_square_subsequent_mask_matches_torch():
    np.testing.assert_array_equal(nn.Transformer.generate_square_subsequent_mask(4), _causal(4))


def test_transformer_errors():
    with pytest.raises(ValueError, match="expected activation 'relu', 'gelu' or a callable"):
        nn.TransformerEncoderLayer(8, 2, activation="swish")
    with pytest.raises(TypeError, match="expected a TransformerEncoderLayer"):
        nn.TransformerEncoder(nn.Identity(), 2)
    with pytest.raises(ValueError, match="expected num_layers to be a positive int"):
        nn.TransformerDecoder(nn.Identity(), 0)
