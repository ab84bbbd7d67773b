"""The networks a model directory can build: ConditionedUNet (separation) and InstrumentDetector.

ConditionedUNet: every variant of the paper from one frozen config.

U-Net (one decoder, K output channels) or MHU-Net (K decoders of one channel); conditioning
``none``, ``film-bottleneck``, ``film-encoder``, ``film-final``, ``label-multiply`` or (visual
models) ``final-multiply``; ratio or binary masks. Every layer is built in ``__init__`` (the
reference built FiLM layers lazily) and the label vector multiplies the masks *after* the output
activation, so absent instruments are silent.

A model whose config has ``visual`` set owns a :class:`~cusep.visual.VisualEncoder`: its context
is the 1024-d visual vector of the players, computed inside ``forward`` from
``visual=(crops or backbone features, present)``; ``final-multiply`` maps that vector to sigmoid
instrument probabilities (several instruments play at once) that multiply the masks.

InstrumentDetector: a small multi-label CNN over the same front end as the separator
(:func:`cusep.spectral.features`): conv blocks over the scaled magnitude -> per-frame logits;
clip logits by attention pooling over time (a per-class softmax over frames weights the frame
logits). :func:`build_network` builds either from its config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F

from .instruments import BY_CODE, CODES
from .serial import dataclass_from_dict
from .spectral import SpectralConfig
from .visual import VisualConfig, VisualEncoder

Conditioning = Literal[
    "none", "film-bottleneck", "film-encoder", "film-final", "label-multiply", "final-multiply",
]
CONDITIONINGS: tuple[str, ...] = (
    "none", "film-bottleneck", "film-encoder", "film-final", "label-multiply", "final-multiply",
)
VisualInput = tuple[torch.Tensor, torch.Tensor]
"""(crops (B, P, F, 3, S, S) normalised, or backbone features (B, P, F, Db); present (B, P))."""


@dataclass(frozen=True)
class ModelConfig:
    """Every hyper-parameter of a separation network (saved as ``config.json``).

    ``visual``: None for label (or no) conditioning; set, the context is the visual vector and
    ``context_dim`` must equal ``visual.feature_dim``.
    """

    instruments: tuple[str, ...] = CODES
    architecture: Literal["unet", "mhunet"] = "unet"
    conditioning: Conditioning = "label-multiply"
    context_dim: int = 13
    mask: Literal["ratio", "binary"] = "ratio"
    channels: tuple[int, ...] = (16, 32, 64, 128, 256, 512)
    dropout: float = 0.2
    spectral: SpectralConfig = field(default_factory=SpectralConfig)
    visual: VisualConfig | None = None
    score_input: bool = False
    """Score-conditioned: besides the mixture the network takes one more input channel per
    instrument, the harmonic combs of its aligned notes on the network grid
    (:func:`cusep.guide.harmonic_combs`; zeros for absent instruments)."""

    def __post_init__(self) -> None:
        if self.conditioning not in CONDITIONINGS:
            raise ValueError(f"unknown conditioning '{self.conditioning}'; one of {CONDITIONINGS}")
        if self.architecture not in ("unet", "mhunet"):
            raise ValueError(f"unknown architecture '{self.architecture}'; unet or mhunet")
        if self.mask not in ("ratio", "binary"):
            raise ValueError(f"unknown mask '{self.mask}'; ratio or binary")
        if len(self.channels) < 2:
            raise ValueError("channels needs at least two levels")
        if self.visual is not None:
            if self.conditioning in ("none", "label-multiply"):
                raise ValueError(f"conditioning '{self.conditioning}' takes no visual branch; "
                                 "use film-* or final-multiply")
            if self.context_dim != self.visual.feature_dim:
                raise ValueError(f"context_dim ({self.context_dim}) must equal "
                                 f"visual.feature_dim ({self.visual.feature_dim})")
        elif self.conditioning == "final-multiply":
            raise ValueError("final-multiply needs a visual branch (model.visual)")
        elif self.conditioned and self.context_dim != len(self.instruments):
            raise ValueError(f"context_dim ({self.context_dim}) must equal the number of "
                             f"instruments ({len(self.instruments)}) for label conditioning")
        if self.score_input and self.visual is not None:
            raise ValueError("score_input is for label (or no) conditioning, not visual models")

    @property
    def sources(self) -> int:
        return len(self.instruments)

    @property
    def in_channels(self) -> int:
        """Input channels: the mixture, and one per instrument for a score-conditioned model."""
        return 1 + self.sources * self.score_input

    @property
    def conditioned(self) -> bool:
        return self.conditioning != "none"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return dataclass_from_dict(cls, data, "model")


class FiLM(nn.Module):
    """Feature-wise linear modulation: (1 + gamma(c)) * x + beta(c), broadcast over F and T."""

    def __init__(self, context_dim: int, channels: int) -> None:
        super().__init__()
        self.linear = nn.Linear(context_dim, 2 * channels)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """x (B, C, F, T), context (B, D) -> (B, C, F, T)."""
        gamma, beta = self.linear(context).to(x.dtype)[:, :, None, None].chunk(2, dim=1)
        return (1 + gamma) * x + beta


class EncoderBlock(nn.Module):
    """Conv 4x4 stride 2 -> BatchNorm -> [FiLM] -> LeakyReLU(0.2)."""

    def __init__(self, cin: int, cout: int, film_dim: int | None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 4, stride=2, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(cout)
        self.film = FiLM(film_dim, cout) if film_dim else None

    def forward(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        x = self.norm(self.conv(x))
        if self.film is not None:
            x = self.film(x, context)
        return F.leaky_relu(x, 0.2)


class Decoder(nn.Module):
    """Upsample x2 (bilinear) -> concat skip -> Conv 3x3 -> BN -> ReLU -> Dropout, per level.

    The last level concatenates the network input and ends in a plain 3x3 conv (the logits).
    """

    def __init__(self, channels: tuple[int, ...], outputs: int, dropout: float,
                 in_channels: int = 1) -> None:
        super().__init__()
        enc = list(channels)  # encoder outputs, shallow to deep
        skips = [in_channels, *enc[:-1]][::-1]  # skip channels, deep to shallow; last is the input
        outs = [*enc[:-1][::-1], outputs]
        self.levels = nn.ModuleList()
        cin = enc[-1]
        for i, (skip, cout) in enumerate(zip(skips, outs, strict=True)):
            last = i == len(outs) - 1
            if last:
                self.levels.append(nn.Conv2d(skip + cin, cout, 3, padding=1))
            else:
                self.levels.append(nn.Sequential(
                    nn.Conv2d(skip + cin, cout, 3, padding=1, bias=False),
                    nn.BatchNorm2d(cout),
                    nn.ReLU(inplace=True),
                    nn.Dropout(dropout),
                ))
            cin = cout

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        """x: bottleneck; skips: encoder outputs deep to shallow, then the input -> logits."""
        for level, skip in zip(self.levels, skips, strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True)
            # the skip in x's dtype: the conv casts it so under autocast; no float32 copy
            x = level(torch.cat([skip.to(x.dtype), x], dim=1))
        return x


class ConditionedUNet(nn.Module):
    """The paper's separation network.

    forward(inp (B, C, rows, T), context (B, context_dim) or None) -> masks (B, K, rows, T) in
    [0, 1] (sigmoid of the logits). C = ``config.in_channels``: the scaled mixture magnitude,
    then for a score-conditioned model the K instruments' harmonic combs. ``rows`` and ``T``
    must be multiples of 2**len(channels).
    A visual model takes ``visual=(crops or features, present)`` (:data:`VisualInput`) instead of
    ``context``: ``forward(inp, visual=(crops, present))``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        ch, cond, k = config.channels, config.conditioning, config.sources
        film_enc = config.context_dim if cond == "film-encoder" else None
        self.encoder = nn.ModuleList(
            EncoderBlock(cin, cout, film_enc)
            for cin, cout in zip((config.in_channels, *ch[:-2]), ch[:-1], strict=True)
        )
        self.bottleneck = nn.Conv2d(ch[-2], ch[-1], 4, stride=2, padding=1, bias=False)
        self.film_bottleneck = (
            FiLM(config.context_dim, ch[-1]) if cond == "film-bottleneck" else None
        )
        self.film_final = FiLM(config.context_dim, k) if cond == "film-final" else None
        outputs, count = (k, 1) if config.architecture == "unet" else (1, k)
        self.decoders = nn.ModuleList(
            Decoder(ch, outputs, config.dropout, config.in_channels) for _ in range(count)
        )
        self.visual = VisualEncoder(config.visual) if config.visual is not None else None
        self.instrument_head = (
            nn.Linear(config.context_dim, k) if cond == "final-multiply" else None
        )

    @property
    def multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return 2 ** len(self.config.channels)

    def visual_context(self, visual: VisualInput) -> torch.Tensor:
        """(crops or features, present) -> visual context (B, context_dim)."""
        if self.visual is None:
            raise ValueError("this model has no visual branch; pass a label context")
        return self.visual(*visual)

    def instrument_probabilities(self, context: torch.Tensor) -> torch.Tensor:
        """Visual context (..., context_dim) -> sigmoid probabilities (..., K) (final-multiply)."""
        if self.instrument_head is None:
            raise ValueError("only final-multiply models predict instrument probabilities")
        return torch.sigmoid(self.instrument_head(context.float()))

    def player_probabilities(self, crops: torch.Tensor) -> torch.Tensor:
        """Crops (B, P, F, 3, S, S) (or features (B, P, F, Db)) -> per player (B, P, K): which
        instrument each player plays (final-multiply models)."""
        if self.visual is None:
            raise ValueError("this model has no visual branch")
        return self.instrument_probabilities(self.visual.player_embeddings(crops))

    def _context(self, context: torch.Tensor | None,
                 visual: VisualInput | None) -> torch.Tensor | None:
        if visual is not None:
            return self.visual_context(visual)
        if self.visual is not None and context is None:
            raise ValueError("a visual model needs visual=(crops, present) or a visual context")
        return context

    def logits(self, inp: torch.Tensor, context: torch.Tensor | None = None,
               visual: VisualInput | None = None) -> torch.Tensor:
        """Pre-activation outputs (B, K, rows, T) (final-multiply: before the multiply)."""
        return self(inp, context, visual, logits=True)

    def _logits(self, inp: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        cfg = self.config
        if cfg.conditioned and context is None:
            raise ValueError(f"a '{cfg.conditioning}' model needs a context vector")
        if inp.shape[1] != cfg.in_channels:
            raise ValueError(f"this model takes {cfg.in_channels} input channel(s), got "
                             f"{inp.shape[1]}" + (" (the mixture and one score channel per "
                                                  "instrument)" if cfg.score_input else ""))
        x, skips = inp, [inp]
        for block in self.encoder:
            x = block(x, context)
            skips.append(x)
        x = self.bottleneck(x)
        if self.film_bottleneck is not None:
            x = self.film_bottleneck(x, context)
        skips = skips[::-1]
        out = torch.cat([dec(x, skips) for dec in self.decoders], dim=1)
        if self.film_final is not None:
            out = self.film_final(out, context)
        return out

    @property
    def zero_where_unlabelled(self) -> bool:
        """True when the mask of a class whose context entry is 0 is 0 (``label-multiply``)."""
        return self.config.conditioning == "label-multiply"

    def forward(self, inp: torch.Tensor, context: torch.Tensor | None = None,
                visual: VisualInput | None = None, logits: bool = False,
                rows: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Masks (B, K, rows, T); ``logits=True``: the pre-activation outputs instead (what
        :meth:`logits` gives, through ``forward`` so that DistributedDataParallel sees it).

        ``rows``: (items (N,), classes (N,)) index tensors -> only those masks (N, rows, T),
        what ``forward(...)[rows]`` gives without the activations of the other rows.
        """
        context = self._context(context, visual)
        out = self._logits(inp, context)
        if rows is not None:
            out = out[rows]
        if logits:
            return out
        masks = torch.sigmoid(out)
        if self.config.conditioning == "label-multiply":
            gain = context
        elif self.config.conditioning == "final-multiply":
            gain = self.instrument_probabilities(context)
        else:
            return masks
        gain = gain[rows][:, None, None] if rows is not None else gain[:, :, None, None]
        return masks * gain.to(masks.dtype)


# ------------------------------------------------------------------------- the detector


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
    class_thresholds: tuple[float, ...] = ()
    """One threshold per class, in ``classes`` order, chosen on validation; empty: ``threshold``
    for every class."""

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
        if self.class_thresholds and (
                len(self.class_thresholds) != len(self.classes)
                or not all(0.0 < t <= 1.0 for t in self.class_thresholds)):
            raise ValueError(f"class_thresholds needs one value in (0, 1] per class "
                             f"({len(self.classes)}), got {list(self.class_thresholds)}")

    def thresholds(self) -> tuple[float, ...]:
        """The decision threshold of each class (K,), in ``classes`` order."""
        return tuple(self.class_thresholds) or (self.threshold,) * len(self.classes)

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


NetworkConfig = ModelConfig | DetectorConfig
"""The config of any network a model directory holds."""


def build_network(config: NetworkConfig) -> nn.Module:
    """The network a config describes: ConditionedUNet or InstrumentDetector."""
    if isinstance(config, ModelConfig):
        return ConditionedUNet(config)
    return InstrumentDetector(config)
