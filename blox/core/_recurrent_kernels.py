"""Whole-sequence LSTM and GRU recurrences with a hand-written backward pass.

The ancestor `LSTM` and `GRU` run their sequences through these (see
`scan_cell`). The input projection of every step is computed before the
loop as one matmul; the loop does one `h @ W_h` (GRU: two) and the
elementwise gates. The backward loop does only what must be sequential: the
gate cotangents and `dh_{t-1} = d_gates @ W_h^T`; the weight gradients are
single matmuls over all steps afterwards (cuDNN's and PyTorch's scheme),
instead of autodiff's per-step accumulation inside the loop.

Layout matters on XLA:CPU: a loop fusion that takes a static slice of a
dynamically indexed array is emitted without vector instructions, so every
array the loops index per step holds one gate, `(time, batch, hidden)`.
"""

from typing import Any

import jax
import jax.numpy as jnp


def _sigmoid_grad(y: jax.Array) -> jax.Array:
    return y * (1 - y)


def _scan(body: Any, carry: Any, xs: Any, unroll: int, reverse: bool = False) -> Any:
    return jax.lax.scan(body, carry, xs, unroll=unroll, reverse=reverse)


def _gates(z: jax.Array, parts: int) -> list[jax.Array]:
    """`z` split into `parts` equal arrays along the last axis."""
    return jnp.split(z, parts, axis=-1)


def _flat(x: jax.Array) -> jax.Array:
    return x.reshape(-1, x.shape[-1])


def lstm_sequence(
    w_h: jax.Array,
    proj: jax.Array,
    h0: jax.Array,
    c0: jax.Array,
    *,
    forget_gate_bias: float = 0.0,
    unroll: int = 1,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The ancestor LSTM over a projected sequence: `(hs, h_T, c_T)`.

    Args:
        w_h: The recurrent kernel `(hidden, 4 * hidden)`, gates `i, g, f, o`.
        proj: `x @ W_x + b` of every step, `(time, batch, 4 * hidden)`.
        h0: Hidden state before the first step, `(batch, hidden)`.
        c0: Cell state before the first step, `(batch, hidden)`.
        forget_gate_bias: Added to the forget gate's pre-activation.
        unroll: Steps per loop iteration.

    Returns:
        Every step's hidden output `(time, batch, hidden)` and the final
        hidden and cell states.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.core._recurrent_kernels import lstm_sequence
        >>> hs, h, c = lstm_sequence(jnp.zeros((2, 8)), jnp.ones((5, 3, 8)),
        ...                          jnp.zeros((3, 2)), jnp.zeros((3, 2)))
        >>> hs.shape, c.shape
        ((5, 3, 2), (3, 2))
    """
    return _lstm(forget_gate_bias, unroll, w_h, proj, h0, c0)


def _lstm_forward(fgb: float, unroll: int, w_h: Any, proj: Any, h0: Any, c0: Any) -> Any:
    def step(carry: Any, p: Any) -> Any:
        h, c = carry
        zi, zg, zf, zo = _gates(jnp.dot(h, w_h), 4)
        pi, pg, pf, po = p
        f = zf + pf
        if fgb:
            f = f + fgb
        i, g, f, o = (
            jax.nn.sigmoid(zi + pi),
            jnp.tanh(zg + pg),
            jax.nn.sigmoid(f),
            jax.nn.sigmoid(zo + po),
        )
        new_c = f * c + i * g
        new_h = o * jnp.tanh(new_c)
        return (new_h, new_c), (new_h, (c, i, g, f, o))

    (h, c), (hs, saved) = _scan(step, (h0, c0), tuple(_gates(proj, 4)), unroll)
    return (hs, h, c), (w_h, h0, hs, saved)


def _lstm_backward(fgb: float, unroll: int, res: Any, cotangents: Any) -> Any:
    del fgb
    w_h, h0, hs, saved = res
    d_hs, d_h, d_c = cotangents
    w_t = w_h.T

    def step(carry: Any, xs: Any) -> Any:
        dh, dc = carry
        d_out, (c, i, g, f, o) = xs
        dh = dh + d_out
        tc = jnp.tanh(f * c + i * g)  # recomputed: one array less to keep
        dc = dc + dh * o * (1 - tc * tc)
        dz = jnp.concatenate(
            [
                dc * g * _sigmoid_grad(i),
                dc * i * (1 - g * g),
                dc * c * _sigmoid_grad(f),
                dh * tc * _sigmoid_grad(o),
            ],
            axis=-1,
        )
        return (jnp.dot(dz, w_t), dc * f), dz

    (dh0, dc0), d_proj = _scan(step, (d_h, d_c), (d_hs, saved), unroll, reverse=True)
    h_prev = jnp.concatenate([h0[None], hs[:-1]], axis=0)
    d_w = jnp.dot(_flat(h_prev).T, _flat(d_proj))
    return d_w, d_proj, dh0, dc0


def _lstm_primal(fgb: float, unroll: int, w_h: Any, proj: Any, h0: Any, c0: Any) -> Any:
    return _lstm_forward(fgb, unroll, w_h, proj, h0, c0)[0]


_lstm = jax.custom_vjp(_lstm_primal, nondiff_argnums=(0, 1))
_lstm.defvjp(_lstm_forward, _lstm_backward)


def gru_sequence(
    w_gates: jax.Array,
    w_candidate: jax.Array,
    proj_gates: jax.Array,
    proj_candidate: jax.Array,
    h0: jax.Array,
    *,
    unroll: int = 1,
) -> tuple[jax.Array, jax.Array]:
    """The ancestor GRU over a projected sequence: `(hs, h_T)`.

    Args:
        w_gates: Recurrent rows of the gates kernel `(hidden, 2 * hidden)`,
            gates `z, r`.
        w_candidate: Recurrent rows of the candidate kernel `(hidden, hidden)`
            (they multiply `r * h`).
        proj_gates: `x @ W_gates_x + b_gates`, `(time, batch, 2 * hidden)`.
        proj_candidate: `x @ W_candidate_x + b_candidate`, `(time, batch, hidden)`.
        h0: Hidden state before the first step, `(batch, hidden)`.
        unroll: Steps per loop iteration.

    Returns:
        Every step's output `(time, batch, hidden)` and the final state.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.core._recurrent_kernels import gru_sequence
        >>> hs, h = gru_sequence(jnp.zeros((2, 4)), jnp.zeros((2, 2)),
        ...                      jnp.ones((5, 3, 4)), jnp.ones((5, 3, 2)), jnp.zeros((3, 2)))
        >>> hs.shape, h.shape
        ((5, 3, 2), (3, 2))
    """
    return _gru(unroll, w_gates, w_candidate, proj_gates, proj_candidate, h0)


def _gru_forward(unroll: int, w_g: Any, w_c: Any, p_g: Any, p_c: Any, h0: Any) -> Any:
    def step(h: Any, p: Any) -> Any:
        pz, pr, pn = p
        gz, gr = _gates(jnp.dot(h, w_g), 2)
        z, r = jax.nn.sigmoid(pz + gz), jax.nn.sigmoid(pr + gr)
        n = jnp.tanh(pn + jnp.dot(r * h, w_c))
        new_h = (1 - z) * h + z * n
        return new_h, (new_h, (h, z, r, n))

    pz, pr = _gates(p_g, 2)
    h, (hs, saved) = _scan(step, h0, (pz, pr, p_c), unroll)
    return (hs, h), (w_g, w_c, saved)


def _gru_backward(unroll: int, res: Any, cotangents: Any) -> Any:
    w_g, w_c, saved = res
    d_hs, d_h = cotangents
    wg_t, wc_t = w_g.T, w_c.T

    def step(dh: Any, xs: Any) -> Any:
        d_out, (h, z, r, n) = xs
        dh = dh + d_out
        dn = dh * z * (1 - n * n)
        d_rh = jnp.dot(dn, wc_t)
        dzr = jnp.concatenate(
            [dh * (n - h) * _sigmoid_grad(z), d_rh * h * _sigmoid_grad(r)], axis=-1
        )
        d_prev = dh * (1 - z) + d_rh * r + jnp.dot(dzr, wg_t)
        return d_prev, (dzr, dn)

    dh0, (d_pg, d_pc) = _scan(step, d_h, (d_hs, saved), unroll, reverse=True)
    h_prev, _, r, _ = saved
    d_wg = jnp.dot(_flat(h_prev).T, _flat(d_pg))
    d_wc = jnp.dot(_flat(r * h_prev).T, _flat(d_pc))
    return d_wg, d_wc, d_pg, d_pc, dh0


def _gru_primal(unroll: int, w_g: Any, w_c: Any, p_g: Any, p_c: Any, h0: Any) -> Any:
    return _gru_forward(unroll, w_g, w_c, p_g, p_c, h0)[0]


_gru = jax.custom_vjp(_gru_primal, nondiff_argnums=(0,))
_gru.defvjp(_gru_forward, _gru_backward)
