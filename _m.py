import resource

import flax.linen as fnn
import jax
import jax.numpy as jnp

import tests.core.test_conv as t


def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


c0 = cpu()
x = t._input((2, 7, 6, 3))
pair = t._flax_pair(
    t.bx.Conv, fnn.Conv, (3, 2), 4, x, padding="CIRCULAR", strides=(2, 1), kernel_dilation=(1, 2)
)
c1 = cpu()
print("build", c1 - c0)
t._assert_agrees_with_flax(*pair, x)
c2 = cpu()
print("agree opbyop", c2 - c1)
pair = t._flax_pair(t.bx.Conv, fnn.Conv, (3, 3), 4, x, padding="REFLECT")
c3 = cpu()
print("build2", c3 - c2)
m, p, fm, v = pair


def f(p, v, x):
    tr, rest = p.split()
    bl = lambda tr, x: jnp.sum(jnp.sin(m(tr.merge(rest), x, precision=t.HIGHEST)[0]))
    fl = lambda fp, x: jnp.sum(jnp.sin(fm.apply({"params": fp}, x)))
    return (
        m(p, x, precision=t.HIGHEST)[0],
        fm.apply(v, x),
        jax.grad(bl, (0, 1))(tr, x),
        jax.grad(fl, (0, 1))(v["params"], x),
    )


out = jax.jit(f)(p, v, x)
c4 = cpu()
print("agree jit", c4 - c3)
