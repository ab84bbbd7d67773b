"""Recording realism for rendered stems: microphone colour, a room, a noise floor, level spread.

Every effect acts on each player's stem before the mix is summed, so the stems still sum exactly
to the mix. All draws come from one generator per piece (the caller's own stream), so a render
is reproducible by seed, and a config with every option off returns the stems unchanged.

- ``mic_eq_db``: a smooth random EQ per player (gains uniform in +-mic_eq_db at 8 points evenly
  spaced in log-frequency, linear in dB between them) and a gentle high-pass (40-120 Hz);
- ``room``: probability per piece of a room. One room per piece (RT60 0.15-0.7 s, a tail that
  darkens as it decays), one position per player: its own direct delay, 6-10 early reflections
  (3-35 ms) and a direct-to-reverberant ratio of 4-18 dB, so rooms stay near-dry like URMP and
  Bach10 (players recorded close up);
- ``noise_db``: a noise floor per player (pink-ish microphone and preamp noise) this many dB
  below the player's rms, varied by +-6 dB per player (0: off);
- ``level_db``: per-player gain uniform in +-level_db dB (the balance of an ensemble).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RecordingConfig:
    """Recording effects applied to rendered stems (all off by default)."""

    mic_eq_db: float = 0.0
    room: float = 0.0
    noise_db: float = 0.0
    level_db: float = 0.0

    @property
    def active(self) -> bool:
        return bool(self.mic_eq_db or self.room or self.noise_db or self.level_db)


def _smooth_eq(x: np.ndarray, rate: int, max_db: float, highpass_hz: float,
               rng: np.random.Generator, points: int = 8) -> np.ndarray:
    n = x.size
    spec = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(n, 1.0 / rate)
    gains = rng.uniform(-max_db, max_db, points)
    pos = np.log(np.maximum(freqs, 20.0) / 20.0) / np.log((rate / 2) / 20.0) * (points - 1)
    curve = np.interp(pos, np.arange(points), gains)
    hp = 1.0 / np.sqrt(1.0 + (highpass_hz / np.maximum(freqs, 1e-3)) ** 4)  # 2nd-order shape
    return np.fft.irfft(spec * 10 ** (curve / 20) * hp, n=n)


def _room_response(rate: int, rt60: float, damping: float, drr_db: float,
                   rng: np.random.Generator) -> np.ndarray:
    """One player's impulse response: direct path, early reflections, decaying dark tail."""
    n = int(rate * min(rt60 * 1.5, 1.2))
    h = np.zeros(n)
    delay = int(rng.uniform(0.5, 4.0) * 1e-3 * rate)
    h[delay] = 1.0
    for _ in range(int(rng.integers(6, 11))):
        t = delay + int(rng.uniform(3e-3, 35e-3) * rate)
        if t < n:
            h[t] += rng.uniform(0.15, 0.5) * rng.choice((-1.0, 1.0))
    t = np.arange(n) / rate
    tail = rng.standard_normal(n) * np.exp(-6.91 * t / rt60)
    start = delay + int(0.01 * rate)
    tail[:start] = 0.0
    # darker as it decays: a one-pole low-pass whose pole grows over four segments
    from scipy.signal import lfilter

    out = np.zeros(n)
    edges = np.linspace(0, n, 5).astype(int)
    for k in range(4):
        alpha = min(0.95, damping * (k + 1) / 4)
        out[edges[k]:edges[k + 1]] = lfilter([1 - alpha], [1, -alpha],
                                             tail[edges[k]:edges[k + 1]])
    direct = np.sum(h ** 2)
    late = np.sum(out ** 2)
    if late > 0:
        out *= np.sqrt(direct / late * 10 ** (-drr_db / 10))
    return h + out


def _noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Pink-ish noise (-3 dB per octave), unit rms."""
    white = rng.standard_normal(n)
    spec = np.fft.rfft(white)
    f = np.arange(spec.size)
    spec[1:] /= np.sqrt(f[1:])
    spec[0] = 0.0
    x = np.fft.irfft(spec, n=n)
    return x / max(float(np.sqrt(np.mean(x ** 2))), 1e-12)


def apply_recording(stems: np.ndarray, rate: int, config: RecordingConfig,
                    rng: np.random.Generator) -> tuple[np.ndarray, dict | None]:
    """stems (players, samples) float -> (stems with the effects, record for the manifest).

    Lengths are kept (room tails are cut at the piece's end, which has a second of silence).
    The record is None when every effect is off.
    """
    if not config.active:
        return stems, None
    out = np.array(stems, dtype=np.float64, copy=True)
    players = []
    room = None
    if config.room and rng.random() < config.room:
        room = {"rt60_s": round(float(rng.uniform(0.15, 0.7)), 3),
                "damping": round(float(rng.uniform(0.2, 0.8)), 3)}
    for k in range(out.shape[0]):
        x = out[k]
        p: dict = {}
        rms = float(np.sqrt(np.mean(x ** 2)))
        if config.mic_eq_db:
            hp = float(rng.uniform(40.0, 120.0))
            x = _smooth_eq(x, rate, config.mic_eq_db, hp, rng)
            p["highpass_hz"] = round(hp, 1)
        if room is not None:
            drr = float(rng.uniform(4.0, 18.0))
            h = _room_response(rate, room["rt60_s"], room["damping"], drr, rng)
            from scipy.signal import fftconvolve

            x = fftconvolve(x, h)[: x.size]
            p["drr_db"] = round(drr, 2)
        if config.noise_db and rms > 0:
            below = config.noise_db + float(rng.uniform(-6.0, 6.0))
            x = x + _noise(x.size, rng) * rms * 10 ** (-below / 20)
            p["noise_below_rms_db"] = round(below, 2)
        if config.level_db:
            g = float(rng.uniform(-config.level_db, config.level_db))
            x = x * 10 ** (g / 20)
            p["gain_db"] = round(g, 2)
        out[k] = x
        players.append(p)
    return out, {"room": room, "players": players}
