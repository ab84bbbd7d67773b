"""Instrument presence: which of the 13 instruments play in a mixture, over time and overall.

The network is :class:`cusep.model.InstrumentDetector` (a multi-label CNN over the separator's
front end, clip logits by attention pooling over time). A recording is processed in
windows of one segment; its overall logits pool the frames of every window the same way, so a
whole recording is scored like one long clip. The decision threshold is chosen on validation
mixtures (the one maximising macro-F1) and stored in the model directory's ``config.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from .audio import resample, to_mono
from .checkpoint import ModelDir, load_detector
from .errors import CusepError
from .model import InstrumentDetector, attention_pool
from .runtime import check_signal, resolve_device
from .spectral import features

SILENCE_DB = -70.0
"""Windows whose rms (dBFS, at the model rate) is below this count as silence: nothing plays."""


# ------------------------------------------------------------------------------------ the API


@dataclass(frozen=True)
class DetectionResult:
    """What a :class:`Detector` found in one recording.

    ``probabilities`` (K,): over the whole recording, in ``classes`` order; ``times`` (W,):
    start of each window in seconds; ``window_probabilities`` (W, K).
    """

    classes: tuple[str, ...]
    probabilities: np.ndarray
    times: np.ndarray
    window_probabilities: np.ndarray
    threshold: float
    """The detector's threshold (the one of every class unless ``thresholds`` differ)."""
    thresholds: tuple[float, ...] = ()
    """Per class (K,), in ``classes`` order; empty: ``threshold`` for every class."""

    def cutoffs(self) -> dict[str, float]:
        """{code: the threshold its probability must exceed}."""
        values = self.thresholds or (self.threshold,) * len(self.classes)
        return dict(zip(self.classes, values, strict=True))

    @property
    def per_class(self) -> bool:
        """Whether the classes have thresholds of their own."""
        return len(set(self.cutoffs().values())) > 1

    def threshold_text(self) -> str:
        """'threshold 0.25', or 'per-instrument thresholds' when they differ."""
        return "per-instrument thresholds" if self.per_class else f"threshold {self.threshold:.2f}"

    @property
    def detected(self) -> tuple[str, ...]:
        """Codes above their threshold, most probable first."""
        cut = self.cutoffs()
        return tuple(c for c, p in self.confidences().items() if p > cut[c])

    def nothing_detected(self, what: str) -> str:
        """The message for a recording with nothing above the threshold (no final stop)."""
        code, prob = next(iter(self.confidences().items()))
        return (f"no instrument detected in {what} above its threshold "
                f"(most likely {code}, {prob:.2f}, threshold {self.cutoffs()[code]:.2f})")

    def confidences(self) -> dict[str, float]:
        """{code: probability} over the whole recording, most probable first."""
        order = np.argsort(-self.probabilities, kind="stable")
        return {self.classes[i]: float(self.probabilities[i]) for i in order}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: detected codes and probabilities (most probable first),
        threshold, windows (probabilities in class order)."""
        return {
            "detected": list(self.detected),
            "threshold": self.threshold,
            "thresholds": {c: round(t, 4) for c, t in self.cutoffs().items()},
            "probabilities": {c: round(p, 4) for c, p in self.confidences().items()},
            "windows": [{"start": round(float(t), 3),
                         "probabilities": {c: round(float(p), 4)
                                           for c, p in zip(self.classes, row, strict=True)}}
                        for t, row in zip(self.times, self.window_probabilities, strict=True)],
        }


class Detector:
    """Runs an instrument detector over signals of any length, rate and channel count.

    >>> det = Detector(device="cpu")            # the registry's detector
    >>> result = det.detect(audio, 44100)       # audio (channels, samples) or (samples,)
    >>> result.detected, result.confidences()
    """

    def __init__(self, model: str | Path | InstrumentDetector | None = None,
                 device: str | torch.device = "auto", threshold: float | None = None,
                 batch_size: int = 8) -> None:
        self.device = resolve_device(device)
        self.model_dir: ModelDir | None = None
        if isinstance(model, InstrumentDetector):
            self.model = model.to(self.device).eval()
        else:
            self.model, self.model_dir = load_detector(model, device=self.device)
        config = self.model.config
        self.threshold = config.threshold if threshold is None else float(threshold)
        if not 0.0 < self.threshold <= 1.0:
            raise CusepError(f"threshold must be in (0, 1], got {self.threshold}")
        # a threshold given here replaces the model's, for every class
        self.thresholds = config.thresholds() if threshold is None else ()
        self.batch_size = max(1, int(batch_size))

    @property
    def name(self) -> str:
        return self.model_dir.path.name if self.model_dir else "in-memory detector"

    @property
    def classes(self) -> tuple[str, ...]:
        return self.model.config.classes

    @torch.inference_mode()
    def detect(self, audio: np.ndarray | torch.Tensor, sample_rate: int) -> DetectionResult:
        """audio (channels, samples) or (samples,) at ``sample_rate`` -> DetectionResult."""
        spec = self.model.config.spectral
        arr = np.asarray(audio.detach().cpu() if isinstance(audio, torch.Tensor) else audio)
        arr = check_signal(arr, sample_rate, spec.n_fft, spec.sample_rate)
        mono = torch.from_numpy(
            np.ascontiguousarray(resample(to_mono(arr), sample_rate, spec.sample_rate),
                                 dtype=np.float32))
        seg = spec.segment
        starts = list(range(0, max(len(mono) - seg, 0) + 1, seg))
        if starts[-1] + seg < len(mono):  # the tail: a last window aligned to the end
            starts.append(len(mono) - seg)
        windows = torch.stack([F.pad(mono[s:s + seg], (0, max(0, s + seg - len(mono))))
                               for s in starts])
        frames, attention, clips = [], [], []
        for b in range(0, len(starts), self.batch_size):
            inp, _ = features(windows[b:b + self.batch_size].to(self.device), spec)
            z, a = self.model.frames(inp)
            frames.append(z.float().cpu())
            attention.append(a.float().cpu())
            clips.append(attention_pool(z, a).cpu())
        z, a, clip = torch.cat(frames), torch.cat(attention), torch.cat(clips)  # (W, K, T')
        level = 10 * torch.log10(windows.pow(2).mean(-1) + 1e-20)
        sound = level >= SILENCE_DB
        window_probs = torch.sigmoid(clip) * sound[:, None]
        if sound.any():
            k = z.shape[1]
            overall = torch.sigmoid(attention_pool(
                z[sound].permute(1, 0, 2).reshape(1, k, -1),
                a[sound].permute(1, 0, 2).reshape(1, k, -1)))[0]
        else:
            overall = torch.zeros(z.shape[1])
        return DetectionResult(
            classes=self.classes, probabilities=overall.numpy(),
            times=np.asarray(starts, np.float64) / spec.sample_rate,
            window_probabilities=window_probs.numpy(), threshold=self.threshold,
            thresholds=self.thresholds)


def detect(audio: np.ndarray | torch.Tensor, sample_rate: int, model: str | Path | None = None,
           device: str = "auto") -> DetectionResult:
    """One-call API: which instruments play in ``audio`` (channels, samples) or (samples,)."""
    return Detector(model, device=device).detect(audio, sample_rate)
