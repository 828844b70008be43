"""`torch_nn.Module` and the containers, with PyTorch's `state_dict` conventions.

A `torch_nn.Module` is a `blox.eager.Module` whose call runs `forward`, as in
PyTorch. Its `state_dict()` has PyTorch's keys and shapes (the layers store
their arrays under PyTorch's names and layouts), minus the random streams,
which PyTorch keeps outside its modules; `load_state_dict` takes what PyTorch
gives: torch tensors, numpy arrays, or the path of a `.pt`/`.pth`/`.bin` file
(read with `torch.load(weights_only=True)`, never plain pickle) or of a
`.safetensors` file. `nn.save` / `nn.load` write every leaf, random streams
included, so resuming from them stays exact.
"""

import os
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import jax
import numpy as np

from .._module import LoadResult
from .._module import Module as _EagerModule

_RNG_TAGS = ("rng_seed", "rng_counter")


def _is_rng_state(owner: _EagerModule, attr: str) -> bool:
    meta = owner.__dict__.get("_blox_metadata", {}).get(attr, {})
    return meta.get("tag") in _RNG_TAGS


def _torch_names(model: _EagerModule) -> Iterator[tuple[str, _EagerModule, str]]:
    """`(dotted name, owner, attribute)` of every array but random-stream state."""
    modules = dict(model.named_modules())
    for name in _EagerModule.state_dict(model):
        prefix, _, attr = name.rpartition(".")
        owner = modules[prefix]
        if not _is_rng_state(owner, attr):
            yield name, owner, attr


def _to_numpy(where: str, name: str, value: Any) -> Any:
    if isinstance(value, jax.Array):
        return value
    if isinstance(value, np.ndarray | np.generic):
        return np.array(value)  # a copy: JAX may alias host memory the caller mutates
    kind = type(value)
    if kind.__module__.startswith("torch") and hasattr(value, "detach"):
        import torch

        tensor = value.detach().cpu()
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()  # numpy has no bfloat16; exact in float32
        # A copy: PyTorch updates its buffers in place, and JAX may alias the
        # numpy memory, so a shared buffer would change under our feet.
        return tensor.numpy().copy()
    if isinstance(value, int | float | bool):
        return np.asarray(value)
    raise TypeError(
        f"{where}: expected arrays (torch tensors, numpy or JAX arrays) as values, got "
        f"{kind.__name__} for {name!r}. Fix: pass model.state_dict() of a PyTorch model "
        "or a dict of arrays."
    )


def read_state_dict(source: Any, where: str = "load_state_dict") -> dict[str, Any]:
    """A state_dict from a mapping or a file path, with numpy/JAX values.

    Args:
        source: A mapping of names to torch tensors or arrays, or the path of a
            ``.pt``/``.pth``/``.bin`` file (read with
            `torch.load(..., weights_only=True)`) or a ``.safetensors`` file.
        where: How errors name the caller.

    Returns:
        `{name: array}` in the source's order.

    Raises:
        TypeError: If `source` is neither a mapping nor a path, or holds a
            non-array value.
        ValueError: If the file suffix is unknown.
        ImportError: If a PyTorch file is given and torch is not installed.

    Example:
        >>> import numpy as np
        >>> from blox.eager import torch_nn as nn
        >>> list(nn.read_state_dict({'weight': np.ones((2, 3))}))
        ['weight']
    """
    if isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        suffix = os.path.splitext(path)[1].lower()
        if suffix == ".safetensors":
            from safetensors.numpy import load_file

            source = load_file(path)
        elif suffix in (".pt", ".pth", ".bin"):
            try:
                import torch
            except ImportError as error:
                raise ImportError(
                    f"{where}: expected torch to be installed to read {path!r} safely "
                    "(torch.load(weights_only=True)), got no torch; blox never reads "
                    "PyTorch files with plain pickle. Fix: pip install torch, or "
                    "convert the file to .safetensors."
                ) from error
            source = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise ValueError(
                f"{where}: expected a .pt, .pth, .bin or .safetensors path, got {path!r}. "
                "Fix: pass a file with one of those suffixes, or the state_dict itself."
            )
    if not isinstance(source, Mapping):
        raise TypeError(
            f"{where}: expected a state_dict (a mapping of names to arrays) or a file "
            f"path, got {type(source).__name__}. Fix: pass model.state_dict() or a path."
        )
    return {str(k): _to_numpy(where, str(k), v) for k, v in source.items()}


class Module(_EagerModule):
    """Base class of PyTorch-style models: write `forward`; calling runs it.

    Everything of `blox.eager.Module` holds (the object is a JAX pytree, works
    with `nn.filter_jit`, `nn.trainable`, optax). On top: `forward`, and
    PyTorch's `state_dict` conventions (random streams left out, as in
    PyTorch; `nn.save` still carries them).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from blox.eager import torch_nn as nn
        >>> class MLP(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.fc1 = nn.Linear(3, 8)
        ...         self.drop = nn.Dropout(0.1)
        ...         self.fc2 = nn.Linear(8, 2)
        ...
        ...     def forward(self, x):
        ...         return self.fc2(self.drop(jax.nn.relu(self.fc1(x))))
        >>> model = MLP()
        >>> model(jnp.ones((5, 3))).shape
        (5, 2)
        >>> [(k, v.shape) for k, v in model.state_dict().items()][:2]
        [('fc1.weight', (8, 3)), ('fc1.bias', (8,))]
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The computation; subclasses define it (calling the module runs it).

        Raises:
            NotImplementedError: If the subclass does not define it.

        Example:
            >>> from blox.eager import torch_nn as nn
            >>> nn.Identity().forward(3)
            3
        """
        raise NotImplementedError(
            f"{type(self).__name__}: expected a forward(self, ...) method, got none. "
            "Fix: define forward in the subclass; calling the module runs it."
        )

    def state_dict(self, *, as_torch: bool = False) -> "OrderedDict[str, Any]":
        """Every parameter and buffer under PyTorch's names; no random streams.

        Args:
            as_torch: Return torch tensors (so `torch.save` of the result
                loads into a PyTorch model); default: JAX arrays.

        Example:
            >>> from blox.eager import torch_nn as nn
            >>> list(nn.Sequential(nn.Linear(2, 3), nn.Dropout(0.1)).state_dict())
            ['0.weight', '0.bias']
            >>> type(nn.Linear(2, 3).state_dict(as_torch=True)['weight']).__name__
            'Tensor'
        """
        out = OrderedDict((name, owner.__dict__[attr]) for name, owner, attr in _torch_names(self))
        if as_torch:
            import torch

            out = OrderedDict((k, torch.from_numpy(np.array(v))) for k, v in out.items())
        return out

    def load_state_dict(self, state_dict: Any, strict: bool = True) -> LoadResult:
        """Copies a PyTorch state_dict (mapping or file path) into this model, in place.

        Values may be torch tensors, numpy or JAX arrays; each is cast to the
        dtype of the array it replaces. Random streams are not expected (a
        PyTorch state_dict has none) but accepted. All problems are reported
        in one error.

        Args:
            state_dict: A mapping, or a ``.pt``/``.pth``/``.bin`` or
                ``.safetensors`` path (see `read_state_dict`).
            strict: Fail on missing or unexpected keys.

        Returns:
            `LoadResult(missing_keys, unexpected_keys)`.

        Raises:
            ValueError: Listing missing, unexpected and shape-mismatched keys.

        Example:
            >>> from blox.eager import torch_nn as nn
            >>> a, b = nn.Linear(2, 3), nn.Linear(2, 3)
            >>> b.load_state_dict(a.state_dict())
            LoadResult(missing_keys=[], unexpected_keys=[])
            >>> bool((a.weight == b.weight).all())
            True
        """
        where = f"{type(self).__name__}.load_state_dict"
        given = read_state_dict(state_dict, where)
        every = set(_EagerModule.state_dict(self))
        missing = [name for name, _, _ in _torch_names(self) if name not in given]
        unexpected = [name for name in given if name not in every]
        if strict and (missing or unexpected):
            raise ValueError(
                f"{where}: expected the keys of this model's state_dict, got missing "
                f"keys {missing} and unexpected keys {unexpected}. Fix: name the "
                "attributes as in the PyTorch model, or pass strict=False."
            )
        known = {k: v for k, v in given.items() if k in every}
        _EagerModule.load_state_dict(self, known, strict=False)
        return LoadResult(missing, unexpected)


def _check_module(where: str, value: Any, position: Any) -> None:
    if not isinstance(value, _EagerModule):
        raise TypeError(
            f"{where}: expected modules, got {type(value).__name__} at {position!r}. "
            "Fix: wrap functions in a module (e.g. nn.ReLU()) or call them in forward."
        )


class Sequential(Module):
    """Runs its modules in order; named ``'0'``, ``'1'``, ... or by an OrderedDict's keys.

    Args:
        *modules: Modules, or one `OrderedDict` of name -> module.

    Raises:
        TypeError: If an item is not a module.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager import torch_nn as nn
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> net(jnp.ones((1, 3))).shape, list(net.state_dict())[0], len(net)
        ((1, 2), '0.weight', 3)
    """

    def __init__(self, *modules: Any) -> None:
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            items = list(modules[0].items())
        else:
            items = [(str(i), m) for i, m in enumerate(modules)]
        for name, module in items:
            _check_module("nn.Sequential", module, name)
            setattr(self, name, module)
        self._blox_order = tuple(name for name, _ in items)

    def forward(self, x: Any) -> Any:
        """Applies each module to the previous one's output."""
        d = self.__dict__
        for name in self._blox_order:
            x = d[name](x)
        return x

    def __getitem__(self, index: int | slice) -> Any:
        names = self._blox_order
        if isinstance(index, slice):
            return Sequential(OrderedDict((n, self.__dict__[n]) for n in names[index]))
        return self.__dict__[names[index]]

    def __len__(self) -> int:
        return len(self._blox_order)

    def __iter__(self) -> Iterator[Any]:
        return (self.__dict__[n] for n in self._blox_order)

    def append(self, module: Any) -> "Sequential":
        """Adds `module` at the end (named by its position); returns self.

        Example:
            >>> from blox.eager import torch_nn as nn
            >>> len(nn.Sequential(nn.ReLU()).append(nn.Tanh()))
            2
        """
        name = str(len(self._blox_order))
        _check_module("nn.Sequential.append", module, name)
        setattr(self, name, module)
        self._blox_order = (*self._blox_order, name)
        return self


class ModuleList(Module):
    """A list of modules, named ``'0'``, ``'1'``, ... in the `state_dict`.

    Args:
        modules: An iterable of modules.

    Raises:
        TypeError: If an item is not a module.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager import torch_nn as nn
        >>> layers = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
        >>> x = jnp.ones((1, 2))
        >>> for layer in layers:
        ...     x = layer(x)
        >>> x.shape, len(layers), list(layers.state_dict())[-1]
        ((1, 2), 3, '2.bias')
    """

    def __init__(self, modules: Iterable[Any] = ()) -> None:
        super().__init__()
        self._blox_count = 0
        self.extend(modules)

    def append(self, module: Any) -> "ModuleList":
        """Adds `module` at the end; returns self.

        Example:
            >>> from blox.eager import torch_nn as nn
            >>> len(nn.ModuleList().append(nn.ReLU()))
            1
        """
        n = self._blox_count
        _check_module("nn.ModuleList", module, n)
        setattr(self, str(n), module)
        self._blox_count = n + 1
        return self

    def extend(self, modules: Iterable[Any]) -> "ModuleList":
        """Appends every module of `modules`; returns self.

        Example:
            >>> from blox.eager import torch_nn as nn
            >>> len(nn.ModuleList().extend([nn.ReLU(), nn.Tanh()]))
            2
        """
        for module in modules:
            self.append(module)
        return self

    def _index(self, index: int) -> str:
        n = self._blox_count
        if not -n <= index < n:
            raise IndexError(
                f"nn.ModuleList: expected an index in [-{n}, {n}), got {index}. "
                "Fix: use a valid position."
            )
        return str(index % n)

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return ModuleList([self[i] for i in range(self._blox_count)[index]])
        return self.__dict__[self._index(index)]

    def __setitem__(self, index: int, module: Any) -> None:
        _check_module("nn.ModuleList", module, index)
        setattr(self, self._index(index), module)

    def __len__(self) -> int:
        return self._blox_count

    def __iter__(self) -> Iterator[Any]:
        return (self.__dict__[str(i)] for i in range(self._blox_count))


class ModuleDict(Module):
    """A dict of modules; each key names its module in the `state_dict`.

    Args:
        modules: A mapping (or iterable of pairs) of name -> module.

    Raises:
        TypeError: If a value is not a module or a key not a str.
        ValueError: If a key clashes with a ModuleDict method name.

    Example:
        >>> import jax.numpy as jnp
        >>> from blox.eager import torch_nn as nn
        >>> heads = nn.ModuleDict({'cls': nn.Linear(4, 3), 'box': nn.Linear(4, 2)})
        >>> heads['box'](jnp.ones((1, 4))).shape, list(heads.keys())
        ((1, 2), ['cls', 'box'])
        >>> list(heads.state_dict())[:2]
        ['cls.weight', 'cls.bias']
    """

    def __init__(self, modules: Any = None) -> None:
        super().__init__()
        self._blox_keys = ()
        if modules is not None:
            self.update(modules)

    def __setitem__(self, key: str, module: Any) -> None:
        if not isinstance(key, str):
            raise TypeError(
                f"nn.ModuleDict: expected str keys, got {type(key).__name__}. "
                "Fix: use names such as 'encoder'."
            )
        if hasattr(type(self), key) or key.startswith("_"):
            raise ValueError(
                f"nn.ModuleDict: expected a key that is not a method or private "
                f"name, got {key!r}. Fix: choose another name."
            )
        _check_module("nn.ModuleDict", module, key)
        setattr(self, key, module)
        if key not in self._blox_keys:
            self._blox_keys = (*self._blox_keys, key)

    def __getitem__(self, key: str) -> Any:
        if key not in self._blox_keys:
            raise KeyError(
                f"nn.ModuleDict: expected one of {list(self._blox_keys)}, got {key!r}. "
                "Fix: use an existing key."
            )
        return self.__dict__[key]

    def update(self, modules: Any) -> None:
        """Adds or replaces entries from a mapping or iterable of pairs.

        Example:
            >>> from blox.eager import torch_nn as nn
            >>> d = nn.ModuleDict(); d.update({'act': nn.ReLU()}); len(d)
            1
        """
        items = modules.items() if isinstance(modules, Mapping) else modules
        for key, module in items:
            self[key] = module

    def __contains__(self, key: object) -> bool:
        return key in self._blox_keys

    def __len__(self) -> int:
        return len(self._blox_keys)

    def __iter__(self) -> Iterator[str]:
        return iter(self._blox_keys)

    def keys(self) -> list[str]:
        """The keys, in insertion order.

        Example:
            >>> from blox.eager import torch_nn as nn
            >>> nn.ModuleDict({'a': nn.ReLU()}).keys()
            ['a']
        """
        return list(self._blox_keys)

    def values(self) -> list[Any]:
        """The modules, in insertion order.

        Example:
            >>> from blox.eager import torch_nn as nn
            >>> len(nn.ModuleDict({'a': nn.ReLU()}).values())
            1
        """
        return [self.__dict__[k] for k in self._blox_keys]

    def items(self) -> list[tuple[str, Any]]:
        """`(key, module)` pairs, in insertion order.

        Example:
            >>> from blox.eager import torch_nn as nn
            >>> [k for k, _ in nn.ModuleDict({'a': nn.ReLU()}).items()]
            ['a']
        """
        return [(k, self.__dict__[k]) for k in self._blox_keys]
