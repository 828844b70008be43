"""Parity with `torch.nn`: copy a PyTorch module's weights into a `torch_nn` shell and
compare outputs and gradients (with respect to the inputs and every parameter).

The loss is `sum_i sum(output_i * r_i)` with fixed random `r_i`, so every
output element contributes its own weight to the gradients.
"""

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch

from blox import eager


def torch_state(module: torch.nn.Module) -> dict[str, np.ndarray]:
    """A PyTorch module's state_dict as numpy arrays."""
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def check_parity(
    reference: torch.nn.Module,
    ours: Any,
    inputs: Sequence[np.ndarray],
    call_torch: Callable[..., Sequence[Any]],
    call_ours: Callable[..., Sequence[Any]],
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    grad_inputs: Sequence[int] | None = None,
    seed: int = 0,
) -> None:
    """Asserts equal outputs and gradients; `call_*(module, *inputs) -> outputs`.

    `grad_inputs` picks the (floating) inputs whose gradients are compared
    (all of them by default).
    """
    picks = list(range(len(inputs))) if grad_inputs is None else list(grad_inputs)
    t_inputs = [torch.tensor(x) for x in inputs]
    for i in picks:
        t_inputs[i].requires_grad_(True)
    for p in reference.parameters():
        p.grad = None
    t_outs = [o for o in call_torch(reference, *t_inputs) if o is not None]
    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal(tuple(o.shape)).astype(np.float32) for o in t_outs]
    t_loss = sum((o * torch.tensor(w)).sum() for o, w in zip(t_outs, weights))
    t_loss.backward()

    def loss(pair: Any) -> Any:
        module, diff = pair
        args = list(inputs)
        for i, value in zip(picks, diff):
            args[i] = value
        outs = [o for o in call_ours(module, *args) if o is not None]
        total = sum(jnp.sum(o * w) for o, w in zip(outs, weights))
        return total, outs

    diff = [jnp.asarray(inputs[i]) for i in picks]
    # One compiled program: op by op, every primitive would compile on its own.
    grad_fn = eager.filter_jit(eager.filter_grad(loss, has_aux=True))
    (grads_model, grads_in), outs = grad_fn((ours, diff))
    assert len(outs) == len(t_outs)
    for got, want in zip(outs, t_outs):
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=rtol, atol=atol)
    for i, got in zip(picks, grads_in):
        np.testing.assert_allclose(got, t_inputs[i].grad.numpy(), rtol=rtol, atol=atol)
    ours_grads = dict(grads_model.named_parameters())
    for name, p in reference.named_parameters():
        np.testing.assert_allclose(
            ours_grads[name], p.grad.numpy(), rtol=rtol, atol=atol, err_msg=name
        )
    jax.block_until_ready(outs)
