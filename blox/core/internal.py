"""Internal: the pieces of `blox.core` that `blox.eager` builds on. Not public API.

`blox.eager` is a shell over the core, and a few of its jobs need core helpers
that are no part of the core's public surface: the constructor argument checks
(so eager and core layers raise the same errors), the checkpoint file format
(so `nn.save` writes what `bx.save_params` reads), the sharding resolution (so
`nn.shard` places a model as `bx.shard` does), the byte formatting of the
displays, the check of concrete embedding ids, the shape-independent sampling of initial values, and two families (`Bilinear`, resizing) that only the PyTorch facade
exposes so far. Those are re-exported here under plain names, and this is the
one module the eager package imports them from: no file of `blox.eager`
reaches into a private `blox.core._x` module, and a test
(`tests/test_internal_imports.py`) keeps it so. The names here may change in
any release without notice; code outside blox should use `blox.core`'s public
names.

Example:
    >>> from blox.core import internal
    >>> internal.format_bytes(2048)
    '2.0 KiB'
"""

from . import _checks as checks
from . import _resize as resizing
from . import _sampling as sampling
from ._bilinear import Bilinear as Bilinear
from ._checkpoint import _base_metadata as base_metadata
from ._checkpoint import _decode as decode
from ._checkpoint import _differences as differences
from ._checkpoint import _encode as encode
from ._checkpoint import _file_signature as file_signature
from ._checkpoint import _mismatch as mismatch
from ._checkpoint import _read as read
from ._checkpoint import _shape_dtype as shape_dtype
from ._checkpoint import _step_text as step_text
from ._checkpoint import _structure_hash as structure_hash
from ._checkpoint import _write as write
from ._display import _bytes as format_bytes
from ._embed import check_ids as check_ids
from ._initializers import Uniform as Uniform
from ._sharding import _place as place
from ._sharding import _sharding_of as sharding_of

__all__ = [
    "Bilinear",
    "base_metadata",
    "check_ids",
    "checks",
    "decode",
    "differences",
    "encode",
    "file_signature",
    "format_bytes",
    "mismatch",
    "place",
    "read",
    "resizing",
    "sampling",
    "shape_dtype",
    "sharding_of",
    "step_text",
    "structure_hash",
    "write",
]
