"""blox: neural networks for JAX, a functional core and a PyTorch-style facade.

`import blox as bx` gives the functional core (`bx.Graph`, `bx.Linear`, ...),
name for name the API of jax-blox 0.1.6; `from blox import eager as nn` gives
the object API.
"""

from . import core as core
from .core import *  # noqa: F403
from .core import __all__ as _core_all

__version__ = "0.2.0"

__all__ = [*_core_all, "core", "__version__"]
