"""Instrument presence: which of the 13 instruments play in a mixture, over time and overall.

A small multi-label CNN over the same front end as the separator (:func:`cusep.spectral.features`):
conv blocks over the scaled magnitude -> per-frame logits; clip logits by attention pooling over
time (a per-class softmax over frames weights the frame logits). A recording is processed in
windows of one segment; its overall logits pool the frames of every window the same way, so a
whole recording is scored like one long clip. The decision threshold is chosen on validation
mixtures (the one maximising macro-F1) and stored in the model directory's ``config.json``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .audio import resample, to_mono
from .checkpoint import ModelDir, load_detector
from .errors import CusepError
from .instruments import BY_CODE, CODES
from .separate import _check_signal, resolve_device
from .serial import dataclass_from_dict
from .spectral import SpectralConfig, features

SILENCE_DB = -70.0
"""Windows whose rms (dBFS, at the model rate) is below this count as silence: nothing plays."""


def _detector_spectral() -> SpectralConfig:
    return SpectralConfig(freq_scale="log", log_rows=128)


@dataclass(frozen=True)
class DetectorConfig:
    """Every hyper-parameter of an instrument detector (saved as ``config.json``)."""

    classes: tuple[str, ...] = CODES
    channels: tuple[int, ...] = (16, 32, 64, 128)
    """Conv blocks (3x3 conv, BatchNorm, ReLU, 2x2 max-pool): output channels of each."""
    hidden: int = 128
    dropout: float = 0.2
    threshold: float = 0.5
    """Probability above which an instrument counts as present (chosen on validation)."""
    spectral: SpectralConfig = field(default_factory=_detector_spectral)

    def __post_init__(self) -> None:
        if not self.channels:
            raise ValueError("channels needs at least one block")
        unknown = [c for c in self.classes if c not in BY_CODE]
        if unknown or not self.classes:
            raise ValueError(f"classes must be instrument codes ({', '.join(CODES)}), "
                             f"got {list(self.classes)}")
        if self.spectral.rows % 2 ** len(self.channels):
            raise ValueError(f"{self.spectral.rows} frequency rows are not a multiple of "
                             f"2**{len(self.channels)} (one halving per block)")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DetectorConfig:
        return dataclass_from_dict(cls, data, "detector")


def attention_pool(frames: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """Per-class softmax over time of ``attention`` weighting ``frames``: (B, K, T) -> (B, K)."""
    return (torch.softmax(attention.float(), dim=-1) * frames.float()).sum(-1)


class InstrumentDetector(nn.Module):
    """forward(inp (B, 1, rows, T)) -> (clip logits (B, K), frame logits (B, K, T // 2**n)).

    ``n`` conv blocks halve frequency and time; the remaining frequency rows of every channel
    feed a temporal conv (so the network keeps where in frequency energy lies: register), then
    two 1x1 heads give frame logits and attention logits.
    """

    def __init__(self, config: DetectorConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        cin = 1
        for cout in config.channels:
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            cin = cout
        self.blocks = nn.Sequential(*layers)
        rows = config.spectral.rows // 2 ** len(config.channels)
        self.temporal = nn.Sequential(
            nn.Conv1d(cin * rows, config.hidden, 3, padding=1), nn.ReLU(inplace=True),
            nn.Dropout(config.dropout))
        k = len(config.classes)
        self.frame_head = nn.Conv1d(config.hidden, k, 1)
        self.attention_head = nn.Conv1d(config.hidden, k, 1)

    def frames(self, inp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """inp (B, 1, rows, T) -> (frame logits, attention logits), each (B, K, T')."""
        x = self.blocks(inp)
        x = self.temporal(x.flatten(1, 2))
        return self.frame_head(x), self.attention_head(x)

    def forward(self, inp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames, attention = self.frames(inp)
        return attention_pool(frames, attention), frames


# ----------------------------------------------------------------------------------- metrics


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """AP of one class: mean precision at the rank of each positive. NaN without positives."""
    targets = np.asarray(targets, bool)
    if not targets.any():
        return math.nan
    hits = targets[np.argsort(-np.asarray(scores), kind="stable")]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].mean())


def f1_scores(probs: np.ndarray, targets: np.ndarray, threshold: float) -> np.ndarray:
    """Per-class F1 (K,) of ``probs > threshold`` against ``targets``, both (N, K); a class
    with no positive and no detection gets NaN."""
    pred, true = np.asarray(probs) > threshold, np.asarray(targets, bool)
    tp = (pred & true).sum(0)
    denominator = pred.sum(0) + true.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, 2 * tp / denominator, np.nan)


def best_threshold(probs: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    """The threshold in 0.05..0.95 (step 0.01) maximising macro-F1 -> (threshold, macro-F1)."""
    grid = np.round(np.arange(0.05, 0.951, 0.01), 2)
    scores = [float(np.nanmean(f1_scores(probs, targets, t))) for t in grid]
    i = int(np.argmax(scores))
    return float(grid[i]), scores[i]


def detection_metrics(probs: np.ndarray, targets: np.ndarray, threshold: float | None = None,
                      classes: Sequence[str] = CODES) -> dict[str, Any]:
    """mAP, macro-F1 and per-class AP / F1 of probabilities (N, K) against 0/1 targets (N, K).

    ``threshold`` None: the one maximising macro-F1 (also returned).
    """
    if threshold is None:
        threshold, _ = best_threshold(probs, targets)
    ap = np.array([average_precision(probs[:, k], targets[:, k]) for k in range(probs.shape[1])])
    f1 = f1_scores(probs, targets, threshold)
    return {
        "map": float(np.nanmean(ap)),
        "f1": float(np.nanmean(f1)),
        "threshold": threshold,
        "ap": {c: _finite(a) for c, a in zip(classes, ap, strict=True)},
        "per_class_f1": {c: _finite(x) for c, x in zip(classes, f1, strict=True)},
    }


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def detection_loss(model: nn.Module, inp: torch.Tensor, targets: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """BCE of the clip logits against targets (B, K) -> (loss, clip logits (B, K))."""
    clip, _ = model(inp)
    return F.binary_cross_entropy_with_logits(clip.float(), targets.float()), clip


def audible(present: torch.Tensor, sources: torch.Tensor, floor_db: float = -60.0
            ) -> torch.Tensor:
    """Detection targets: present (B, K) and not silent in the segment (sources (B, K, L))."""
    power = sources.float().pow(2).mean(-1)
    return present * (power > 10.0 ** (floor_db / 10.0)).to(present.dtype)


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

    @property
    def detected(self) -> tuple[str, ...]:
        """Codes above the threshold, most probable first."""
        return tuple(c for c, p in self.confidences().items() if p > self.threshold)

    def nothing_detected(self, what: str) -> str:
        """The message for a recording with nothing above the threshold (no final stop)."""
        code, prob = next(iter(self.confidences().items()))
        return (f"no instrument detected in {what} above the threshold {self.threshold:.2f} "
                f"(most likely {code}, {prob:.2f})")

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
        self.threshold = self.model.config.threshold if threshold is None else float(threshold)
        if not 0.0 < self.threshold <= 1.0:
            raise CusepError(f"threshold must be in (0, 1], got {self.threshold}")
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
        arr = _check_signal(arr, sample_rate, spec.n_fft, spec.sample_rate)
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
            window_probabilities=window_probs.numpy(), threshold=self.threshold)


def detect(audio: np.ndarray | torch.Tensor, sample_rate: int, model: str | Path | None = None,
           device: str = "auto") -> DetectionResult:
    """One-call API: which instruments play in ``audio`` (channels, samples) or (samples,)."""
    return Detector(model, device=device).detect(audio, sample_rate)
