"""Training settings of a tiny, fast run, shared by the tests that train."""

from __future__ import annotations

TINY: list[str] = [
    "model.channels=[4, 8, 16]",
    "model.spectral.segment=4095",
    "mixing.segment=4095",
    "optim.batch_size=4",
    "optim.valid_items=8",
    "optim.valid_every=4",
    "optim.checkpoint_every=4",
]
SETS: list[str] = [a for s in TINY for a in ("--set", s)]  # as ``cusep train`` arguments
