"""Why a peer beats blox on a row: the report's "Where a peer is faster" section.

`_report.py` lists every row where a peer's ratio to raw JAX is below the best
blox contender's, and looks the reason up here by the row's group, the start
of its name and the start of the peer's name. The reasons are what was
measured or read while investigating (docs/cnn-performance.md has the
convolution experiments); a row with no entry says so in the report, so a new
loss cannot hide.
"""

# (group, row name starts with, peer name starts with) -> why.
WHY: dict[tuple[str, str, str], str] = {
    ("compute", "CNN", "PyTorch"): (
        "PyTorch's CPU convolutions run oneDNN kernels; XLA:CPU's convolution "
        "emitter is 2.5-3.5x slower on this CPU for the same conv-only forward "
        "and backward (135 ms against 33 ms), and neither `--xla_cpu_use_onednn` "
        "nor XNNPACK changed it (docs/cnn-performance.md). Raw JAX is as slow, so "
        "no blox-side formulation closes it."
    ),
    ("compute", "CNN", "Flax NNX"): (
        "blox eager's compiled step is NNX's: the same BatchNorm formulation "
        "(`use_fast_variance=True`, blox eager's default) traced in flax's order, "
        "the same bytes accessed and flops in XLA's cost analysis (914 MB, 3.15 "
        "GFLOP; 1.5 kB more for five state copies), and 0.98-0.99x of NNX's CPU time "
        "paired in one process (docs/cnn-performance.md). A row where NNX is "
        "ahead is the run's noise; blox core runs raw JAX's ancestor formulation."
    ),
    ("recurrent", "LSTM", "PyTorch"): (
        "torch.nn.LSTM on CPU calls one fused oneDNN RNN primitive per layer for "
        "the whole sequence; XLA runs a while loop whose body launches a small "
        "(32x128)@(128x512) matmul and the gate fusions per step, a fixed cost "
        "per step that a fused kernel does not pay."
    ),
    ("recurrent", "GRU", "PyTorch"): (
        "As for the LSTM: PyTorch's GRU is one fused oneDNN RNN primitive; XLA "
        "pays a loop iteration with separate kernels per step."
    ),
    ("transformer", "Transformer", "PyTorch"): (
        "PyTorch's CPU matmuls and fused scaled-dot-product attention are oneDNN "
        "kernels; XLA:CPU's dot emitter is slower at these small (b16 x 128) "
        "shapes. Raw JAX is as slow: blox matches it (the blox rows are ~1.00x)."
    ),
    ("transformer", "Transformer", "Flax NNX"): (
        "Not isolated. blox eager and core are at raw JAX's time (0.96-0.99x) and "
        "NNX a few percent below it; no blox-specific cost shows in the step."
    ),
    ("compile", "MLP", "PyTorch"): (
        "PyTorch eager compiles nothing: its first step costs one step. Every JAX "
        "library, raw JAX included, traces and compiles the step with XLA first."
    ),
    ("dispatch", "MLP", "PyTorch"): (
        "On a tiny MLP a PyTorch eager forward is a few C++ kernel calls with no "
        "compiled-program launch, as fast as raw `jax.jit` here; every JAX "
        "library adds its Python-side dispatch on top (blox eager: one "
        "`jax.jit` call over the module tree), which a blocked call pays in full."
    ),
    ("build", "MLP 784-1024x3-10: first jitted forward", "Flax NNX"): (
        "Within the spread of blox core's row (quartiles overlap); blox core's "
        "trace does its Params bookkeeping, a few ms of Python before XLA's compile."
    ),
    ("build", "MLP 784-1024x3-10: first Adam step", ""): (
        "Within the spread of blox's row (its quartiles reach below the peer's "
        "median); every JAX contender traces and compiles the same step program "
        "here, and blox eager's trace adds about 1-3 ms of its own Python "
        "(dispatch, module tree, shape checks) to a ~70 ms compile."
    ),
    ("build", "", "PyTorch"): (
        "PyTorch fills parameters with its precompiled CPU kernels; a JAX library "
        "runs a compiled XLA program per initialiser. blox draws from one "
        "fixed-size program per distribution (cached on disk), which is what "
        "brings it within a small factor."
    ),
}


def why(group: str, row: str, peer: str) -> str:
    """The recorded reason `peer` beats blox on `row`, or a note that there is none.

    Example:
        >>> why("compile", "MLP, 48 layers: first train step", "PyTorch (eager)")[:29]
        'PyTorch eager compiles nothin'
        >>> why("compute", "a new row", "Equinox (eqx.filter_jit)")
        'no reason recorded yet (benchmarks/_why.py)'
    """
    for (g, row_start, peer_start), text in WHY.items():
        if g == group and row.startswith(row_start) and peer.startswith(peer_start):
            return text
    return "no reason recorded yet (benchmarks/_why.py)"
