"""blox's benchmark suite: `python -m benchmarks [--quick] [--only GROUP] [--out FILE]`.

Groups, one module each: `dispatch` (per-call overhead of a tiny MLP),
`compute` (large MLP and CNN training steps), `recurrent` (LSTM training
step), `compile` (cold first call of a 48-layer MLP step), `memory` (XLA
temporary bytes of the compiled steps) and `build` (constructing the large
MLP from cold caches). Every row pits blox against raw JAX
(the baseline), Equinox, Flax NNX and PyTorch; `_timing.py` holds the
interleaved measurement and `_report.py` writes `docs/benchmarks.md` and its
chart. Peers are optional (`pip install -e ".[bench]"`); a missing one is
skipped with a note.
"""
