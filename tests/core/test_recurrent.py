"""`LSTM`, `GRU` and the scans, against hand-written steps in numpy.

Reference cells (float64):
  LSTM: `i, g, f, o = split([x, h] @ W + b, 4)`, `c' = σ(f) c + σ(i) tanh(g)`,
        `h' = σ(o) tanh(c')`.
  GRU:  `z, r = σ(split([x, h] @ Wg + bg, 2))`, `n = tanh([x, r h] @ Wc + bc)`,
        `h' = (1 - z) h + z n`.
"""

import re

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

import blox as bx

from ._flax_ref import normal  # jax.random.normal's values without a compile per shape

TOL = {"rtol": 1e-5, "atol": 1e-5}
B, T, F = 2, 4, 3


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _weights(params, *path):
    kernel = np.asarray(params[("net", *path, "kernel")].value, np.float64)
    bias = np.asarray(params[("net", *path, "bias")].value, np.float64)
    return kernel, bias


def _lstm_ref(params, x, h, c):
    kernel, bias = _weights(params, "cell", "gates")
    i, g, f, o = np.split(np.concatenate([x, h], -1) @ kernel + bias, 4, axis=-1)
    c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    h = _sigmoid(o) * np.tanh(c)
    return h, (h, c)


def _gru_ref(params, x, h):
    gates, gates_b = _weights(params, "cell", "gates")
    cand, cand_b = _weights(params, "cell", "candidate")
    z, r = np.split(_sigmoid(np.concatenate([x, h], -1) @ gates + gates_b), 2, axis=-1)
    n = np.tanh(np.concatenate([x, r * h], -1) @ cand + cand_b)
    h = (1 - z) * h + z * n
    return h, (h,)


CELLS = {
    "lstm": (bx.LSTM, bx.LSTMState, _lstm_ref, ("gates",)),
    "gru": (bx.GRU, bx.GRUState, _gru_ref, ("gates", "candidate")),
}


def _make(kind: str, hidden: int = 5, is_static: bool = False):
    """The cell at net/cell with created params and random (non-zero) biases."""
    cls, _, _, linears = CELLS[kind]
    graph = bx.Graph("net")
    rng = bx.Rng(graph / "rng")
    cell = cls(graph / "cell", hidden, rng=rng, is_static=is_static)
    params = rng.seed(bx.Params(), seed=0)
    state, params = cell.initial_state(params, jnp.zeros((B, F)))
    _, params = cell(params, jnp.zeros((B, F)), state)
    for i, name in enumerate(linears):
        linear = getattr(cell, name)
        bias = params[("net", "cell", name, "bias")].value
        params = linear.set_param(params, "bias", normal(i, bias.shape))
    return cell, params.locked()


def _state(kind: str, hidden: int = 5, seed: int = 3):
    _, state_cls, _, _ = CELLS[kind]
    keys = jax.random.split(jax.random.key(seed), len(state_cls._fields))
    return state_cls(*(normal(k, (B, hidden)) for k in keys))


def _xs(seed: int = 1):
    return normal(seed, (B, T, F))


def _ref_loop(kind, params, xs, state, is_reset=None):
    """Steps the reference cell, zeroing reset rows' state before each step."""
    ref = CELLS[kind][2]
    state = tuple(np.asarray(s, np.float64) for s in state)
    xs = np.asarray(xs, np.float64)
    outputs = []
    for t in range(xs.shape[1]):
        if is_reset is not None:
            keep = ~np.asarray(is_reset)[:, t, None]
            state = tuple(np.where(keep, s, 0.0) for s in state)
        out, state = ref(params, xs[:, t], *state)
        outputs.append(out)
    return np.stack(outputs, axis=1), state


def _close_state(actual, expected) -> None:
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(np.asarray(a), e, **TOL)


# -- one step -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", CELLS)
def test_step_matches_hand_written_cell(kind: str) -> None:
    cell, params = _make(kind)
    state = _state(kind)
    x = _xs()[:, 0]
    (out, new_state), after = cell(params, x, state)
    expected_out, expected_state = CELLS[kind][2](
        params, np.asarray(x, np.float64), *(np.asarray(s, np.float64) for s in state)
    )
    assert type(new_state) is CELLS[kind][1]
    np.testing.assert_allclose(np.asarray(out), expected_out, **TOL)
    _close_state(new_state, expected_state)
    assert after == params


def test_lstm_gate_layout_in_the_kernel() -> None:
    # A kernel that is zero except for one gate block shows which block is
    # which: with only `o` open (large bias) and `i` closed the cell stays zero.
    cell, params = _make("lstm", hidden=2)
    kernel = jnp.zeros((F + 2, 8))
    bias = jnp.array([-50.0] * 2 + [0.0] * 2 + [-50.0] * 2 + [50.0] * 2)  # i, g, f, o
    params = cell.gates.set_param(params, "kernel", kernel)
    params = cell.gates.set_param(params, "bias", bias)
    state = bx.LSTMState(hidden=jnp.ones((B, 2)), cell=jnp.full((B, 2), 0.5))
    (h, new), _ = cell(params, jnp.ones((B, F)), state)
    # forget gate closed, input gate closed: c' = 0, h' = σ(50) * tanh(0) = 0.
    np.testing.assert_allclose(np.asarray(new.cell), 0.0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(h), 0.0, atol=1e-6)
    # Open the forget gate instead: c' = c, h' = tanh(c).
    params = cell.gates.set_param(params, "bias", bias.at[4:6].set(50.0))
    (h, new), _ = cell(params, jnp.ones((B, F)), state)
    np.testing.assert_allclose(np.asarray(new.cell), 0.5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(h), np.tanh(0.5), atol=1e-6)


def test_initial_state_is_zeros_of_batch_by_hidden() -> None:
    for kind in CELLS:
        cell, params = _make(kind, hidden=6)
        state, _ = cell.initial_state(params, _xs())
        assert type(state) is CELLS[kind][1]
        for leaf in state:
            np.testing.assert_array_equal(np.asarray(leaf), np.zeros((B, 6)))
            assert leaf.dtype == jnp.float32


# -- apply ----------------------------------------------------------------------------


@pytest.mark.parametrize("is_static", [False, True], ids=["dynamic", "static"])
@pytest.mark.parametrize("kind", CELLS)
def test_apply_equals_a_loop_of_reference_steps(kind: str, is_static: bool) -> None:
    cell, params = _make(kind, is_static=is_static)
    assert cell.is_static is is_static
    xs, state = _xs(), _state(kind)
    (outputs, final), _ = cell.apply(params, xs, state)
    expected, expected_final = _ref_loop(kind, params, xs, state)
    assert outputs.shape == (B, T, 5)
    np.testing.assert_allclose(np.asarray(outputs), expected, **TOL)
    _close_state(final, expected_final)
    # prev_state=None starts from zeros.
    (outputs, _), _ = cell.apply(params, xs)
    zeros = tuple(np.zeros((B, 5)) for _ in state)
    np.testing.assert_allclose(np.asarray(outputs), _ref_loop(kind, params, xs, zeros)[0], **TOL)


@pytest.mark.parametrize("kind", CELLS)
def test_apply_equals_a_loop_of_the_cells_own_steps(kind: str) -> None:
    cell, params = _make(kind)
    xs, state = _xs(), _state(kind)
    (outputs, final), _ = cell.apply(params, xs, state)
    step_state = state
    for t in range(T):
        (out, step_state), _ = cell(params, xs[:, t], step_state)
        np.testing.assert_allclose(np.asarray(outputs[:, t]), np.asarray(out), **TOL)
    _close_state(final, [np.asarray(s) for s in step_state])


@pytest.mark.parametrize("kind", CELLS)
def test_static_equals_dynamic(kind: str) -> None:
    cell, params = _make(kind)
    xs, state = _xs(), _state(kind)
    dynamic = cell.apply(params, xs, state)
    cell.is_static = True
    static = cell.apply(params, xs, state)
    for a, e in zip(jax.tree.leaves(static[0]), jax.tree.leaves(dynamic[0]), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), **TOL)
    assert static[1] == dynamic[1] == params


@pytest.mark.parametrize("is_static", [False, True], ids=["dynamic", "static"])
@pytest.mark.parametrize("kind", CELLS)
def test_first_unlocked_apply_creates_all_params_and_equals_locked(
    kind: str, is_static: bool
) -> None:
    cls, _, _, linears = CELLS[kind]
    graph = bx.Graph("net")
    rng = bx.Rng(graph / "rng")
    cell = cls(graph / "cell", 5, rng=rng, is_static=is_static)
    fresh = rng.seed(bx.Params(), seed=0)
    xs = _xs()
    (first, first_state), params = cell.apply(fresh, xs)
    created = {p[2:] for p in params.keys() if p[1] == "cell"}
    assert created == {(name, leaf) for name in linears for leaf in ("kernel", "bias")}
    (again, again_state), after = cell.apply(params.locked(), xs)
    np.testing.assert_allclose(np.asarray(first), np.asarray(again), **TOL)
    _close_state(first_state, [np.asarray(s) for s in again_state])
    assert after == params.locked()


@pytest.mark.parametrize("hidden", [1, 3, 7])
@pytest.mark.parametrize("kind", CELLS)
def test_is_reset_per_row_and_step_for_any_hidden_size(kind: str, hidden: int) -> None:
    cell, params = _make(kind, hidden=hidden)
    xs, state = _xs(), _state(kind, hidden=hidden)
    is_reset = jnp.array([[True, False, False, True], [False, False, True, False]])
    expected, expected_final = _ref_loop(kind, params, xs, state, is_reset)
    for is_static in (False, True):
        cell.is_static = is_static
        (outputs, final), _ = cell.apply(params, xs, state, is_reset=is_reset)
        np.testing.assert_allclose(np.asarray(outputs), expected, **TOL)
        _close_state(final, expected_final)
    # The reset really changed something: without it the result differs.
    (plain, _), _ = cell.apply(params, xs, state)
    assert np.abs(np.asarray(plain) - expected).max() > 1e-3


def test_is_reset_as_a_numpy_array() -> None:
    cell, params = _make("gru", hidden=3)
    xs, state = _xs(), _state("gru", hidden=3)
    is_reset = np.array([[False, True, False, False], [True, False, False, False]])
    expected, _ = _ref_loop("gru", params, xs, state, is_reset)
    (outputs, _), _ = cell.apply(params, xs, state, is_reset=is_reset)
    np.testing.assert_allclose(np.asarray(outputs), expected, **TOL)


def test_maybe_reset_state_forms() -> None:
    cell, params = _make("lstm", hidden=3)
    state = bx.LSTMState(hidden=jnp.ones((B, 3)), cell=jnp.full((B, 3), 2.0))
    x = jnp.zeros((B, F))
    assert cell.maybe_reset_state(params, state, x, None) is state
    for reset in (jnp.array([True, False]), np.array([True, False])):
        new = cell.maybe_reset_state(params, state, x, reset)
        np.testing.assert_array_equal(np.asarray(new.hidden), [[0, 0, 0], [1, 1, 1]])
        np.testing.assert_array_equal(np.asarray(new.cell), [[0, 0, 0], [2, 2, 2]])
    per_leaf = bx.LSTMState(hidden=jnp.array([False, True]), cell=jnp.array([True, False]))
    new = cell.maybe_reset_state(params, state, x, per_leaf)
    np.testing.assert_array_equal(np.asarray(new.hidden), [[1, 1, 1], [0, 0, 0]])
    np.testing.assert_array_equal(np.asarray(new.cell), [[0, 0, 0], [2, 2, 2]])


def test_apply_under_jit_equals_eager() -> None:
    cell, params = _make("lstm")
    xs, state = _xs(), _state("lstm")
    is_reset = jnp.zeros((B, T), bool).at[1, 2].set(True)
    eager = cell.apply(params, xs, state, is_reset)
    jitted = jax.jit(cell.apply)(params, xs, state, is_reset)
    for a, e in zip(jax.tree.leaves(jitted[0]), jax.tree.leaves(eager[0]), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), **TOL)
    assert jitted[1] == eager[1] == params


# -- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", CELLS)
def test_apply_with_rank_below_two_is_a_value_error(kind: str) -> None:
    cell, params = _make(kind)
    name = type(cell).__name__
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"{name} at 'net/cell': expected every input leaf to have rank >= 2 "
            "([batch, time, ...]), got shape (3,). Fix:"
        ),
    ):
        cell.apply(params, jnp.ones(3))


@pytest.mark.parametrize("is_static", [False, True], ids=["dynamic", "static"])
def test_is_reset_with_another_time_length_is_a_value_error(is_static: bool) -> None:
    cell, params = _make("lstm", is_static=is_static)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "LSTM at 'net/cell': expected is_reset leaves of shape [batch, time=4], "
            "got shape (2, 3). Fix:"
        ),
    ):
        cell.apply(params, _xs(), is_reset=jnp.zeros((B, 3), bool))


def test_empty_sequence_is_a_value_error() -> None:
    cell, params = _make("gru")
    with pytest.raises(
        ValueError,
        match=r"GRU at 'net/cell': expected at least one time step, got time length 0\. Fix:",
    ):
        cell.apply(params, jnp.ones((B, 0, F)))


def test_step_without_state_is_a_value_error() -> None:
    cell, params = _make("lstm")
    with pytest.raises(
        ValueError, match=r"LSTM at 'net/cell': expected a prev_state for one step, got None\."
    ):
        cell(params, jnp.ones((B, F)), None)


def test_step_with_a_rank_one_input_is_a_value_error() -> None:
    cell, params = _make("gru")
    state = _state("gru")
    with pytest.raises(
        ValueError,
        match=re.escape(
            "GRU at 'net/cell': expected step inputs of rank >= 2 (batch, features), "
            "got shape (3,). Fix:"
        ),
    ):
        cell(params, jnp.ones(F), state)


def test_initial_state_without_a_batch_axis_is_a_value_error() -> None:
    cell, params = _make("lstm")
    with pytest.raises(
        ValueError,
        match=r"LSTM at 'net/cell': expected inputs with a leading batch axis, got \(\)\. Fix:",
    ):
        cell.initial_state(params, jnp.float32(1.0))


def test_sequence_base_names_what_a_subclass_must_implement() -> None:
    class Bare(bx.SequenceBase):
        pass

    bare = Bare(bx.Graph("net") / "bare")
    where = "Bare at 'net/bare': expected"
    with pytest.raises(NotImplementedError, match=rf"{where} initial_state to be implemented"):
        bare.initial_state(bx.Params(), jnp.ones((B, F)))
    with pytest.raises(NotImplementedError, match=rf"{where} __call__ \(one step\) to be"):
        bare(bx.Params(), jnp.ones((B, F)), None)
    with pytest.raises(NotImplementedError, match=rf"{where} apply to be implemented"):
        bare.apply(bx.Params(), _xs())


# -- static_scan / dynamic_scan -----------------------------------------------------------

SCANS = {"static": bx.static_scan, "dynamic": bx.dynamic_scan}


def _pytree_step(params, x, state, reset, is_training):
    """A leaky sum over a dict of inputs with a tuple state; resets zero rows."""
    total, count = state
    if reset is not None:
        total = jnp.where(reset[:, None], 0.0, total)
        count = jnp.where(reset, 0, count)
    total = 0.5 * total + x["a"] + x["b"].sum(-1, keepdims=True)
    count = count + 1
    outputs = {"total": total, "count": count, "training": jnp.full(count.shape, is_training)}
    return (outputs, (total, count)), params


def _pytree_reference(a, b, is_reset):
    total, count = np.zeros((B, 1)), np.zeros(B, int)
    totals, counts = [], []
    for t in range(T):
        if is_reset is not None:
            total = np.where(is_reset[:, t, None], 0.0, total)
            count = np.where(is_reset[:, t], 0, count)
        total = 0.5 * total + a[:, t] + b[:, t].sum(-1, keepdims=True)
        count = count + 1
        totals.append(total)
        counts.append(count)
    return np.stack(totals, 1), np.stack(counts, 1), (total, count)


@pytest.mark.parametrize("locked", [True, False], ids=["locked", "unlocked"])
@pytest.mark.parametrize("with_reset", [False, True], ids=["no_reset", "reset"])
@pytest.mark.parametrize("scan", SCANS)
def test_scans_with_pytree_inputs_and_state(scan: str, with_reset: bool, locked: bool) -> None:
    a = np.asarray(normal(0, (B, T, 1)))
    b = np.asarray(normal(1, (B, T, 2)))
    is_reset = np.array([[False, True, False, False], [False, False, False, True]])
    reset = jnp.asarray(is_reset) if with_reset else None
    params = bx.Params().locked() if locked else bx.Params()
    state = (jnp.zeros((B, 1)), jnp.zeros(B, jnp.int32))
    (outs, final), _ = SCANS[scan](
        _pytree_step, params, {"a": jnp.asarray(a), "b": jnp.asarray(b)}, state, reset, False
    )
    totals, counts, (total, count) = _pytree_reference(a, b, is_reset if with_reset else None)
    np.testing.assert_allclose(np.asarray(outs["total"]), totals, **TOL)
    np.testing.assert_array_equal(np.asarray(outs["count"]), counts)
    np.testing.assert_array_equal(np.asarray(outs["training"]), np.zeros((B, T), bool))
    np.testing.assert_allclose(np.asarray(final[0]), total, **TOL)
    np.testing.assert_array_equal(np.asarray(final[1]), count)


def test_scans_thread_params_through_every_step() -> None:
    graph = bx.Graph("net")
    rng = bx.Rng(graph / "rng")

    def step(params, x, state, reset, is_training):
        key, params = rng(params)
        noise = jax.random.normal(key, x.shape)
        return (noise, state), params

    params = rng.seed(bx.Params(), seed=2).locked()
    xs = jnp.zeros((B, T, 1))
    (static, _), p_static = bx.static_scan(step, params, xs, None, None, True)
    (dynamic, _), p_dynamic = bx.dynamic_scan(step, params, xs, None, None, True)
    assert int(rng.get_counter(p_static)) == int(rng.get_counter(p_dynamic)) == T
    np.testing.assert_array_equal(np.asarray(static), np.asarray(dynamic))
    for t in range(T):
        key = jax.random.fold_in(jax.random.key(2), t)
        np.testing.assert_array_equal(np.asarray(static[:, t]), jax.random.normal(key, (B, 1)))


@pytest.mark.parametrize("scan", SCANS)
def test_scans_reject_leaves_with_different_time_lengths(scan: str) -> None:
    inputs = {"a": jnp.ones((B, 4, 1)), "b": jnp.ones((B, 3, 1))}
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"{scan}_scan: expected every input leaf to share one time length (axis 1), "
            "got shapes [(2, 4, 1), (2, 3, 1)]. Fix:"
        ),
    ):
        SCANS[scan](_pytree_step, bx.Params(), inputs, None, None, True)


@pytest.mark.parametrize("scan", SCANS)
def test_scans_name_the_module_of_a_bound_step(scan: str) -> None:
    cell, params = _make("gru")
    inputs = {"a": jnp.ones((B, 4, 1)), "b": jnp.ones((B, 2, 1))}
    with pytest.raises(
        ValueError, match=r"GRU at 'net/cell': expected every input leaf to share one time length"
    ):
        SCANS[scan](cell, params, inputs, None, None, True)


@pytest.mark.parametrize("scan", SCANS)
def test_scans_reject_rank_below_two_and_empty_inputs(scan: str) -> None:
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"{scan}_scan: expected every input leaf to have rank >= 2 ([batch, time, ...]), "
            "got shape (4,). Fix:"
        ),
    ):
        SCANS[scan](_pytree_step, bx.Params(), {"a": jnp.ones(4)}, None, None, True)
    with pytest.raises(
        ValueError,
        match=rf"{scan}_scan: expected inputs with at least one array of shape "
        r"\[batch, time, \.\.\.\], got an empty pytree\. Fix:",
    ):
        SCANS[scan](_pytree_step, bx.Params(), {}, None, None, True)


def _backward_carry_shapes(loss, *args) -> list[tuple[int, ...]]:
    """Shapes carried by the last scan in `loss`'s gradient (the backward loop)."""
    jaxpr = jax.make_jaxpr(jax.grad(loss, allow_int=True))(*args).jaxpr
    (*_, scan) = [e for e in jaxpr.eqns if e.primitive.name == "scan"]
    first = scan.params["num_consts"]
    return [v.aval.shape for v in scan.invars[first : first + scan.params["num_carry"]]]


def test_dynamic_scan_gives_xla_the_loop_of_a_hand_written_scan() -> None:
    # Weights the step does not update are closed over, as in a hand-written
    # scan, so the backward loop accumulates their gradients in the order the
    # step uses them (kernel, then bias) rather than in the params' sorted
    # order; XLA schedules the loop by that order (about 2% on a CPU LSTM step).
    cell, params = _make("lstm")
    xs = normal(0, (B, T, F))
    state, _ = cell.initial_state(params, xs[:, 0])
    kernel_path, bias_path = ("net", "cell", "gates", "kernel"), ("net", "cell", "gates", "bias")

    def blox_loss(params):
        (outs, _), _ = bx.dynamic_scan(cell, params, xs, state, None, True)
        return outs.sum()

    def hand_loss(weights):
        kernel, bias = weights

        def step(carry, x):
            h, c = carry
            i, g, f, o = jnp.split(jnp.concatenate([x, h], -1) @ kernel + bias[None], 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), h

        _, hs = jax.lax.scan(step, (state.hidden, state.cell), jnp.swapaxes(xs, 0, 1))
        return hs.sum()

    weights = (params[kernel_path].value, params[bias_path].value)
    assert _backward_carry_shapes(blox_loss, params) == _backward_carry_shapes(hand_loss, weights)
    grads = jax.grad(blox_loss, allow_int=True)(params)
    expected = jax.grad(hand_loss)(weights)
    np.testing.assert_allclose(grads[kernel_path].value, expected[0], **TOL)
    np.testing.assert_allclose(grads[bias_path].value, expected[1], **TOL)


# -- flax.linen cells and wrappers, params copied by path ------------------------------------

# Float32 rounding only: the hoisted input projection, fused kernels and the
# hand-written backward change summation order, not the equations (measured
# max errors 2e-7 on outputs, 3e-6 on gradients).
FLAX_TOL = {"rtol": 1e-5, "atol": 1e-5}
XS = normal(1, (3, 6, 5))
LENGTHS = jnp.array([6, 2, 4])


def _copy_flax(variables, prefix, params):
    """`params` with every flax parameter copied to `prefix + its path`."""
    flat = flatten_dict(variables["params"])
    ours = {k for k in params.keys() if k[: len(prefix)] == prefix}
    assert ours == {prefix + k for k in flat}  # the same names, nesting and count
    data = dict(params.items())
    for path, value in flat.items():
        assert data[prefix + path].value.shape == value.shape
        data[prefix + path] = data[prefix + path].replace(value=value)
    return bx.Params.from_dict(data, locked=True)


def _blox_rnn(make_cell, **kw):
    g = bx.Graph("net")
    rng = bx.Rng(g / "rng")
    node = g / "rnn"
    return bx.RNN(node, make_cell(node / "cell", rng), **kw), rng


def _forwards_and_grads_close(forwards, flax_loss, variables, blox_loss, params, prefix):
    """`forwards(variables, params)`, after checking the two losses' gradients agree.

    The forwards and both gradients are one compiled program (run op by op,
    every primitive of flax's and blox's forward and backward compiles).
    """
    trainable, rest = params.split(lambda path, p: path[: len(prefix)] == prefix)

    @jax.jit
    def run(variables, trainable, rest):
        outs = forwards(variables, trainable.merge(rest))
        want = jax.grad(flax_loss)(variables)
        got = jax.grad(lambda t: blox_loss(t.merge(rest)))(trainable)
        return outs, want, got

    outs, want, got = run(variables, trainable, rest)
    for path, value in flatten_dict(want["params"]).items():
        np.testing.assert_allclose(got[prefix + path].value, value, **FLAX_TOL)
    return outs


FLAX_CELLS = [
    ("simple", lambda: fnn.SimpleCell(4), lambda g, rng: bx.SimpleCell(g, 4, rng=rng)),
    ("lstm", lambda: fnn.LSTMCell(4), lambda g, rng: bx.LSTMCell(g, 4, rng=rng)),
    (
        "optimized_lstm",
        lambda: fnn.OptimizedLSTMCell(4),
        lambda g, rng: bx.OptimizedLSTMCell(g, 4, rng=rng),
    ),
    ("gru", lambda: fnn.GRUCell(4), lambda g, rng: bx.GRUCell(g, 4, rng=rng)),
    ("mgu", lambda: fnn.MGUCell(4), lambda g, rng: bx.MGUCell(g, 4, rng=rng)),
    (
        "mgu_no_reset",
        lambda: fnn.MGUCell(4, reset_gate=False),
        lambda g, rng: bx.MGUCell(g, 4, rng=rng, reset_gate=False),
    ),
]


@pytest.mark.parametrize(
    "flax_cell, blox_cell", [c[1:] for c in FLAX_CELLS], ids=[c[0] for c in FLAX_CELLS]
)
def test_cell_rnn_matches_flax_forward_and_gradients(flax_cell, blox_cell):
    frnn = fnn.RNN(flax_cell(), return_carry=True)
    variables = frnn.init(jax.random.key(0), XS)
    rnn, rng = _blox_rnn(blox_cell, return_carry=True)
    _, params = rnn(rng.seed(bx.Params(), seed=0), XS)
    params = _copy_flax(variables, ("net", "rnn"), params)
    ((carry, ys), _), (want_carry, want) = _forwards_and_grads_close(
        lambda v, p: (rnn(p, XS), frnn.apply(v, XS)),
        lambda v: jnp.sum(jnp.sin(frnn.apply(v, XS)[1])),
        variables,
        lambda p: jnp.sum(jnp.sin(rnn(p, XS)[0][1])),
        params,
        ("net", "rnn"),
    )
    np.testing.assert_allclose(ys, want, **FLAX_TOL)
    for a, b in zip(jax.tree.leaves(carry), jax.tree.leaves(want_carry), strict=True):
        np.testing.assert_allclose(a, b, **FLAX_TOL)


def test_rnn_options_match_flax_with_seq_lengths():
    # reverse, keep_order, time_major and return_carry with padded rows: only
    # the valid steps are compared (flax leaves padded outputs unspecified).
    valid = (jnp.arange(6)[None] < LENGTHS[:, None])[..., None]
    frnn = fnn.RNN(fnn.GRUCell(4))
    variables = frnn.init(jax.random.key(0), XS)
    rnn, rng = _blox_rnn(lambda g, rng: bx.GRUCell(g, 4, rng=rng))
    _, params = rnn(rng.seed(bx.Params(), seed=0), XS)
    params = _copy_flax(variables, ("net", "rnn"), params)
    options = (dict(reverse=True), dict(reverse=True, keep_order=True), dict(time_major=True))

    @jax.jit  # every option's pair of runs in one compiled program
    def runs(variables, params, h0):
        pairs = []
        for kw in options:
            xs = jnp.swapaxes(XS, 0, 1) if kw.get("time_major") else XS
            mask = jnp.swapaxes(valid, 0, 1) if kw.get("time_major") else valid
            want_carry, want = frnn.apply(
                variables, xs, seq_lengths=LENGTHS, return_carry=True, **kw
            )
            (carry, ys), _ = rnn(params, xs, seq_lengths=LENGTHS, return_carry=True, **kw)
            pairs.append((jnp.where(mask, ys, 0), jnp.where(mask, want, 0), carry, want_carry))
        initial = (
            rnn(params, XS, initial_carry=h0)[0],
            frnn.apply(variables, XS, initial_carry=h0),
        )
        return pairs, initial

    # An initial carry at call time too.
    pairs, (ys, want) = runs(variables, params, normal(3, (3, 4)))
    for masked_ys, masked_want, carry, want_carry in pairs:
        np.testing.assert_allclose(masked_ys, masked_want, **FLAX_TOL)
        np.testing.assert_allclose(carry, want_carry, **FLAX_TOL)
    np.testing.assert_allclose(ys, want, **FLAX_TOL)


def test_bidirectional_matches_flax():
    fbi = fnn.Bidirectional(fnn.RNN(fnn.LSTMCell(4)), fnn.RNN(fnn.LSTMCell(4)), return_carry=True)
    variables = fbi.init(jax.random.key(0), XS)
    g = bx.Graph("net")
    rng = bx.Rng(g / "rng")
    node = g / "bi"
    f, b = node / "forward_rnn", node / "backward_rnn"
    bi = bx.Bidirectional(
        node,
        bx.RNN(f, bx.LSTMCell(f / "cell", 4, rng=rng)),
        bx.RNN(b, bx.LSTMCell(b / "cell", 4, rng=rng)),
        return_carry=True,
    )
    _, params = bi(rng.seed(bx.Params(), seed=0), XS)
    params = _copy_flax(variables, ("net", "bi"), params)
    valid = np.asarray(jnp.arange(6)[None] < LENGTHS[:, None])[..., None]
    ((carry, ys), _), (want_carry, want) = _forwards_and_grads_close(
        lambda v, p: (bi(p, XS, seq_lengths=LENGTHS), fbi.apply(v, XS, seq_lengths=LENGTHS)),
        lambda v: jnp.sum(jnp.sin(fbi.apply(v, XS)[1])),
        variables,
        lambda p: jnp.sum(jnp.sin(bi(p, XS)[0][1])),
        params,
        ("net", "bi"),
    )
    np.testing.assert_allclose(np.where(valid, ys, 0), np.where(valid, want, 0), **FLAX_TOL)
    for a, w in zip(jax.tree.leaves(carry), jax.tree.leaves(want_carry), strict=True):
        np.testing.assert_allclose(a, w, **FLAX_TOL)


def test_conv_lstm_cell_matches_flax():
    xs = normal(2, (1, 2, 4, 4, 2))
    frnn = fnn.RNN(fnn.ConvLSTMCell(4, (3, 3)))
    variables = frnn.init(jax.random.key(0), xs)
    rnn, rng = _blox_rnn(lambda g, rng: bx.ConvLSTMCell(g, 4, (3, 3), rng=rng))
    _, params = rnn(rng.seed(bx.Params(), seed=0), xs)
    params = _copy_flax(variables, ("net", "rnn"), params)
    ys, _ = rnn(params, xs)
    np.testing.assert_allclose(ys, frnn.apply(variables, xs), **FLAX_TOL)


def test_pax_forget_gate_bias_and_vanilla_rnn_against_formulas():
    # PAX's LSTM(forget_gate_bias=b) adds b to the forget pre-activation; its
    # VanillaRNN is h' = tanh(x W_i + b + h W_h).
    g = bx.Graph("net")
    rng = bx.Rng(g / "rng")
    cell = bx.OptimizedLSTMCell(g / "cell", 4, rng=rng, forget_gate_bias=1.5)
    vanilla = bx.VanillaRNN(g / "vanilla", 4, rng=rng)
    params = rng.seed(bx.Params(), seed=0)
    x = np.asarray(XS[:, 0], np.float64)
    (c0, h0) = (np.full((3, 4), 0.3), np.full((3, 4), -0.2))
    (h, (c, _)), params = cell(
        params, XS[:, 0], (jnp.asarray(c0, jnp.float32), jnp.asarray(h0, jnp.float32))
    )
    k = {
        n: np.asarray(params[("net", "cell", n, "kernel")].value, np.float64)
        for n in ("ii", "if", "ig", "io", "hi", "hf", "hg", "ho")
    }
    b = {
        n: np.asarray(params[("net", "cell", n, "bias")].value, np.float64)
        for n in ("hi", "hf", "hg", "ho")
    }
    pre = {gate: x @ k["i" + gate] + h0 @ k["h" + gate] + b["h" + gate] for gate in "ifgo"}
    f = _sigmoid(pre["f"] + 1.5)
    c_ref = f * c0 + _sigmoid(pre["i"]) * np.tanh(pre["g"])
    np.testing.assert_allclose(c, c_ref, **TOL)
    np.testing.assert_allclose(h, _sigmoid(pre["o"]) * np.tanh(c_ref), **TOL)
    assert bx.VanillaRNN is bx.SimpleCell
    (hv, _), params = vanilla(params, XS[:, 0], jnp.asarray(h0, jnp.float32))
    wi = np.asarray(params[("net", "vanilla", "i", "kernel")].value, np.float64)
    bi = np.asarray(params[("net", "vanilla", "i", "bias")].value, np.float64)
    wh = np.asarray(params[("net", "vanilla", "h", "kernel")].value, np.float64)
    np.testing.assert_allclose(hv, np.tanh(x @ wi + bi + h0 @ wh), **TOL)


def test_mlax_recurrent_reverse_and_unroll_against_loop():
    # mlax's Recurrent(cell, reverse, unroll) is RNN(reverse=..., unroll=...):
    # a reversed run equals the forward run over the flipped sequence, and
    # unroll changes only XLA's fusion (float32 rounding).
    rnn, rng = _blox_rnn(lambda g, rng: bx.SimpleCell(g, 4, rng=rng), unroll=3)
    ys, params = rnn(rng.seed(bx.Params(), seed=0), XS)
    rolled, _ = _blox_rnn(lambda g, rng: bx.SimpleCell(g, 4, rng=rng))
    np.testing.assert_allclose(ys, rolled(params, XS)[0], **TOL)
    back, _ = rnn(params, XS, reverse=True)
    np.testing.assert_allclose(back, rnn(params, XS[:, ::-1])[0], **TOL)


def test_is_reset_in_rnn_matches_a_restarted_run():
    rnn, rng = _blox_rnn(lambda g, rng: bx.LSTMCell(g, 4, rng=rng))
    ys, params = rnn(rng.seed(bx.Params(), seed=0), XS)
    reset = jnp.zeros((3, 6), bool).at[:, 3].set(True)
    got, _ = rnn(params, XS, is_reset=reset)
    np.testing.assert_allclose(got[:, 3:], rnn(params, XS[:, 3:])[0], **TOL)
    np.testing.assert_allclose(got[:, :3], ys[:, :3], **TOL)


def test_stacked_rnn_equals_a_loop_over_single_layers():
    g = bx.Graph("net")
    rng = bx.Rng(g / "rng")
    stack = bx.StackedRNN(g / "stack", bx.GRUCell, 4, rng=rng, num_layers=2, bidirectional=True)
    (ys, state), params = stack.apply(rng.seed(bx.Params(), seed=0), XS, seq_lengths=LENGTHS)
    assert state.shape == (4, 3, 4)
    xs, finals = XS, []
    for layer in range(2):
        outs = []
        for k, cell in enumerate(stack.cells[2 * layer : 2 * layer + 2]):
            h0 = cell.initialize_carry(None, (3, 5))
            (out, h), _ = bx.scan_cell(
                cell,
                params,
                jnp.swapaxes(xs, 0, 1),
                h0,
                seq_lengths=LENGTHS,
                reverse=k == 1,
                keep_order=True,
            )
            outs.append(jnp.swapaxes(out, 0, 1))
            finals.append(h)
        xs = jnp.concatenate(outs, axis=-1)
    np.testing.assert_allclose(ys, xs, rtol=0, atol=0)
    np.testing.assert_allclose(state, jnp.stack(finals), rtol=0, atol=0)


def test_hoisted_ancestor_lstm_matches_the_per_step_form():
    g = bx.Graph("net")
    rng = bx.Rng(g / "rng")
    plain = bx.LSTM(g / "a", 4, rng=rng)
    hoisted = bx.LSTM(g / "b", 4, rng=rng, hoist_inputs=True, unroll=2)
    (want, _), params = plain.apply(rng.seed(bx.Params(), seed=0), XS)
    copied = {("net", "b") + k[2:]: v for k, v in params.items() if k[1] == "a"}
    params = params.merge(bx.Params.from_dict(copied))
    (got, _), _ = hoisted.apply(params, XS)
    np.testing.assert_allclose(got, want, **TOL)


def test_wrapper_errors():
    g = bx.Graph("net")
    with pytest.raises(TypeError, match=r"^RNN at 'net/rnn': expected cell to be a blox"):
        bx.RNN(g / "rnn", bx.Linear(g / "lin", 3))
    with pytest.raises(ValueError, match=r"^RNN at 'net/r2': expected unroll to be an int >= 1"):
        bx.RNN(g / "r2", bx.GRUCell(g / "c2", 3), unroll=0)
    rnn = bx.RNN(g / "r3", bx.ConvLSTMCell(g / "c3", 3, (3, 3)))
    with pytest.raises(
        ValueError, match=r"^RNN at 'net/r3': expected inputs with a time axis and 3"
    ):
        rnn(bx.Params(), jnp.ones((2, 5, 3)))
    with pytest.raises(ValueError, match=r"^StackedRNN at 'net/s': expected num_layers"):
        bx.StackedRNN(g / "s", bx.GRU, 3, num_layers=0)
    with pytest.raises(ValueError, match=r"^StackedRNN at 'net/s2': expected dropout in \[0, 1\)"):
        bx.StackedRNN(g / "s2", bx.GRU, 3, num_layers=2, dropout=1.0)
    with pytest.raises(
        ValueError, match=r"^GRUCell at 'net/c4': expected features to be a positive"
    ):
        bx.GRUCell(g / "c4", 0)
    stack = bx.StackedRNN(g / "s3", bx.GRU, 3, num_layers=2, bidirectional=True)
    with pytest.raises(ValueError, match=r"^StackedRNN at 'net/s3': expected a unidirectional"):
        stack(bx.Params(), jnp.ones((2, 3)), None)
    with pytest.raises(ValueError, match=r"^StackedRNN at 'net/s3': expected state leaves with"):
        stack.apply(bx.Params(), jnp.ones((2, 5, 3)), bx.GRUState(jnp.zeros((2, 2, 3))))


def test_flip_sequences_keeps_padding_at_the_end():
    x = jnp.arange(12).reshape(3, 4)
    got = bx.flip_sequences(x, jnp.array([4, 1, 3]))
    assert got.tolist() == [[3, 2, 1, 0], [4, 7, 6, 5], [10, 9, 8, 11]]
    tm = bx.flip_sequences(x.T, jnp.array([4, 1, 3]), time_major=True)
    assert tm.T.tolist() == got.tolist()


# -- the whole-sequence kernels of LSTM and GRU (hand-written backward) ------------------------

# Measured max differences against plain autodiff of the per-step form:
# outputs 2e-7, gradients 1e-6 (summation order of the hoisted projection and
# of the weight gradients over all steps, float32 rounding only).
KERNEL_TOL = {"rtol": 2e-5, "atol": 2e-6}


@pytest.mark.parametrize(
    ("kind", "unroll", "reverse"), [("lstm", 1, False), ("lstm", 3, True), ("gru", 1, True)]
)
def test_sequence_kernel_matches_plain_autodiff(kind: str, unroll: int, reverse: bool) -> None:
    cell, params = _make(kind)
    cell.unroll = unroll
    xs, state = _xs(), _state(kind)

    def run(static: bool) -> tuple[jax.Array, jax.Array]:
        cell.is_static = static  # static: the per-step __call__ under plain autodiff

        def loss(trainable, xs, state):
            xs = jnp.swapaxes(xs, 0, 1)
            (ys, last), _ = bx.scan_cell(
                cell,
                trainable.merge(rest),
                xs,
                state,
                reverse=reverse,
                unroll=unroll,
                is_static=static,
            )
            return jnp.sum(ys * jnp.cos(ys)) + sum(jnp.sum(s * s) for s in last), (ys, last)

        return jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))(trainable, xs, state)

    trainable, rest = params.split()

    (g_fast, aux_fast), (g_plain, aux_plain) = run(False), run(True)
    for a, b in zip(jax.tree.leaves(aux_fast), jax.tree.leaves(aux_plain)):
        np.testing.assert_allclose(a, b, **KERNEL_TOL)
    assert jax.tree.structure(g_fast) == jax.tree.structure(g_plain)
    for a, b in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_plain)):
        np.testing.assert_allclose(a, b, **KERNEL_TOL)


def test_lstm_kernel_forget_gate_bias_matches_the_per_step_form() -> None:
    g = bx.Graph("net")
    rng = bx.Rng(g / "rng")
    lstm = bx.LSTM(g / "cell", 5, rng=rng, forget_gate_bias=1.0)
    xs = _xs()
    _, params = lstm.apply(rng.seed(bx.Params(), seed=0), xs)
    trainable, rest = params.locked().split()

    def loss(trainable, static):
        lstm.is_static = static
        (ys, state), _ = lstm.apply(trainable.merge(rest), xs)
        return jnp.sum(ys**2) + jnp.sum(state.cell), ys

    (grad_fast, ys_fast), (grad_plain, ys_plain) = (
        jax.grad(lambda p, s=s: loss(p, s), has_aux=True)(trainable) for s in (False, True)
    )
    np.testing.assert_allclose(ys_fast, ys_plain, **KERNEL_TOL)
    for a, b in zip(jax.tree.leaves(grad_fast), jax.tree.leaves(grad_plain)):
        np.testing.assert_allclose(a, b, **KERNEL_TOL)


def _assert_kernel_agrees(got, got_arrays, want, want_arrays):
    """Loss, outputs and every gradient of a sequence kernel equal the plain scan's."""
    tol = {"rtol": 1e-5, "atol": 1e-6}
    np.testing.assert_allclose(got, want, **tol)
    for a, b in zip(got_arrays, want_arrays, strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, **tol)


def _plain_lstm(kernel, bias, xs, h0, c0, forget_gate_bias):
    """The ancestor LSTM, `[x, h] @ kernel + bias` per step, as a plain `lax.scan` (autodiff)."""

    def step(carry, x):
        h, c = carry
        z = jnp.concatenate([x, h], axis=-1) @ kernel
        i, g, f, o = jnp.split(z + bias.reshape((1,) * (z.ndim - 1) + bias.shape), 4, axis=-1)
        c = jax.nn.sigmoid(f + forget_gate_bias) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    (h, c), hs = jax.lax.scan(step, (h0, c0), xs)
    return hs, h, c


@pytest.mark.parametrize(
    ("steps", "batch", "unroll", "forget_gate_bias"),
    [(7, (3,), 1, 0.0), (7, (2, 3), 3, 1.5), (1, (3,), 1, 0.0), (0, (3,), 2, 1.0)],
)
def test_lstm_sequence_gradients_match_autodiff_of_a_plain_scan(
    steps: int, batch: tuple[int, ...], unroll: int, forget_gate_bias: float
) -> None:
    # The training pass overwrites the projection with the gates and those
    # with their cotangents in one buffer (see `_recurrent_kernels`); every
    # output and gradient, the inputs' included, must still be the plain
    # scan's, up to float32 rounding.
    from blox.core._recurrent_kernels import lstm_sequence

    features, hidden = 4, 5
    keys = jax.random.split(jax.random.key(3), 6)
    kernel = 0.5 * jax.random.normal(keys[0], (features + hidden, 4 * hidden))
    bias = jax.random.normal(keys[1], (4 * hidden,))
    xs = jax.random.normal(keys[2], (steps, *batch, features))
    h0, c0 = (jax.random.normal(k, (*batch, hidden)) for k in keys[3:5])
    target = jax.random.normal(keys[5], (steps, *batch, hidden))

    def loss(run):
        def value(*args):
            hs, h, c = run(*args)
            return jnp.sum((hs - target) ** 2) + jnp.sum(jnp.sin(h)) + jnp.sum(c * c), (hs, h, c)

        return jax.jit(jax.value_and_grad(value, argnums=(0, 1, 2, 3, 4), has_aux=True))

    def kernel_run(*args):
        return lstm_sequence(*args, forget_gate_bias=forget_gate_bias, unroll=unroll)

    def plain(*args):
        return _plain_lstm(*args, forget_gate_bias)

    args = (kernel, bias, xs, h0, c0)
    ((got, got_outs), got_grads), ((want, want_outs), want_grads) = (
        loss(kernel_run)(*args),
        loss(plain)(*args),
    )
    # float32 rounding: the kernel's gradient is one matmul over all steps
    # instead of a per-step sum, and the gates' derivatives are factored differently
    _assert_kernel_agrees(got, got_outs + got_grads, want, want_outs + want_grads)


def _plain_gru(gates_kernel, gates_bias, candidate_kernel, candidate_bias, xs, h0):
    """The ancestor GRU over `[x, h]` and `[x, r * h]`, as a plain `lax.scan` (autodiff)."""

    def lead(bias, ndim):
        return bias.reshape((1,) * (ndim - 1) + bias.shape)

    def step(h, x):
        zr = jnp.concatenate([x, h], axis=-1) @ gates_kernel
        z, r = jnp.split(jax.nn.sigmoid(zr + lead(gates_bias, zr.ndim)), 2, axis=-1)
        n = jnp.concatenate([x, r * h], axis=-1) @ candidate_kernel
        n = jnp.tanh(n + lead(candidate_bias, n.ndim))
        h = (1 - z) * h + z * n
        return h, h

    h, hs = jax.lax.scan(step, h0, xs)
    return hs, h


@pytest.mark.parametrize(
    ("steps", "batch", "unroll"), [(7, (3,), 1), (7, (2, 3), 3), (1, (3,), 1), (0, (3,), 2)]
)
def test_gru_sequence_gradients_match_autodiff_of_a_plain_scan(
    steps: int, batch: tuple[int, ...], unroll: int
) -> None:
    # As for the LSTM: the training pass overwrites the projections in place.
    from blox.core._recurrent_kernels import gru_sequence

    features, hidden = 4, 5
    keys = jax.random.split(jax.random.key(4), 7)
    args = (
        0.5 * jax.random.normal(keys[0], (features + hidden, 2 * hidden)),
        jax.random.normal(keys[1], (2 * hidden,)),
        0.5 * jax.random.normal(keys[2], (features + hidden, hidden)),
        jax.random.normal(keys[3], (hidden,)),
        jax.random.normal(keys[4], (steps, *batch, features)),
        jax.random.normal(keys[5], (*batch, hidden)),
    )
    target = jax.random.normal(keys[6], (steps, *batch, hidden))

    def loss(run):
        def value(*args):
            hs, h = run(*args)
            return jnp.sum((hs - target) ** 2) + jnp.sum(jnp.sin(h)), (hs, h)

        return jax.jit(jax.value_and_grad(value, argnums=tuple(range(6)), has_aux=True))

    ((got, got_outs), got_grads), ((want, want_outs), want_grads) = (
        loss(lambda *a: gru_sequence(*a, unroll=unroll))(*args),
        loss(_plain_gru)(*args),
    )
    # float32 rounding: the kernels' gradients are one matmul over all steps
    # instead of a per-step sum
    _assert_kernel_agrees(got, got_outs + got_grads, want, want_outs + want_grads)
