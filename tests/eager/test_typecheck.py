"""Runtime shape and dtype checks: jaxtyping + beartype through `nn.typecheck`.

A wrong input raises jaxtyping's `TypeCheckError` (a `TypeError`) whose first
line names the layer, the argument, the expected dtype and shape (with the
layer's sizes filled in) and what arrived. Checks run while a call is traced,
not per call of a compiled function, and can be switched off.
"""

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest
from beartype import beartype
from jaxtyping import Array, Float, TypeCheckError

import blox.eager._typecheck as typecheck_module
from blox import eager as nn

LINEAR = r"Linear\(in_features=3, out_features=4\)"


@pytest.fixture
def checks_restored() -> Iterator[None]:
    """Turns checks back on even if a test fails while they are off."""
    yield
    nn.set_typechecking(True)


class Head(nn.Module):
    """A user module that opts in to checks; `claimed` lets a test break its return."""

    def __init__(self, claimed: int = 8) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 8, seed=0)
        self.claimed = claimed

    @nn.typecheck
    def __call__(self, x: Float[Array, "batch 4"]) -> Float[Array, "batch {self.claimed}"]:
        return self.fc(x)


def test_type_check_error_is_a_type_error() -> None:
    assert issubclass(TypeCheckError, TypeError)


def test_wrong_trailing_dim_names_the_layer_and_both_shapes() -> None:
    lin = nn.Linear(3, 4, seed=0)
    with pytest.raises(
        TypeCheckError,
        match=rf"^{LINEAR}: expected x to be a float array of shape \(\*batch, 3\), "
        r"got f32\[2,5\]\. Fix: pass x with that dtype and shape\.",
    ):
        lin(jnp.ones((2, 5)))


def test_wrong_dtype_raises() -> None:
    with pytest.raises(
        TypeError, match=rf"^{LINEAR}: expected x to be a float array .*got i32\[2,3\]"
    ):
        nn.Linear(3, 4, seed=0)(jnp.ones((2, 3), jnp.int32))


def test_wrong_rank_raises() -> None:
    with pytest.raises(TypeCheckError, match=rf"^{LINEAR}: .*shape \(\*batch, 3\), got f32\[\]"):
        nn.Linear(3, 4, seed=0)(jnp.ones(()))
    with pytest.raises(
        TypeCheckError,
        match=r"^BatchNorm\(6, epsilon=1e-05, momentum=0\.9\): expected x to be a float array "
        r"of shape \(batch, \*spatial, 6\), got f32\[6\]",
    ):
        nn.BatchNorm(6, seed=0)(jnp.ones((6,)))
    with pytest.raises(
        TypeCheckError,
        match=r"^LSTM\(3, 5\): expected xs to be a float array of shape \(batch, time, 3\), "
        r"got f32\[2,3\]",
    ):
        nn.LSTM(3, 5, seed=0)(jnp.ones((2, 3)))


@pytest.mark.parametrize(
    "call, pattern",
    [
        (
            lambda: nn.Conv(3, 4, 3, seed=0)(jnp.ones((2, 7, 2))),
            r"^Conv\(3, 4, kernel_size=\(3,\), padding='SAME', strides=1\): expected x to be "
            r"a float array of shape \(\*batch_and_spatial, 3\), got f32\[2,7,2\]",
        ),
        (
            lambda: nn.Embed(10, 4, seed=0)(jnp.ones((2, 5))),
            r"^Embed\(10, 4\): expected ids to be an integer array of shape \(\*batch\), "
            r"got f32\[2,5\]",
        ),
        (
            lambda: nn.Embed(10, 4, seed=0).attend(jnp.ones((2, 5))),
            r"^Embed\(10, 4\): expected h to be a float array of shape \(\*batch, 4\), "
            r"got f32\[2,5\]",
        ),
        (
            lambda: nn.Dropout(0.5, seed=0)(jnp.ones((2, 3), jnp.int32)),
            r"^Dropout\(rate=0\.5\): expected x to be a float array of shape \(\*shape\), "
            r"got i32\[2,3\]",
        ),
        (
            lambda: nn.LayerNorm(6, seed=0)(jnp.ones((2, 5))),
            r"^LayerNorm\(6, epsilon=1e-05\): .*shape \(\*batch, 6\), got f32\[2,5\]",
        ),
        (
            lambda: nn.LSTM(3, 5, seed=0)(jnp.ones((2, 4, 3)), None, jnp.ones((3, 4), bool)),
            # Dimensions bound by earlier arguments are shown with their values.
            r"^LSTM\(3, 5\): expected is_reset to be a bool array of shape "
            r"\(batch=2, time=4\) \(or None\), got bool\[3,4\]",
        ),
        (
            lambda: nn.GRU(3, 4, seed=0).step(jnp.ones((2, 3)), None, jnp.ones((3,), bool)),
            r"^GRU\(3, 4\): expected is_reset to be a bool array of shape \(batch=2\) "
            r"\(or None\), got bool\[3\]",
        ),
    ],
    ids=["conv", "embed", "attend", "dropout", "layer_norm", "lstm_is_reset", "gru_step"],
)
def test_every_layer_is_checked(call: Callable[[], Any], pattern: str) -> None:
    with pytest.raises(TypeCheckError, match=pattern):
        call()


def test_recurrent_state_is_checked() -> None:
    lstm = nn.LSTM(3, 5, seed=0)
    small = nn.LSTMState(hidden=jnp.zeros((2, 4)), cell=jnp.zeros((2, 4)))
    with pytest.raises(
        TypeCheckError,
        match=r"^LSTM\(3, 5\): expected state to be LSTMState\(hidden=float\[2, 5\], "
        r"cell=float\[2, 5\]\), got LSTMState\(hidden=float32\[2, 4\], cell=float32\[2, 4\]\)\. "
        r"Fix: pass state=None or lstm\.initial_state\(2\)",
    ):
        lstm(jnp.ones((2, 4, 3)), small)
    with pytest.raises(TypeCheckError, match=r"got GRUState\(hidden=float32\[2, 5\]\)"):
        lstm.step(jnp.ones((2, 3)), nn.GRUState(hidden=jnp.zeros((2, 5))))
    with pytest.raises(TypeCheckError, match=r"state to be GRUState.*got a plain tuple"):
        nn.GRU(3, 4, seed=0).step(jnp.ones((2, 3)), (jnp.zeros((2, 4)),))


def test_checks_run_at_trace_time_under_jit() -> None:
    lin = nn.Linear(3, 4, seed=0)
    with pytest.raises(TypeCheckError, match=rf"^{LINEAR}: .*got f32\[2,5\]"):
        jax.jit(lambda model, x: model(x))(lin, jnp.ones((2, 5)))
    with pytest.raises(TypeCheckError, match=rf"^{LINEAR}: .*got f32\[2,5\]"):
        nn.filter_jit(lambda model, x: model(x))(lin, jnp.ones((2, 5)))


def test_user_module_check_runs_once_under_jit(monkeypatch: pytest.MonkeyPatch) -> None:
    checks = []

    def counting_beartype(fn: Callable[..., Any]) -> Callable[..., Any]:
        checked = beartype(fn)

        def spy(*args: Any, **kwargs: Any) -> Any:
            checks.append(1)
            return checked(*args, **kwargs)

        return spy

    monkeypatch.setattr(typecheck_module, "beartype", counting_beartype)

    class Counted(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 8, seed=0)

        @nn.typecheck
        def __call__(self, x: Float[Array, "batch 4"]) -> Float[Array, "batch 8"]:
            return self.fc(x)

    model = Counted()
    model(jnp.ones((3, 4)))
    per_call = len(checks)
    assert per_call > 0
    model(jnp.ones((3, 4)))
    assert len(checks) == per_call  # eager calls are compiled: checked while tracing only
    model(jnp.ones((6, 4)))  # a new shape compiles, and checks, again
    assert len(checks) == 2 * per_call
    forward = jax.jit(lambda m, x: m(x))
    for _ in range(4):
        forward(model, jnp.ones((3, 4)))
    assert len(checks) == 3 * per_call  # jitted: once, while tracing
    forward(model, jnp.ones((5, 4)))  # a new shape retraces, and checks again
    assert len(checks) == 4 * per_call
    with jax.disable_jit():  # op by op: every call is checked
        model(jnp.ones((3, 4)))
        model(jnp.ones((3, 4)))
    assert len(checks) == 6 * per_call


def test_layer_check_runs_once_under_jit(monkeypatch: pytest.MonkeyPatch) -> None:
    checked_call = nn.Linear.__call__  # the typecheck wrapper around the core call
    calls = []

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return checked_call(self, *args, **kwargs)

    monkeypatch.setattr(nn.Linear, "__call__", spy)
    lin = nn.Linear(3, 4, seed=0)
    forward = eqx.filter_jit(lambda m, x: m(x))
    for _ in range(3):
        forward(lin, jnp.ones((2, 3)))
    assert len(calls) == 1


def test_set_typechecking_turns_checks_off_and_on(checks_restored: None) -> None:
    lin = nn.Linear(3, 4, seed=0)
    nn.set_typechecking(False)
    assert not nn.typechecking_enabled()
    # Unchecked, the wrong size reaches the core, which refuses it later.
    with pytest.raises(ValueError, match=r"expected parameter 'kernel' of shape \(5, 4\)"):
        lin(jnp.ones((2, 5)))
    # An integer input is not refused by the core: it runs, promoted to float.
    assert lin(jnp.ones((2, 3), jnp.int32)).dtype == jnp.float32
    nn.set_typechecking(True)
    assert nn.typechecking_enabled()
    with pytest.raises(TypeCheckError, match=rf"^{LINEAR}: "):
        lin(jnp.ones((2, 5)))


def test_set_typechecking_also_disables_user_modules(checks_restored: None) -> None:
    nn.set_typechecking(False)
    assert Head(claimed=2)(jnp.ones((2, 4))).shape == (2, 8)  # the wrong return passes


SCRIPT = """
import jax.numpy as jnp
from blox import eager as nn
try:
    nn.Linear(3, 4, seed=0)(jnp.ones((2, 5)))
except Exception as error:
    print(type(error).__name__)
"""


def test_jaxtyping_disable_environment_variable_turns_checks_off() -> None:
    # With checks on, the script would print TypeCheckError (as tested above).
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env={**os.environ, "JAX_PLATFORMS": "cpu", "JAXTYPING_DISABLE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert result.stdout.strip() == "ValueError"


def test_user_module_is_checked_with_its_own_name() -> None:
    with pytest.raises(
        TypeCheckError,
        match=r"^Head\(\): expected x to be a float array of shape \(batch=3, 4\), got f32\[3,5\]",
    ):
        Head()(jnp.ones((3, 5)))
    with pytest.raises(
        TypeCheckError,
        match=r"^Head\(\): expected the return value to be a float array of shape "
        r"\(batch=3, 2\), got f32\[3,8\]\. Fix: make Head\.__call__ return that dtype and shape",
    ):
        Head(claimed=2)(jnp.ones((3, 4)))


def test_user_module_name_includes_its_extra_repr() -> None:
    class Scaled(nn.Module):
        def __init__(self, size: int) -> None:
            super().__init__()
            self.size = size
            self.w = jnp.ones((size,))

        def extra_repr(self) -> str:
            return f"size={self.size}"

        @nn.typecheck
        def __call__(self, x: Float[Array, "*batch {self.size}"]) -> Float[Array, "*batch"]:
            return x @ self.w

    assert Scaled(3)(jnp.ones((2, 3))).shape == (2,)
    with pytest.raises(
        TypeCheckError, match=r"^Scaled\(size=3\): expected x .*shape \(\*batch, 3\), got"
    ):
        Scaled(3)(jnp.ones((2, 4)))


def test_nested_error_is_named_once_by_the_inner_layer() -> None:
    class Outer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 4, seed=0)

        @nn.typecheck
        def __call__(self, x: Float[Array, "batch 8"]) -> Float[Array, "batch 4"]:
            return self.fc(x)  # the outer check passes; the inner one fails

    with pytest.raises(TypeCheckError) as info:
        Outer()(jnp.ones((2, 8)))
    message = str(info.value)
    assert message.startswith(
        "Outer.fc (nn.Linear(in_features=3, out_features=4)): expected x to be a float "
        "array of shape (*batch, 3), got f32[2,8]."
    )
    assert message.count("Outer") == 1  # named by the inner layer, with its path, once
    assert message.count("Linear(in_features=3, out_features=4)") == 1


def test_nested_error_through_sequential_and_jit() -> None:
    model = nn.Sequential(nn.Linear(3, 4, seed=0), jax.nn.relu, nn.Linear(3, 4, seed=0))
    match = rf"^Sequential\.2 \(nn\.{LINEAR}\): .*\(\*batch, 3\), got f32\[2,4\]"
    with pytest.raises(TypeCheckError, match=match):
        nn.filter_jit(lambda m, x: m(x))(model, jnp.ones((2, 3)))


def test_a_call_compiled_with_checks_off_does_not_serve_a_checked_call(checks_restored) -> None:
    # Checks run while tracing; the compiled programs are kept per setting.
    lin = nn.Linear(3, 4, seed=1)
    x = jnp.ones((5, 3), jnp.int32)
    nn.set_typechecking(False)
    assert lin(x).shape == (5, 4)  # unchecked: compiled for int32 inputs
    step = nn.filter_jit(lambda m, v: m(v))
    assert step(lin, x).shape == (5, 4)
    nn.set_typechecking(True)
    with pytest.raises(TypeError, match=rf"^{LINEAR}: expected x to be a float array"):
        lin(x)
    with pytest.raises(TypeError, match=rf"^{LINEAR}: expected x to be a float array"):
        step(lin, x)
