"""Whole-sequence LSTM and GRU recurrences with a hand-written backward pass.

The ancestor `LSTM` and `GRU` run their sequences through these (see
`scan_cell`). The input projection of every step is computed before the
loop as one matmul; the loop does one `h @ W_h` (GRU: two) and the
elementwise gates. The backward loop does only what must be sequential: the
gate cotangents and `dh_{t-1} = d_gates @ W_h^T`; the weight gradients are
single matmuls over all steps afterwards (cuDNN's and PyTorch's scheme),
instead of autodiff's per-step accumulation inside the loop.

Layout matters on XLA:CPU: a loop fusion that takes a static slice of a
dynamically indexed `scan` input is emitted without vector instructions, so
the arrays a `scan` indexes per step hold one gate, `(time, batch, hidden)`.

The LSTM takes its fused kernel over `[x, h]`, the bias and the inputs, so
that the kernel's gradient is one matmul of every step's `[x_t, h_{t-1}]`
against the gate cotangents, and the bias is added inside the loop rather
than in a pass of its own over the projection.

The LSTM's training pass keeps one `(time, batch, 4 * hidden)` buffer for
the gates: the forward loop overwrites step `t`'s projection with its
activated gates, and the backward loop overwrites those with the gate
cotangents, which are the cotangent of the projection. Both loops are
`fori_loop`s over that buffer rather than `scan`s with stacked outputs, so
XLA updates it in place: the pass holds the gates once, not a projection,
activations and cotangents side by side. XLA copies a loop-carried buffer
every iteration unless every read of it comes before its update in data
order, so the backward loop reads step `t - 1`'s gates after writing step
`t`'s cotangents, and every value computed from a read feeds that update.

The GRU takes its two fused kernels and biases likewise, and its training
pass does the same with its two projections (`z, r` and the candidate's),
which become `z, r` and `n`, then their cotangents. Its loops always run
one step per iteration: in an unrolled body XLA fuses the reads of one step
into the next step's computations, which puts reads after updates and brings
the per-iteration copies back.
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
    kernel: jax.Array,
    bias: jax.Array,
    xs: jax.Array,
    h0: jax.Array,
    c0: jax.Array,
    *,
    forget_gate_bias: float = 0.0,
    unroll: int = 1,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The ancestor LSTM over a sequence: `(hs, h_T, c_T)`.

    Args:
        kernel: The fused kernel over `[x, h]`, `(in + hidden, 4 * hidden)`:
            its first `in` rows multiply `x`, the rest `h`; gates `i, g, f, o`.
        bias: `(4 * hidden,)`.
        xs: Time-major inputs `(time, batch, in)`.
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
        >>> hs, h, c = lstm_sequence(jnp.zeros((6, 8)), jnp.ones(8), jnp.ones((5, 3, 4)),
        ...                          jnp.zeros((3, 2)), jnp.zeros((3, 2)))
        >>> hs.shape, c.shape
        ((5, 3, 2), (3, 2))
    """
    return _lstm(forget_gate_bias, unroll, kernel, bias, xs, h0, c0)


def _lstm_cell(fgb: float, w_h: Any, h: Any, c: Any, p: Any) -> Any:
    """One step from the projection `p`, split into its gates: `(h', c', gates)`."""
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
    return o * jnp.tanh(new_c), new_c, (i, g, f, o)


def _at(a: jax.Array, t: Any) -> jax.Array:
    return jax.lax.dynamic_index_in_dim(a, t, keepdims=False)


def _put(a: jax.Array, t: Any, value: jax.Array) -> jax.Array:
    return jax.lax.dynamic_update_index_in_dim(a, value, t, 0)


def _plus(x: jax.Array, bias: jax.Array) -> jax.Array:
    """`x + bias` over the last axis, broadcast explicitly (blox runs under rank promotion 'raise')."""
    return x + bias.reshape((1,) * (x.ndim - 1) + bias.shape)


def _input_product(kernel: Any, xs: Any) -> Any:
    """`xs @ kernel[:in]`, as one 2-D matmul (XLA:CPU runs rank-3 dots slowly)."""
    size = xs.shape[-1]
    y = jnp.dot(_flat(xs), kernel[:size])
    return y.reshape(xs.shape[:-1] + y.shape[-1:])


def _lstm_primal(fgb: float, unroll: int, kernel: Any, bias: Any, xs: Any, h0: Any, c0: Any) -> Any:
    w_h = kernel[xs.shape[-1] :]

    def step(carry: Any, p: Any) -> Any:
        h, c, _ = _lstm_cell(fgb, w_h, *carry, p)
        return (h, c), h

    proj = _plus(_input_product(kernel, xs), bias)
    (h, c), hs = _scan(step, (h0, c0), tuple(_gates(proj, 4)), unroll)
    return hs, h, c


def _lstm_forward(
    fgb: float, unroll: int, kernel: Any, bias: Any, xs: Any, h0: Any, c0: Any
) -> Any:
    steps, w_h = xs.shape[0], kernel[xs.shape[-1] :]
    shape = xs.shape[:-1] + h0.shape[-1:]
    if steps == 0:
        gates = jnp.zeros(xs.shape[:-1] + bias.shape, bias.dtype)
        return (jnp.zeros(shape, h0.dtype), h0, c0), (kernel, xs, h0, None, None, gates)

    def body(t: Any, carry: Any) -> Any:
        h, c, gates, cs, hs = carry
        # the bias is added here rather than to the whole projection first:
        # the same sums, one pass over a (time, batch, 4 * hidden) array less
        p = _gates(_plus(_at(gates, t), bias), 4)
        new_h, new_c, acts = _lstm_cell(fgb, w_h, h, c, p)
        gates = _put(gates, t, jnp.concatenate(acts, axis=-1))  # over step t's projection
        return new_h, new_c, gates, _put(cs, t, c), _put(hs, t, new_h)

    init = (
        h0,
        c0,
        _input_product(kernel, xs),
        jnp.zeros(shape, c0.dtype),
        jnp.zeros(shape, h0.dtype),
    )
    h, c, gates, cs, hs = jax.lax.fori_loop(0, steps, body, init, unroll=unroll)
    return (hs, h, c), (kernel, xs, h0, hs, cs, gates)


def _lstm_backward(fgb: float, unroll: int, res: Any, cotangents: Any) -> Any:
    del fgb
    kernel, xs, h0, hs, cs, gates = res
    d_hs, d_h, d_c = cotangents
    steps, size = xs.shape[0], xs.shape[-1]
    if steps == 0:
        return (
            jnp.zeros_like(kernel),
            jnp.zeros(gates.shape[-1:], gates.dtype),
            jnp.zeros_like(xs),
            d_h,
            d_c,
        )
    w_t = kernel[size:].T

    def body(k: Any, carry: Any) -> Any:
        t = steps - 1 - k
        dh, dc, acts, gates = carry
        i, g, f, o = _gates(acts, 4)
        c = _at(cs, t)
        dh = dh + _at(d_hs, t)
        tc = jnp.tanh(f * c + i * g)  # recomputed: one array less to keep
        dc = dc + dh * o * (1 - tc * tc)
        # dc * f is the carry and a factor of the forget gate's cotangent, so
        # that the buffer's update depends on this read of f too
        dc_prev = dc * f
        dz = jnp.concatenate(
            [
                dc * g * _sigmoid_grad(i),
                dc * i * (1 - g * g),
                dc_prev * c * (1 - f),
                dh * tc * _sigmoid_grad(o),
            ],
            axis=-1,
        )
        gates = _put(gates, t, dz)  # over step t's gates
        # step t - 1's gates, read after that update (t = 0 reads one it drops)
        acts = _at(gates, jnp.maximum(t - 1, 0))
        return jnp.dot(dz, w_t), dc_prev, acts, gates

    init = (d_h, d_c, gates[steps - 1], gates)
    dh0, dc0, _, d_proj = jax.lax.fori_loop(0, steps, body, init, unroll=unroll)
    # the kernel's gradient is one matmul of every step's [x_t, h_{t-1}]
    # against the gates' cotangents
    inputs = jnp.concatenate([xs, jnp.concatenate([h0[None], hs[:-1]], axis=0)], axis=-1)
    d_proj = _flat(d_proj)
    d_kernel = jnp.dot(_flat(inputs).T, d_proj)
    d_xs = jnp.dot(d_proj, kernel[:size].T).reshape(xs.shape)
    return d_kernel, jnp.sum(d_proj, axis=0), d_xs, dh0, dc0


_lstm = jax.custom_vjp(_lstm_primal, nondiff_argnums=(0, 1))
_lstm.defvjp(_lstm_forward, _lstm_backward)


def gru_sequence(
    gates_kernel: jax.Array,
    gates_bias: jax.Array,
    candidate_kernel: jax.Array,
    candidate_bias: jax.Array,
    xs: jax.Array,
    h0: jax.Array,
    *,
    unroll: int = 1,
) -> tuple[jax.Array, jax.Array]:
    """The ancestor GRU over a sequence: `(hs, h_T)`.

    Args:
        gates_kernel: The gates' kernel over `[x, h]`, `(in + hidden, 2 * hidden)`,
            gates `z, r`.
        gates_bias: `(2 * hidden,)`.
        candidate_kernel: The candidate's kernel over `[x, r * h]`,
            `(in + hidden, hidden)`.
        candidate_bias: `(hidden,)`.
        xs: Time-major inputs `(time, batch, in)`.
        h0: Hidden state before the first step, `(batch, hidden)`.
        unroll: Steps per loop iteration of the forward pass when it is not
            differentiated; the training pass's loops run one step per
            iteration (see the module's notes).

    Returns:
        Every step's output `(time, batch, hidden)` and the final state.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.core._recurrent_kernels import gru_sequence
        >>> hs, h = gru_sequence(jnp.zeros((5, 4)), jnp.ones(4), jnp.zeros((5, 2)),
        ...                      jnp.ones(2), jnp.ones((6, 3, 3)), jnp.zeros((3, 2)))
        >>> hs.shape, h.shape
        ((6, 3, 2), (3, 2))
    """
    return _gru(unroll, gates_kernel, gates_bias, candidate_kernel, candidate_bias, xs, h0)


def _gru_cell(w_g: Any, w_c: Any, h: Any, p: Any) -> Any:
    """One step from the projections `p = (pz, pr, pn)`: `(h', (z, r, n))`."""
    pz, pr, pn = p
    gz, gr = _gates(jnp.dot(h, w_g), 2)
    z, r = jax.nn.sigmoid(pz + gz), jax.nn.sigmoid(pr + gr)
    n = jnp.tanh(pn + jnp.dot(r * h, w_c))
    return (1 - z) * h + z * n, (z, r, n)


def _gru_primal(unroll: int, k_g: Any, b_g: Any, k_c: Any, b_c: Any, xs: Any, h0: Any) -> Any:
    size = xs.shape[-1]
    w_g, w_c = k_g[size:], k_c[size:]

    def step(h: Any, p: Any) -> Any:
        new_h, _ = _gru_cell(w_g, w_c, h, p)
        return new_h, new_h

    pz, pr = _gates(_plus(_input_product(k_g, xs), b_g), 2)
    h, hs = _scan(step, h0, (pz, pr, _plus(_input_product(k_c, xs), b_c)), unroll)
    return hs, h


def _gru_forward(unroll: int, k_g: Any, b_g: Any, k_c: Any, b_c: Any, xs: Any, h0: Any) -> Any:
    del unroll
    steps, size = xs.shape[0], xs.shape[-1]
    w_g, w_c = k_g[size:], k_c[size:]
    shape = xs.shape[:-1] + h0.shape[-1:]
    if steps == 0:
        zeros = jnp.zeros(shape, h0.dtype)
        zr = jnp.zeros(xs.shape[:-1] + b_g.shape, b_g.dtype)
        return (zeros, h0), (k_g, k_c, xs, h0, zeros, zeros, zr, zeros)

    def body(t: Any, carry: Any) -> Any:
        h, zr, cand, hs, rh = carry
        # the biases are added here, as in the LSTM
        p = (*_gates(_plus(_at(zr, t), b_g), 2), _plus(_at(cand, t), b_c))
        new_h, (z, r, n) = _gru_cell(w_g, w_c, h, p)
        zr = _put(zr, t, jnp.concatenate([z, r], axis=-1))  # over step t's projections
        cand = _put(cand, t, n)
        return new_h, zr, cand, _put(hs, t, new_h), _put(rh, t, r * h)

    zeros = jnp.zeros(shape, h0.dtype)
    init = (h0, _input_product(k_g, xs), _input_product(k_c, xs), zeros, zeros)
    h, zr, cand, hs, rh = jax.lax.fori_loop(0, steps, body, init)
    return (hs, h), (k_g, k_c, xs, h0, hs, rh, zr, cand)


def _gru_backward(unroll: int, res: Any, cotangents: Any) -> Any:
    del unroll
    k_g, k_c, xs, h0, hs, rh, zr, cand = res
    d_hs, d_h = cotangents
    steps, size = xs.shape[0], xs.shape[-1]
    if steps == 0:
        return (
            jnp.zeros_like(k_g),
            jnp.zeros(zr.shape[-1:], zr.dtype),
            jnp.zeros_like(k_c),
            jnp.zeros(cand.shape[-1:], cand.dtype),
            jnp.zeros_like(xs),
            d_h,
        )
    wg_t, wc_t = k_g[size:].T, k_c[size:].T

    def body(k: Any, carry: Any) -> Any:
        t = steps - 1 - k
        dh, (acts, n), zr, cand = carry
        z, r = _gates(acts, 2)
        h = jnp.where(t == 0, h0, _at(hs, jnp.maximum(t - 1, 0)))
        dh = dh + _at(d_hs, t)
        dn = dh * z * (1 - n * n)
        d_rh = jnp.dot(dn, wc_t)
        dzr = jnp.concatenate(
            [dh * (n - h) * _sigmoid_grad(z), d_rh * h * _sigmoid_grad(r)], axis=-1
        )
        d_prev = dh * (1 - z) + d_rh * r + jnp.dot(dzr, wg_t)
        zr, cand = _put(zr, t, dzr), _put(cand, t, dn)  # over step t's gates
        # step t - 1's gates, read after those updates (t = 0 reads ones it drops)
        prev = jnp.maximum(t - 1, 0)
        return d_prev, (_at(zr, prev), _at(cand, prev)), zr, cand

    init = (d_h, (zr[steps - 1], cand[steps - 1]), zr, cand)
    dh0, _, d_pg, d_pc = jax.lax.fori_loop(0, steps, body, init)
    # each kernel's gradient is one matmul of its per-step inputs against
    # its cotangents: [x_t, h_{t-1}] for the gates, [x_t, r_t * h_{t-1}] for n
    h_prev = jnp.concatenate([h0[None], hs[:-1]], axis=0)
    d_pg, d_pc = _flat(d_pg), _flat(d_pc)
    d_kg = jnp.dot(_flat(jnp.concatenate([xs, h_prev], axis=-1)).T, d_pg)
    d_kc = jnp.dot(_flat(jnp.concatenate([xs, rh], axis=-1)).T, d_pc)
    d_xs = jnp.dot(d_pg, k_g[:size].T) + jnp.dot(d_pc, k_c[:size].T)
    sums = jnp.sum(d_pg, axis=0), jnp.sum(d_pc, axis=0)
    return d_kg, sums[0], d_kc, sums[1], d_xs.reshape(xs.shape), dh0


_gru = jax.custom_vjp(_gru_primal, nondiff_argnums=(0,))
_gru.defvjp(_gru_forward, _gru_backward)
