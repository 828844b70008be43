import jax
import numpy as np

import blox as bx

m = bx.Conv(bx.Graph("net") / "m", 3, 4, kernel_init=jax.nn.initializers.zeros)
x = np.ones((2, 5, 3), np.float32)
ab = jax.eval_shape(lambda x: m(bx.Params(), x)[1], x)
print(type(ab), list(ab.keys()), ab[("net", "m", "kernel")].value)
p = m.set_param(ab, "kernel", np.ones((3, 3, 4), np.float32))
p = m.set_param(p, "bias", np.ones((4,), np.float32))
print(m(p, x)[0].shape)
