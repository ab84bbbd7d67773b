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
- ``none``: no gains; for a score-conditioned model (``ModelConfig.score_input``), which takes
  the notes as :meth:`ScoreGuide.inputs` (per-class harmonic combs) instead.

:func:`harmonic_combs` draws the partials of a note list on a frequency grid; training draws the
(perturbed) notes of each source with it too, so the network sees at training what it gets here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from .score import Score, ScoreNote, activity_at

Prior = Literal["activity", "harmonic", "none"]
PRIORS: tuple[str, ...] = ("activity", "harmonic", "none")

NoteArray = np.ndarray
"""Notes as an array (N, 3): onset and offset in seconds, MIDI pitch; sorted by onset."""


def bin_frequencies(rate: int, n_fft: int) -> np.ndarray:
    """The centre frequency in Hz of each bin of an ``n_fft`` STFT at ``rate`` Hz: (n_fft/2+1,)."""
    return np.arange(n_fft // 2 + 1) * rate / n_fft


def note_array(notes: Sequence[ScoreNote]) -> NoteArray:
    """Score notes -> (N, 3) float64 [onset, offset, pitch], sorted by onset."""
    arr = np.array([(n.onset, n.offset, n.pitch) for n in notes], np.float64).reshape(-1, 3)
    return arr[np.argsort(arr[:, 0], kind="stable")]


def harmonic_combs(notes: NoteArray, freqs: np.ndarray, times: np.ndarray,
                   tolerance: float = 0.0, width_cents: float = 50.0, harmonics: int = 40
                   ) -> np.ndarray:
    """(F, T) in [0, 1]: how close each frequency ``freqs`` (F,) is to a partial of a note
    sounding at each time ``times`` (T,) (a Gaussian of ``width_cents`` around each of the
    first ``harmonics`` partials, at least one bin wide; the largest over the notes). A note
    sounds from ``tolerance`` s before its onset to as long after its offset."""
    out = np.zeros((len(freqs), len(times)), np.float32)
    if not len(notes) or not len(times):
        return out
    bin_hz = freqs[1] - freqs[0] if len(freqs) > 1 else 1.0
    width = width_cents / 1200 * np.log(2)  # relative width of a partial
    lo, hi = times[0] - tolerance, times[-1] + tolerance
    first = int(np.searchsorted(notes[:, 0], lo - 30.0))  # notes may last long
    for onset, offset, pitch in notes[first:]:
        if onset > hi:
            break
        if offset < lo:
            continue
        span = (times >= onset - tolerance) & (times <= offset + tolerance)
        if not span.any():
            continue
        f0 = 440.0 * 2 ** ((pitch - 69) / 12)
        partials = f0 * np.arange(1, harmonics + 1)
        partials = partials[partials < freqs[-1]]
        if not len(partials):
            continue
        sigma = np.maximum(partials * width, bin_hz)
        comb = np.exp(-0.5 * ((freqs[:, None] - partials[None]) / sigma[None]) ** 2
                      ).max(axis=1)  # (F,)
        out[:, span] = np.maximum(out[:, span], comb[:, None])
    return out


class ScoreGuide:
    """Gains from an aligned ``score`` for the instruments ``codes``, on the grid of a model
    working at ``rate`` Hz with ``n_fft``/``hop`` and windows of ``frames`` STFT frames.

    ``prior="none"``: no gains (all ones); a score-conditioned model still gets the notes
    through :meth:`inputs`."""

    def __init__(self, score: Score, codes: Sequence[str], rate: int, n_fft: int, hop: int,
                 frames: int, prior: Prior = "harmonic", tolerance: float = 0.15,
                 floor: float = 0.1, width_cents: float = 50.0, harmonics: int = 40) -> None:
        if prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}, not {prior!r}")
        self.codes, self.rate, self.hop, self.frames = tuple(codes), rate, hop, frames
        self.prior, self.tolerance, self.floor = prior, tolerance, floor
        self.freqs = bin_frequencies(rate, n_fft)
        self._width_cents = width_cents
        self._harmonics = harmonics
        self._spans = score.spans(self.codes, tolerance)
        self._sources = {c: note_array(notes) for c, notes in score.sources().items()}
        self._notes = [self._sources.get(c, np.zeros((0, 3))) for c in self.codes]

    def _times(self, starts: np.ndarray) -> np.ndarray:
        """Window starts (B,) in model samples -> the times of their frames (B, T) in s."""
        starts = np.asarray(starts, np.float64)
        return (starts[:, None] + np.arange(self.frames)[None] * self.hop) / self.rate

    def __call__(self, starts: np.ndarray) -> np.ndarray:
        """Window starts (B,) in model samples -> gains (B, K, F, T), F = 1 for ``activity``
        and ``none``."""
        times = self._times(starts)
        if self.prior == "none":
            return np.ones((len(times), len(self.codes), 1, self.frames), np.float32)
        active = np.stack([activity_at(self._spans, t, self.tolerance) for t in times])
        if self.prior == "activity":
            return active[:, :, None, :]
        combs = np.stack([self._combs(t) for t in times])  # (B, K, F, T)
        strongest = combs.max(axis=1, keepdims=True)
        gains = (self.floor + combs) / (self.floor + strongest)
        return (gains * active[:, :, None, :]).astype(np.float32)

    def inputs(self, starts: np.ndarray, classes: Sequence[str]) -> np.ndarray:
        """What a score-conditioned network takes: for the windows that start at ``starts``
        (B,) the harmonic combs of every class of ``classes`` (K_model) that the score plays
        (zeros for the others), without tolerance -> (B, K_model, F, T)."""
        times = self._times(starts)
        out = np.zeros((len(times), len(classes), len(self.freqs), self.frames), np.float32)
        for k, code in enumerate(classes):
            notes = self._sources.get(code)
            if notes is not None and len(notes):
                for b, t in enumerate(times):
                    out[b, k] = harmonic_combs(notes, self.freqs, t, 0.0, self._width_cents,
                                               self._harmonics)
        return out

    def _combs(self, times: np.ndarray) -> np.ndarray:
        """(K, F, T) in [0, 1]: how close each bin is to a partial of a note sounding then."""
        return np.stack([harmonic_combs(notes, self.freqs, times, self.tolerance,
                                        self._width_cents, self._harmonics)
                         for notes in self._notes])
