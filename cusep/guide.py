"""Score guides: what an aligned score says about each instrument, on a model's STFT grid.

A :class:`ScoreGuide` is given to :meth:`cusep.separate.Separator.iter_blocks` (``guide=``): for
the windows that start at some model samples it returns gains (B, K, F, T) in [0, 1] that
multiply the network's K masks (F = 1: the same gain for every frequency).

- ``activity``: 1 where an instrument's part has a note (within a tolerance, as alignment is
  never exact), 0 where it rests.
- ``harmonic``: besides, at each frame, the bins near the partials of the instrument's sounding
  notes keep their mask and the others are turned down towards ``floor`` - relative to the
  strongest partial of any instrument at that bin, so a bin that only another instrument's notes
  explain goes to the other, and one that no note explains (noise, a wrong note) is left to the
  masks as it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from .score import Score, activity_at

Prior = Literal["activity", "harmonic"]
PRIORS: tuple[str, ...] = ("activity", "harmonic")


class ScoreGuide:
    """Gains from an aligned ``score`` for the instruments ``codes``, on the grid of a model
    working at ``rate`` Hz with ``n_fft``/``hop`` and windows of ``frames`` STFT frames."""

    def __init__(self, score: Score, codes: Sequence[str], rate: int, n_fft: int, hop: int,
                 frames: int, prior: Prior = "harmonic", tolerance: float = 0.15,
                 floor: float = 0.1, width_cents: float = 50.0, harmonics: int = 40) -> None:
        if prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}, not {prior!r}")
        self.codes, self.rate, self.hop, self.frames = tuple(codes), rate, hop, frames
        self.prior, self.tolerance, self.floor = prior, tolerance, floor
        self.freqs = np.arange(n_fft // 2 + 1) * rate / n_fft
        self._bin_hz = rate / n_fft
        self._width = width_cents / 1200 * np.log(2)  # relative width of a partial
        self._harmonics = harmonics
        self._spans = score.spans(self.codes, tolerance)
        sources = score.sources()
        self._notes = [sources.get(c, ()) for c in self.codes]
        self._onsets = [np.array([n.onset for n in notes]) for notes in self._notes]

    def __call__(self, starts: np.ndarray) -> np.ndarray:
        """Window starts (B,) in model samples -> gains (B, K, F, T), F = 1 for ``activity``."""
        starts = np.asarray(starts, np.float64)
        times = (starts[:, None] + np.arange(self.frames)[None] * self.hop) / self.rate
        active = np.stack([activity_at(self._spans, t, self.tolerance) for t in times])
        if self.prior == "activity":
            return active[:, :, None, :]
        combs = np.stack([self._combs(t) for t in times])  # (B, K, F, T)
        strongest = combs.max(axis=1, keepdims=True)
        gains = (self.floor + combs) / (self.floor + strongest)
        return (gains * active[:, :, None, :]).astype(np.float32)

    def _combs(self, times: np.ndarray) -> np.ndarray:
        """(K, F, T) in [0, 1]: how close each bin is to a partial of a note sounding then."""
        out = np.zeros((len(self.codes), len(self.freqs), len(times)), np.float32)
        lo, hi = times[0] - self.tolerance, times[-1] + self.tolerance
        for k, (notes, onsets) in enumerate(zip(self._notes, self._onsets, strict=True)):
            first = int(np.searchsorted(onsets, lo - 30.0))  # notes may last long
            for note in notes[first:]:
                if note.onset > hi:
                    break
                if note.offset < lo:
                    continue
                span = (times >= note.onset - self.tolerance) & \
                       (times <= note.offset + self.tolerance)
                if not span.any():
                    continue
                f0 = 440.0 * 2 ** ((note.pitch - 69) / 12)
                partials = f0 * np.arange(1, self._harmonics + 1)
                partials = partials[partials < self.freqs[-1]]
                sigma = np.maximum(partials * self._width, self._bin_hz)
                comb = np.exp(-0.5 * ((self.freqs[:, None] - partials[None]) / sigma[None]) ** 2
                              ).max(axis=1)  # (F,)
                out[k][:, span] = np.maximum(out[k][:, span], comb[:, None])
        return out
