"""Player <-> stem matching: onset envelopes, motion similarity and the optimal assignment."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cusep.players import (
    assign,
    loudness_envelope,
    match_players,
    onset_envelope,
    similarity,
)

RATE = 11025
FPS = 25.0


def note_train(onsets: np.ndarray, seconds: float, freq: float, seed: int = 0) -> np.ndarray:
    """A harmonic tone whose notes start at ``onsets`` (s), each decaying (samples,)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    y = np.zeros_like(t)
    for start in onsets:
        f = freq * 2 ** (rng.integers(0, 7) / 12)
        seg = t >= start
        local = t[seg] - start
        env = np.exp(-local / 0.12)  # smooth decay, no offset click
        y[seg] += env * sum(np.sin(2 * np.pi * h * f * local) / h for h in (1, 2, 3))
    return (0.2 * y).astype(np.float32)


def motion_from(onsets: np.ndarray, times: np.ndarray, delay: float = 0.08) -> np.ndarray:
    """A player's motion energy: a 0.15 s burst after each onset (T,)."""
    m = np.zeros_like(times)
    for start in onsets:
        m += ((times >= start + delay) & (times < start + delay + 0.15)).astype(float)
    return m


def random_onsets(seconds: float, rate_hz: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1 / rate_hz, size=int(seconds * rate_hz * 3))
    t = np.cumsum(gaps + 0.12)
    return t[t < seconds - 0.7]


def test_onset_envelope_peaks_after_onsets():
    onsets = np.array([0.5, 1.5, 2.5])
    x = note_train(onsets, 3.5, 220.0)[None]
    times = np.arange(0, 3.5, 1 / FPS)
    env = onset_envelope(x, RATE, times)[0]
    assert env.shape == times.shape and (env >= 0).all()
    peaks = [times[np.argmax(env * (np.abs(times - o) < 0.3))] for o in onsets]
    np.testing.assert_allclose(peaks, onsets, atol=0.1)
    quiet = (times > 1.1) & (times < 1.4)
    assert env[quiet].max() < 0.2 * env.max()


def test_similarity_prefers_own_stem_within_lag():
    times = np.arange(0, 20, 1 / FPS)
    a, b = random_onsets(20, 1.2, 1), random_onsets(20, 1.2, 2)
    stems = np.stack([note_train(a, 20, 196.0, 1), note_train(b, 20, 440.0, 2)])
    motion = np.stack([motion_from(b, times), motion_from(a, times)])
    score = similarity(motion, onset_envelope(stems, RATE, times), FPS)
    assert score.shape == (2, 2)
    assert score[0, 1] > score[0, 0] + 0.2 and score[1, 0] > score[1, 1] + 0.2


@pytest.mark.parametrize("players", [2, 3, 4])
def test_match_players_recovers_every_permutation(players):
    seconds = 24.0
    times = np.arange(0, seconds, 1 / FPS)
    onsets = [random_onsets(seconds, 1.0, 10 + k) for k in range(players)]
    stems = np.stack([note_train(o, seconds, 110.0 * 1.5 ** k, k) for k, o in enumerate(onsets)])
    for perm in itertools.islice(itertools.permutations(range(players)), 6):
        motion = np.stack([motion_from(onsets[k], times) for k in perm])
        assert match_players(motion, stems, RATE, times).stem == perm


def test_two_players_share_one_stem_and_fixed_pairs_hold():
    score = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.3]])
    result = assign(score)
    assert result.stem == (0, 1, 0)
    assert result.shared() == {0: (0, 2)} and result.unmatched() == ()
    # player 0 is known to play stem 1: the others cover stem 0 first
    fixed = assign(score, fixed={0: 1})
    assert fixed.stem[0] == 1 and 0 in fixed.stem[1:]


def test_more_stems_than_players_leaves_stems_unmatched():
    score = np.array([[0.1, 0.9, 0.2], [0.7, 0.3, 0.1]])
    result = assign(score)
    assert result.stem == (1, 0) and result.unmatched() == (2,)


def test_loudness_envelope_is_the_rms_per_interval():
    times = np.arange(0, 2, 0.5)
    x = np.zeros((1, 2 * RATE))
    x[0, : RATE // 2] = 0.5  # constant 0.5 in the first interval's right half
    x[0, RATE:] = np.sin(2 * np.pi * 100 * np.arange(RATE) / RATE)
    env = loudness_envelope(x, RATE, times)[0]
    assert env.shape == (4,)
    assert env[0] == pytest.approx(0.5, abs=0.01)  # (-0.25, 0.25] holds only the constant part
    assert env[1] == pytest.approx(np.sqrt(0.5 * 0.25), abs=0.02)  # half 0.5, half silence
    assert env[2] == pytest.approx(np.sqrt(0.5 * 0.5), abs=0.02)  # half silence, half sine
    assert env[3] == pytest.approx(np.sqrt(0.5), abs=0.01)
