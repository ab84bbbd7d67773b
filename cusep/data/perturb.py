"""Scores as an alignment gets them wrong: the notes a score-conditioned model trains on.

A training segment's exact notes (what the player played) are moved the way a score aligned to a
recording errs (:class:`ScorePerturbation`): the whole segment shifted and locally stretched in
tempo, every onset and offset jittered, some notes dropped and some wrong ones added, so that
the model learns to trust the score without depending on it exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import CusepError
from ..guide import NoteArray

_WRONG_STEPS = (-12, -2, -1, 1, 2, 12)  # semitones of an added wrong note from a true one


@dataclass(frozen=True)
class ScorePerturbation:
    """How the notes of a training segment are perturbed (all off: the exact notes).

    ``jitter``: the range of the per-source error scale s in seconds (drawn uniformly); the
    segment is shifted by up to +-s and each onset and offset moves by up to +-s more.
    ``warp``: local tempo stretch of up to +-warp around the segment's middle. ``drop``: the
    share of notes left out; ``extra``: the share of notes that get a wrong twin (a semitone,
    a tone or an octave away, at the same time).
    """

    jitter: tuple[float, float] = (0.02, 0.1)
    warp: float = 0.05
    drop: float = 0.1
    extra: float = 0.05

    def __post_init__(self) -> None:
        lo, hi = self.jitter
        if not 0.0 <= lo <= hi:
            raise CusepError(f"score jitter must be (low, high) with 0 <= low <= high, "
                             f"got {self.jitter}.")
        for name, value in (("warp", self.warp), ("drop", self.drop), ("extra", self.extra)):
            if not 0.0 <= value < 1.0:
                raise CusepError(f"score {name} must be in [0, 1), got {value}.")


def perturb_notes(notes: NoteArray, start: float, length: float, config: ScorePerturbation,
                  uniform: Callable[[], float]) -> NoteArray:
    """The notes (N, 3) sounding in [start, start + length] s, in seconds from ``start``,
    perturbed as ``config`` says with ``uniform()`` draws in [0, 1) -> (M, 3), sorted by onset.
    """
    margin = 1.0 + config.jitter[1]
    keep = (notes[:, 1] > start - margin) & (notes[:, 0] < start + length + margin)
    out = notes[keep].copy()
    out[:, :2] -= start
    if not len(out):
        return out
    lo, hi = config.jitter
    scale = lo + (hi - lo) * uniform()
    shift = scale * (2 * uniform() - 1)
    stretch = 1 + config.warp * (2 * uniform() - 1)
    middle = length / 2
    out[:, :2] = middle + (out[:, :2] - middle) * stretch + shift
    for i in range(len(out)):
        out[i, 0] += scale * (2 * uniform() - 1)
        out[i, 1] += scale * (2 * uniform() - 1)
    out[:, 1] = np.maximum(out[:, 1], out[:, 0] + 0.03)
    if config.drop > 0:
        out = out[np.array([uniform() >= config.drop for _ in range(len(out))], bool)]
    if config.extra > 0 and len(out):
        wrong = [(on, off, pitch + _WRONG_STEPS[min(int(uniform() * len(_WRONG_STEPS)),
                                                    len(_WRONG_STEPS) - 1)])
                 for on, off, pitch in out if uniform() < config.extra]
        if wrong:
            out = np.concatenate([out, np.array(wrong, np.float64)])
    return out[np.argsort(out[:, 0], kind="stable")]
