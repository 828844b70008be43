"""The linear family: `Linear`, `DenseGeneral`, `Einsum`, `Bias`, `Scaler`, `Identity`.

`Linear` is the ancestor's dense layer (flax's `Dense`). `DenseGeneral` and
`Einsum` are flax.linen's, with its option names, param names and shapes (a
flax param tree copies in by path, and the same key gives the same init);
`Bias` and `Scaler` are mlax's elementwise layers, `Identity` PAX's. Every
layer takes `dtype` (the computation dtype; `None`: promoted from inputs and
params) and `param_dtype` (the storage dtype), cast by `promote_dtype` right
before computing, as flax does.
"""

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._dtypes import promote_dtype
from ._graph import Graph
from ._module import Initializer, Module, _lead, _where
from ._params import Params

_DEFAULT_KERNEL_INIT = jax.nn.initializers.lecun_normal()
_DEFAULT_BIAS_INIT = jax.nn.initializers.zeros


class Linear(Module):
    """A dense layer: `outputs = inputs @ kernel + bias`.

    The input size is read from the first call, which creates `kernel`
    `(in, out)` and `bias` `(out,)` (in that order, one rng key each).

    Args:
        graph: This module's node.
        output_size: Size of the last output axis.
        rng: `Rng` for initialisation (`None` is fine for constant inits).
        use_bias: Add a bias.
        kernel_init: `init(key, shape, dtype)` for the kernel.
        bias_init: Initialiser for the bias.
        kernel_metadata: Metadata stored with the kernel (e.g. sharding).
        bias_metadata: Metadata stored with the bias.
        dtype: Computation dtype (`None`: promoted from inputs and params).
        param_dtype: Dtype the kernel and bias are created in.

    Shapes:
        inputs `(*batch, in)` -> outputs `(*batch, output_size)`.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> g = bx.Graph('net')
        >>> rng = bx.Rng(g / 'rng')
        >>> lin = bx.Linear(g / 'lin', 4, rng=rng)
        >>> y, params = lin(rng.seed(bx.Params(), seed=0), jnp.ones((2, 3)))
        >>> y.shape, params[('net', 'lin', 'kernel')].value.shape
        ((2, 4), (3, 4))
    """

    def __init__(
        self,
        graph: Graph,
        output_size: int,
        rng: Any = None,
        use_bias: bool = True,
        kernel_init: Initializer = _DEFAULT_KERNEL_INIT,
        bias_init: Initializer = _DEFAULT_BIAS_INIT,
        kernel_metadata: dict[str, Any] | None = None,
        bias_metadata: dict[str, Any] | None = None,
        *,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
    ) -> None:
        super().__init__(graph)
        self.output_size = output_size
        self.rng = rng
        self.use_bias = use_bias
        self.kernel_init = kernel_init
        self.bias_init = bias_init
        self.kernel_metadata = kernel_metadata
        self.bias_metadata = bias_metadata
        self.dtype = dtype
        self.param_dtype = param_dtype

    def __call__(
        self, params: Params, inputs: jax.Array, precision: Any = None
    ) -> tuple[jax.Array, Params]:
        """Applies the layer; `precision` is passed to the matmul."""
        if jnp.ndim(inputs) == 0:
            raise ValueError(
                f"{_where(self)}: expected inputs of rank >= 1 (*batch, features), "
                "got a scalar. Fix: pass at least a vector, e.g. x[None]."
            )
        kernel, params = self.get_param(
            params,
            "kernel",
            (inputs.shape[-1], self.output_size),
            self.kernel_init,
            dtype=self.param_dtype,
            metadata=self.kernel_metadata,
            rng=self.rng,
        )
        bias = None
        if self.use_bias:
            bias, params = self.get_param(
                params,
                "bias",
                (self.output_size,),
                self.bias_init,
                dtype=self.param_dtype,
                metadata=self.bias_metadata,
                rng=self.rng,
            )
        inputs, kernel, bias = promote_dtype(inputs, kernel, bias, dtype=self.dtype)
        outputs = jnp.dot(inputs, kernel, precision=precision)
        if bias is not None:
            outputs = outputs + _lead(bias, outputs.ndim)
        return outputs, params


def _tuple(value: int | Sequence[int]) -> tuple[int, ...]:
    return (int(value),) if isinstance(value, int | np.integer) else tuple(int(v) for v in value)


class DenseGeneral(Module):
    """A linear map over several input axes to several output axes (flax's `DenseGeneral`).

    Contracts the input `axis` (one or several) with `kernel` and appends the
    `features` axes; the `batch_dims` (leading, consecutive) get a kernel of
    their own each. `kernel` is `(*batch, *contracted, *features)` and `bias`
    `(*batch, *features)`; their initialisers see the flattened 2-D / 1-D
    shapes, so fan-in and fan-out are those of the matrix, as in flax.

    Args:
        graph: This module's node.
        features: Output size, an int or a tuple of sizes.
        axis: Input axis or axes to contract.
        batch_dims: Leading input axes with a kernel each (`(0,)`, `(0, 1)`...).
        use_bias: Add `bias`.
        dtype: Computation dtype (`None`: promoted from inputs and params).
        param_dtype: Dtype the params are created in.
        kernel_init: Initialiser of the kernel (given its 2-D shape).
        bias_init: Initialiser of the bias (given its 1-D shape).
        precision: Passed to `jax.lax.dot_general`.
        rng: `Rng` for initialisation.
        kernel_metadata: Metadata stored with the kernel (e.g. sharding).
        bias_metadata: Metadata stored with the bias.

    Raises:
        ValueError: If `batch_dims` are not the leading axes `0..k-1`, or an
            axis is out of range or shared by `axis` and `batch_dims`.

    Shapes:
        `(*batch, *rest, *contracted)` -> `(*batch, *rest, *features)` (the
        contracted axes may be anywhere; the others keep their order).

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> g = bx.Graph('net')
        >>> rng = bx.Rng(g / 'rng')
        >>> dense = bx.DenseGeneral(g / 'qkv', (4, 5), axis=-1, rng=rng)
        >>> y, params = dense(rng.seed(bx.Params(), seed=0), jnp.ones((2, 3)))
        >>> y.shape, params[('net', 'qkv', 'kernel')].value.shape
        ((2, 4, 5), (3, 4, 5))
    """

    def __init__(
        self,
        graph: Graph,
        features: int | Sequence[int],
        axis: int | Sequence[int] = -1,
        batch_dims: Sequence[int] = (),
        use_bias: bool = True,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        kernel_init: Initializer = _DEFAULT_KERNEL_INIT,
        bias_init: Initializer = _DEFAULT_BIAS_INIT,
        precision: Any = None,
        rng: Any = None,
        kernel_metadata: dict[str, Any] | None = None,
        bias_metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(graph)
        batch = _tuple(batch_dims)
        if batch and sorted(batch) != list(range(max(batch) + 1)):
            raise ValueError(
                f"{_where(self)}: expected batch_dims to be the leading axes 0..k-1, "
                f"got {batch_dims!r}. Fix: move the batch axes to the front, e.g. "
                "batch_dims=(0,)."
            )
        self.features = features
        self.axis = axis
        self.batch_dims = batch_dims
        self.use_bias = use_bias
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.kernel_init = kernel_init
        self.bias_init = bias_init
        self.precision = precision
        self.rng = rng
        self.kernel_metadata = kernel_metadata
        self.bias_metadata = bias_metadata

    def __call__(self, params: Params, inputs: jax.Array) -> tuple[jax.Array, Params]:
        """Contracts `inputs` over `axis` with the kernel."""
        ndim = jnp.ndim(inputs)
        features = _tuple(self.features)
        given = _tuple(self.axis) + _tuple(self.batch_dims)
        if any(not -ndim <= a < ndim for a in given):
            raise ValueError(
                f"{_where(self)}: expected axis {self.axis!r} and batch_dims "
                f"{self.batch_dims!r} within an input of rank {ndim}, got shape "
                f"{tuple(jnp.shape(inputs))}. Fix: pass axes in [-{ndim}, {ndim})."
            )
        axis = tuple(a % ndim for a in _tuple(self.axis))
        batch = tuple(a % ndim for a in _tuple(self.batch_dims))
        if set(axis) & set(batch) or len(set(axis)) != len(axis):
            raise ValueError(
                f"{_where(self)}: expected distinct axes, none of them a batch dim, got "
                f"axis={self.axis!r}, batch_dims={self.batch_dims!r}. Fix: contract "
                "each axis once, and not a batch axis."
            )
        batch_shape = tuple(inputs.shape[a] for a in batch)
        contracted = tuple(inputs.shape[a] for a in axis)
        n_batch = int(np.prod(batch_shape))

        def kernel_init(key: Any, shape: tuple[int, ...], dtype: Any) -> jax.Array:
            flat = (n_batch * int(np.prod(contracted)), int(np.prod(features)))
            return jnp.reshape(self.kernel_init(key, flat, dtype), shape)

        def bias_init(key: Any, shape: tuple[int, ...], dtype: Any) -> jax.Array:
            flat = (n_batch * int(np.prod(features)),)
            return jnp.reshape(self.bias_init(key, flat, dtype), shape)

        kernel, params = self.get_param(
            params,
            "kernel",
            batch_shape + contracted + features,
            kernel_init,
            dtype=self.param_dtype,
            metadata=self.kernel_metadata,
            rng=self.rng,
        )
        bias = None
        if self.use_bias:
            bias, params = self.get_param(
                params,
                "bias",
                batch_shape + features,
                bias_init,
                dtype=self.param_dtype,
                metadata=self.bias_metadata,
                rng=self.rng,
            )
        inputs, kernel, bias = promote_dtype(inputs, kernel, bias, dtype=self.dtype)
        n = len(batch)
        contract = tuple(range(n, n + len(axis)))
        dims = ((axis, contract), (batch, tuple(range(n))))
        outputs = jax.lax.dot_general(inputs, kernel, dims, precision=self.precision)
        if bias is not None:
            kept = [a for a in range(ndim) if a not in axis]
            lead = tuple(inputs.shape[a] if a in batch else 1 for a in kept)
            outputs = outputs + jnp.reshape(bias, lead + features)
        return outputs, params


class Einsum(Module):
    """`einsum(einsum_str, inputs, kernel) + bias` with a learned `kernel` of `shape` (flax's).

    The equation has exactly two operands, the input then the kernel, and an
    explicit `->`. `bias` has the sizes of the kernel axes that appear in the
    output, in output order.

    Args:
        graph: This module's node.
        shape: The kernel's shape.
        einsum_str: The equation, here or at the call (exactly one of the two).
        use_bias: Add `bias`.
        dtype: Computation dtype (`None`: promoted from inputs and params).
        param_dtype: Dtype the params are created in.
        precision: Passed to `jnp.einsum`.
        kernel_init: Initialiser of the kernel.
        bias_init: Initialiser of the bias.
        preferred_element_type: Accumulation dtype passed to `jnp.einsum`.
        rng: `Rng` for initialisation.
        kernel_metadata: Metadata stored with the kernel (e.g. sharding).
        bias_metadata: Metadata stored with the bias.

    Raises:
        ValueError: If the equation is given twice or not at all, has no
            `->`, or does not have exactly two operands.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> g = bx.Graph('net')
        >>> rng = bx.Rng(g / 'rng')
        >>> layer = bx.Einsum(g / 'e', (5, 6, 7), 'abc,cde->abde', rng=rng)
        >>> y, params = layer(rng.seed(bx.Params(), seed=0), jnp.ones((3, 4, 5)))
        >>> y.shape, params[('net', 'e', 'bias')].value.shape
        ((3, 4, 6, 7), (6, 7))
    """

    def __init__(
        self,
        graph: Graph,
        shape: Sequence[int],
        einsum_str: str | None = None,
        use_bias: bool = True,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        precision: Any = None,
        kernel_init: Initializer = _DEFAULT_KERNEL_INIT,
        bias_init: Initializer = _DEFAULT_BIAS_INIT,
        preferred_element_type: Any = None,
        rng: Any = None,
        kernel_metadata: dict[str, Any] | None = None,
        bias_metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(graph)
        self.shape = tuple(shape)
        self.einsum_str = einsum_str
        self.use_bias = use_bias
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.precision = precision
        self.kernel_init = kernel_init
        self.bias_init = bias_init
        self.preferred_element_type = preferred_element_type
        self.rng = rng
        self.kernel_metadata = kernel_metadata
        self.bias_metadata = bias_metadata

    def _equation(self, einsum_str: str | None) -> tuple[str, str, str]:
        if (einsum_str is None) == (self.einsum_str is None):
            raise ValueError(
                f"{_where(self)}: expected einsum_str in the constructor or the call "
                f"(exactly one), got {self.einsum_str!r} and {einsum_str!r}. Fix: "
                "pass it once."
            )
        equation = (einsum_str or self.einsum_str).replace(" ", "")
        if "->" not in equation or equation.count(",") != 1:
            raise ValueError(
                f"{_where(self)}: expected an explicit two-operand equation "
                f"'input,kernel->output', got {equation!r}. Fix: write it like "
                "'abc,cde->abde'."
            )
        operands, out = equation.split("->")
        _, rhs = operands.split(",")
        if "." in rhs or len(rhs) != len(self.shape):
            raise ValueError(
                f"{_where(self)}: expected the kernel operand to name the "
                f"{len(self.shape)} axes of shape {self.shape}, got {rhs!r}. Fix: "
                "one letter per kernel axis, no ellipsis."
            )
        return equation, rhs, out

    def __call__(
        self, params: Params, inputs: jax.Array, einsum_str: str | None = None
    ) -> tuple[jax.Array, Params]:
        """Computes the einsum of `inputs` with the kernel (plus bias)."""
        equation, rhs, out = self._equation(einsum_str)
        kernel, params = self.get_param(
            params,
            "kernel",
            self.shape,
            self.kernel_init,
            dtype=self.param_dtype,
            metadata=self.kernel_metadata,
            rng=self.rng,
        )
        bias = None
        sizes = dict(zip(rhs, self.shape, strict=True))
        if self.use_bias:
            bias_shape = tuple(sizes[c] for c in out if c in sizes)
            bias, params = self.get_param(
                params,
                "bias",
                bias_shape,
                self.bias_init,
                dtype=self.param_dtype,
                metadata=self.bias_metadata,
                rng=self.rng,
            )
        inputs, kernel, bias = promote_dtype(inputs, kernel, bias, dtype=self.dtype)
        outputs = jnp.einsum(
            equation,
            inputs,
            kernel,
            precision=self.precision,
            preferred_element_type=self.preferred_element_type,
        )
        if bias is not None:
            # Output letters after an ellipsis are the trailing axes of the result.
            letters = out.split("...")[-1]
            lead = outputs.ndim - len(letters)
            broadcast = (1,) * lead + tuple(sizes.get(c, 1) for c in letters)
            if "..." in out:
                head = out.split("...")[0]
                if any(c in sizes for c in head):
                    raise ValueError(
                        f"{_where(self)}: expected kernel axes after the ellipsis of "
                        f"the output, got {out!r}. Fix: put the kernel's output "
                        "letters last, or use_bias=False."
                    )
            else:
                broadcast = tuple(sizes.get(c, 1) for c in out)
            outputs = outputs + jnp.reshape(bias, broadcast)
        return outputs, params


def _feature_shape(module: Module, in_features: Any) -> tuple[int, ...]:
    """mlax's `in_features`: an int or a tuple (`None`: broadcast over that axis)."""
    sizes = (in_features,) if isinstance(in_features, int | np.integer) else tuple(in_features)
    for size in sizes:
        if size is not None and (not isinstance(size, int | np.integer) or size < 1):
            raise ValueError(
                f"{_where(module)}: expected in_features to be a positive int or a "
                f"tuple of positive ints and None, got {in_features!r}. Fix: pass "
                "e.g. 4 or (None, 4)."
            )
    return tuple(1 if size is None else int(size) for size in sizes)


class _Elementwise(Module):
    """A learned array of the trailing input shape, combined elementwise with the inputs."""

    _name = ""

    def __init__(
        self,
        graph: Graph,
        in_features: int | Sequence[int | None],
        init: Initializer,
        dtype: Any,
        param_dtype: Any,
        rng: Any,
        metadata: dict[str, Any] | None,
    ) -> None:
        super().__init__(graph)
        self.in_features = in_features
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.rng = rng
        self._shape = _feature_shape(self, in_features)
        self._init = init
        self._metadata = metadata

    def _param(self, params: Params, inputs: jax.Array) -> tuple[jax.Array, jax.Array, Params]:
        shape = self._shape
        tail = tuple(jnp.shape(inputs))[jnp.ndim(inputs) - len(shape) :]
        if jnp.ndim(inputs) < len(shape) or any(
            s != 1 and s != t for s, t in zip(shape, tail, strict=True)
        ):
            raise ValueError(
                f"{_where(self)}: expected inputs ending in {self.in_features!r} "
                f"(None: any size), got shape {tuple(jnp.shape(inputs))}. Fix: pass "
                "inputs whose trailing axes match in_features."
            )
        value, params = self.get_param(
            params,
            self._name,
            shape,
            self._init,
            dtype=self.param_dtype,
            metadata=self._metadata,
            rng=self.rng,
        )
        inputs, value = promote_dtype(inputs, value, dtype=self.dtype)
        return inputs, _lead(value, inputs.ndim), params


class Bias(_Elementwise):
    """Adds a learned `bias` of the trailing shape `in_features` (mlax's `Bias`).

    Args:
        graph: This module's node.
        in_features: Trailing input shape, an int or a tuple; a `None` entry
            shares the bias over that axis (size 1, broadcast).
        bias_init: Initialiser of `bias`.
        dtype: Computation dtype (`None`: promoted from inputs and params).
        param_dtype: Dtype `bias` is created in (mlax's `dtype`).
        rng: `Rng` for initialisation (only needed for random inits).
        bias_metadata: Metadata stored with `bias`.

    Raises:
        ValueError: If `in_features` is not made of positive ints and None, or
            the inputs do not end in it.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> add = bx.Bias(bx.Graph('net') / 'b', (None, 3),
        ...               bias_init=lambda k, s, d: jnp.arange(3.0).reshape(s))
        >>> y, params = add(bx.Params(), jnp.zeros((2, 4, 3)))
        >>> y[0, 0].tolist(), params[('net', 'b', 'bias')].value.shape
        ([0.0, 1.0, 2.0], (1, 3))
    """

    _name = "bias"

    def __init__(
        self,
        graph: Graph,
        in_features: int | Sequence[int | None],
        bias_init: Initializer = _DEFAULT_BIAS_INIT,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rng: Any = None,
        bias_metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(graph, in_features, bias_init, dtype, param_dtype, rng, bias_metadata)
        self.bias_init = bias_init

    def __call__(self, params: Params, inputs: jax.Array) -> tuple[jax.Array, Params]:
        """`inputs + bias`."""
        inputs, bias, params = self._param(params, inputs)
        return inputs + bias, params


class Scaler(_Elementwise):
    """Multiplies by a learned `scale` of the trailing shape `in_features` (mlax's `Scaler`).

    Args:
        graph: This module's node.
        in_features: Trailing input shape, an int or a tuple; a `None` entry
            shares the scale over that axis (size 1, broadcast).
        scale_init: Initialiser of `scale` (mlax's `scaler_initializer`).
        dtype: Computation dtype (`None`: promoted from inputs and params).
        param_dtype: Dtype `scale` is created in (mlax's `dtype`).
        rng: `Rng` for initialisation (only needed for random inits).
        scale_metadata: Metadata stored with `scale`.

    Raises:
        ValueError: If `in_features` is not made of positive ints and None, or
            the inputs do not end in it.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> mul = bx.Scaler(bx.Graph('net') / 's', 2)
        >>> y, params = mul(bx.Params(), jnp.array([[3.0, 4.0]]))
        >>> y.tolist(), params[('net', 's', 'scale')].value.tolist()
        ([[3.0, 4.0]], [1.0, 1.0])
    """

    _name = "scale"

    def __init__(
        self,
        graph: Graph,
        in_features: int | Sequence[int | None],
        scale_init: Initializer = jax.nn.initializers.ones,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rng: Any = None,
        scale_metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(graph, in_features, scale_init, dtype, param_dtype, rng, scale_metadata)
        self.scale_init = scale_init

    def __call__(self, params: Params, inputs: jax.Array) -> tuple[jax.Array, Params]:
        """`inputs * scale`."""
        inputs, scale, params = self._param(params, inputs)
        return inputs * scale, params


class Identity(Module):
    """Returns its input unchanged (PAX's `Identity`, mlax's `identity`).

    A placeholder in a `Sequential`, or the skip branch of a `Parallel`.

    Example:
        >>> import jax.numpy as jnp
        >>> import blox as bx
        >>> ident = bx.Identity(bx.Graph('net') / 'id')
        >>> y, params = ident(bx.Params(), jnp.ones(3))
        >>> y.tolist(), len(params)
        ([1.0, 1.0, 1.0], 0)
    """

    def __init__(self, graph: Graph) -> None:
        super().__init__(graph)

    def __call__(self, params: Params, inputs: Any) -> tuple[Any, Params]:
        """Returns `(inputs, params)`."""
        return inputs, params
