"""Shared checks of `torch_nn` layers against `torch.nn` with weights copied across."""

import jax.numpy as jnp
import numpy as np
import torch

from blox.eager import torch_nn as nn


def to_torch(x):
    return torch.from_numpy(np.array(x))


def check(ours, theirs, inputs, **kwargs):
    """Compares `ours` with `theirs`; see `_check`."""
    return _check(ours, theirs, inputs, **kwargs)


def _check(
    ours, theirs, inputs, *, atol=1e-5, rtol=1e-5, modes=(True, False), grads=True, reload=True
):
    """Copies `theirs` into `ours`, then compares outputs, gradients and buffers.

    For each mode: outputs of both; with `grads`, the gradients of
    `sum(outputs * r)` (fixed random `r`) with respect to every float input
    and every parameter; and every buffer after the call (a training step
    updates running statistics).
    """
    if reload:
        ours.load_state_dict(theirs.state_dict())
    for training in modes:
        ours.train(training)
        theirs.train(training)
        t_in = [
            to_torch(x).requires_grad_(np.issubdtype(np.asarray(x).dtype, np.floating))
            for x in inputs
        ]
        t_out = theirs(*t_in)
        t_first = t_out[0] if isinstance(t_out, tuple) else t_out
        r = np.random.default_rng(0).standard_normal(tuple(t_first.shape)).astype(np.float32)
        j_in = [jnp.asarray(x) for x in inputs]

        @nn.filter_jit
        def step(both, r=r):
            return nn.filter_value_and_grad(loss, has_aux=True)(both, r)

        def loss(both, r):
            model, xs = both
            out = model(*xs)
            out = out[0] if isinstance(out, tuple) else out
            return jnp.sum(out * r), out

        if grads:
            (_, out), (g_model, g_in) = step((ours, j_in))
        else:
            _, out = loss((ours, j_in), r)
        np.testing.assert_allclose(out, t_first.detach().numpy(), atol=atol, rtol=rtol)
        if grads:
            (t_first * torch.from_numpy(r)).sum().backward()
            for t, g in zip(t_in, g_in):
                if t.grad is not None:
                    np.testing.assert_allclose(g, t.grad.numpy(), atol=atol, rtol=rtol)
            t_grads = {k: p.grad for k, p in theirs.named_parameters()}
            o_grads = dict(g_model.named_parameters())
            assert set(t_grads) == set(o_grads), (sorted(t_grads), sorted(o_grads))
            for k, tg in t_grads.items():
                np.testing.assert_allclose(o_grads[k], tg.numpy(), atol=atol, rtol=rtol, err_msg=k)
            theirs.zero_grad()
        ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
        assert list(ours_sd) == list(theirs_sd)
        for k, v in theirs_sd.items():
            np.testing.assert_allclose(
                np.asarray(ours_sd[k], np.float64),
                v.double().numpy(),
                atol=atol,
                rtol=rtol,
                err_msg=k,
            )
    return ours
