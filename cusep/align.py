"""Score-to-recording alignment: chroma features of both, multi-scale DTW, warped notes.

The recording's features are chroma vectors (log-compressed STFT magnitudes summed per pitch
class) and onset chroma (their half-wave rectified rise), one per hop of :data:`HOP_S`. The
score's are those of a FluidSynth rendering of it (``reference="render"``: its instruments'
attacks are slow or sharp like the players') or are made straight from its notes
(``"notes"``: each sounding note adds its pitch class and those of its first harmonics, each
onset a decaying pulse); ``"auto"`` renders when FluidSynth and a General MIDI SoundFont are
installed. Dynamic time warping with the symmetric step
set (horizontal, vertical, diagonal at double weight) on the cosine distance finds the best
monotonic path; long pieces are aligned coarse to fine (features halved until the cost matrix is
small, then refined in a band around the coarser path), so memory grows linearly with the
length. The path maps score time to recording time; every note is moved through it.

Frames are ``T``; feature vectors ``(T, 24)``.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from .audio import resample, to_mono
from .errors import CusepError
from .score import Score

RATE = 22050
N_FFT = 4096
HOP = 512
HOP_S = HOP / RATE  # 23.2 ms
_FULL_CELLS = 4_000_000  # cost matrices up to this size are solved whole
_RADIUS = 24  # frames on each side of the coarser path searched at the finer level
_HARMONICS = ((0, 1.0), (12, 0.5), (19, 0.33), (24, 0.25), (28, 0.2))  # semitones, weight
_ONSET_WEIGHT = 0.8
_ONSET_DECAY_S = 0.05


@dataclass(frozen=True)
class Alignment:
    """A monotonic path from score frames to recording frames and what it says."""

    path: np.ndarray
    """(L, 2) int: (score frame, recording frame) pairs, both non-decreasing."""
    confidence: float
    """Mean cosine similarity of the features along the path, 0..1 (1: identical)."""
    reference: str = "made from the notes"
    """How the score's features were made."""

    def warp(self, seconds: np.ndarray) -> np.ndarray:
        """Score times (s) -> recording times (s), linear between path points."""
        s, r = self.path[:, 0], self.path[:, 1]
        # one recording time per score frame: the mean of the frames the path visits
        frames = np.unique(s)
        mean_r = np.bincount(s, weights=r)[frames] / np.bincount(s)[frames]
        return np.interp(np.asarray(seconds) / HOP_S, frames, mean_r) * HOP_S


def _normalise(f: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(f, axis=1, keepdims=True)
    return f / np.maximum(norm, 1e-9)


def _with_onsets(chroma: np.ndarray, onsets: np.ndarray) -> np.ndarray:
    return np.concatenate([_normalise(chroma + 1e-3), _ONSET_WEIGHT * _normalise(onsets + 1e-3)],
                          axis=1)


def _chroma(x, n_fft: int) -> np.ndarray:
    """Log-compressed chroma of the mono signal x at the model hop -> (T, 12)."""
    import torch

    from .spectral import stft

    spec = stft(torch.from_numpy(x), n_fft, HOP).abs().numpy()  # (F, T)
    freqs = np.arange(spec.shape[0]) * RATE / n_fft
    band = (freqs > 50) & (freqs < 5000)
    pc = np.round(69 + 12 * np.log2(freqs[band] / 440.0)).astype(int) % 12
    mag = np.log1p(100.0 * spec[band] / max(float(spec.max()), 1e-9))
    chroma = np.zeros((12, spec.shape[1]))
    np.add.at(chroma, pc, mag)
    return chroma.T


def audio_features(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Recording (channels, samples) or (samples,) -> features (T, 24): chroma of a long
    window (pitch), onset chroma of a short one (timing)."""
    x = resample(to_mono(audio), sample_rate, RATE).astype(np.float32)
    chroma = _chroma(x, N_FFT)
    short = _chroma(x, N_FFT // 4)
    rise = np.maximum(np.diff(short, axis=0, prepend=short[:1]), 0.0)
    return _with_onsets(chroma, rise)


def score_features(score: Score, frames: int | None = None) -> np.ndarray:
    """Score -> features (T, 24) on the same hop, from the notes (no rendering)."""
    n = frames or int(np.ceil(score.duration / HOP_S)) + 1
    chroma = np.zeros((n, 12))
    onsets = np.zeros((n, 12))
    decay = np.exp(-np.arange(int(4 * _ONSET_DECAY_S / HOP_S) + 1) * HOP_S / _ONSET_DECAY_S)
    for part in score.parts:
        for note in part.notes:
            a = min(int(round(note.onset / HOP_S)), n - 1)
            b = min(max(int(round(note.offset / HOP_S)), a + 1), n)
            for semis, w in _HARMONICS:
                pc = (note.pitch + semis) % 12
                chroma[a:b, pc] += w
                m = min(len(decay), n - a)
                onsets[a:a + m, pc] += w * decay[:m]
    return _with_onsets(chroma, onsets)


Reference = Literal["auto", "render", "notes"]
_RENDER_FONTS = ("fluidr3", "timgm6mb")  # the first one installed renders


def render_font() -> Path | None:
    """The SoundFont a score is rendered with (None: FluidSynth or every font is missing)."""
    import shutil

    from .data.synth import resolve_font

    if shutil.which("fluidsynth") is None:
        return None
    for name in _RENDER_FONTS:
        try:
            return resolve_font(name)
        except CusepError:
            continue
    return None


def rendered_features(score: Score, font: Path) -> np.ndarray:
    """Features (T, 24) of ``score`` rendered by FluidSynth with ``font``."""
    from .data.synth import RENDER_RATE, render_midi
    from .score import write_midi

    with tempfile.TemporaryDirectory(prefix="cusep-align-") as work:
        midi = Path(work) / "score.mid"
        write_midi(score, midi)
        audio = render_midi(midi, Path(work) / "score.wav", font)
    return audio_features(audio.astype(np.float32), RENDER_RATE)


def reference_features(score: Score, reference: Reference = "auto") -> tuple[np.ndarray, str]:
    """The score's features (T, 24) and how they were made ("render with NAME", "notes")."""
    if reference not in ("auto", "render", "notes"):
        raise CusepError(f"unknown alignment reference '{reference}'; auto, render or notes")
    font = render_font() if reference != "notes" else None
    if font is not None:
        return rendered_features(score, font), f"rendered with {font.name}"
    if reference == "render":
        raise CusepError("rendering the score needs fluidsynth and a SoundFont; install them: "
                         "apt-get install fluidsynth fluid-soundfont-gm (or use notes)")
    return score_features(score), "made from the notes"


def _cost(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine distance of (N, D) and (M, D) features (both rows unit-ish) -> (N, M)."""
    scale = np.linalg.norm(a, axis=1)[:, None] * np.linalg.norm(b, axis=1)[None]
    return 1.0 - (a @ b.T) / np.maximum(scale, 1e-9)


def _dtw_band(a: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """DTW restricted to columns lo[i]..hi[i]-1 of each row i (non-decreasing bands that
    overlap row to row and hold (0, 0) and (N-1, M-1)) -> the path (L, 2).

    Each row is solved at once: D[i, j] = min(A[j], D[i, j-1] + C[i, j]) with
    A[j] = min(D[i-1, j-1] + 2 C[i, j], D[i-1, j] + C[i, j]) is a running minimum of
    A[k] - S[k] plus the prefix sum S of the row's costs.
    """
    n = len(a)
    acc: list[np.ndarray] = []
    prev, prev_lo = None, 0
    for i in range(n):
        c = _cost(a[i:i + 1], b[lo[i]:hi[i]])[0]
        cols = np.arange(lo[i], hi[i])
        if prev is None:
            start = np.full(len(c), np.inf)
            start[0] = c[0] if lo[i] == 0 else np.inf
            up = start
        else:
            def at(j: np.ndarray, p=prev, plo=prev_lo) -> np.ndarray:
                k = j - plo
                ok = (k >= 0) & (k < len(p))
                return np.where(ok, p[np.clip(k, 0, len(p) - 1)], np.inf)

            up = np.minimum(at(cols - 1) + 2 * c, at(cols) + c)
        s = np.cumsum(c)
        row = s + np.minimum.accumulate(up - s)
        acc.append(row.astype(np.float64))
        prev, prev_lo = row, lo[i]
    # backtrack from the end
    path = [(n - 1, len(b) - 1)]
    i, j = n - 1, len(b) - 1
    while (i, j) != (0, 0):
        options = []
        if i > 0 and j > 0 and lo[i - 1] <= j - 1 < hi[i - 1]:
            options.append((acc[i - 1][j - 1 - lo[i - 1]], i - 1, j - 1))
        if i > 0 and lo[i - 1] <= j < hi[i - 1]:
            options.append((acc[i - 1][j - lo[i - 1]], i - 1, j))
        if j > lo[i]:
            options.append((acc[i][j - 1 - lo[i]], i, j - 1))
        _, i, j = min(options)
        path.append((i, j))
    return np.array(path[::-1], dtype=np.int64)


def dtw(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Multi-scale DTW of features a (N, D) and b (M, D) -> path (L, 2) from (0, 0) to
    (N-1, M-1); memory linear in N + M beyond :data:`_FULL_CELLS`."""
    n, m = len(a), len(b)
    if n * m <= _FULL_CELLS or min(n, m) < 4 * _RADIUS:
        return _dtw_band(a, b, np.zeros(n, np.int64), np.full(n, m, np.int64))
    half = lambda f: (f[: len(f) // 2 * 2].reshape(-1, 2, f.shape[1]).mean(1))  # noqa: E731
    coarse = dtw(half(a), half(b))
    lo = np.full(n, m, np.int64)
    hi = np.zeros(n, np.int64)
    for ci, cj in coarse:  # each coarse cell covers 2 x 2 fine cells, widened by the radius
        for di in (0, 1):
            i = min(2 * ci + di, n - 1)
            lo[i] = min(lo[i], max(2 * cj - _RADIUS, 0))
            hi[i] = max(hi[i], min(2 * cj + 2 + _RADIUS, m))
    lo[n - 1], hi[n - 1] = min(lo[n - 1], m - 1 - _RADIUS), m
    for i in range(n - 1, 0, -1):  # fill rows the coarse path skipped; keep bands monotone
        if lo[i] > hi[i]:
            lo[i], hi[i] = lo[i + 1] if i + 1 < n else m - 1, hi[i + 1] if i + 1 < n else m
    lo = np.minimum.accumulate(lo[::-1])[::-1]
    hi = np.maximum.accumulate(hi)
    lo[0] = 0
    return _dtw_band(a, b, np.clip(lo, 0, m - 1), np.clip(hi, 1, m))


def align(score: Score, audio: np.ndarray, sample_rate: int,
          reference: Reference = "auto") -> Alignment:
    """Align ``score`` to the recording ``audio`` (channels, samples) -> :class:`Alignment`."""
    fa, how = reference_features(score, reference)
    fb = audio_features(audio, sample_rate)
    path = dtw(fa, fb)
    sim = 1.0 - np.array([_cost(fa[i:i + 1], fb[j:j + 1])[0, 0] for i, j in path[:: 4]])
    return Alignment(path, float(np.clip(sim.mean(), 0.0, 1.0)), how)


def aligned_score(score: Score, audio: np.ndarray, sample_rate: int,
                  reference: Reference = "auto") -> tuple[Score, Alignment]:
    """The score with every note moved onto the recording's time, and the alignment."""
    result = align(score, audio, sample_rate, reference)
    return score.warped(result.warp), result
