"""`model.to(dtype)`: floating params and buffers cast in place, RNG and counters untouched."""

import jax.numpy as jnp
import numpy as np
import pytest

from blox import eager as nn


def test_to_casts_floating_state_and_keeps_integer_state() -> None:
    model = nn.Sequential(
        nn.Linear(3, 4, seed=0), nn.BatchNorm(4, momentum=None, seed=0), nn.Dropout(0.2, seed=0)
    )
    before = model.state_dict()
    assert model.to(jnp.bfloat16) is model
    for name, value in model.state_dict().items():
        old = before[name]
        if jnp.issubdtype(old.dtype, jnp.floating):
            assert value.dtype == jnp.bfloat16, name
            np.testing.assert_array_equal(value, old.astype(jnp.bfloat16))
        else:
            assert value.dtype == old.dtype, name
            np.testing.assert_array_equal(value, old)
    y = model(jnp.ones((2, 3), jnp.bfloat16))
    assert y.dtype == jnp.bfloat16
    assert int(model[1].num_batches_tracked) == 1
    assert model[1].running_mean.dtype == jnp.bfloat16  # stays as cast after an update
    with pytest.raises(
        TypeError,
        match=r"Sequential\.to: expected a floating dtype, got the device name 'cpu'\. Fix:",
    ):
        model.to("cpu")
