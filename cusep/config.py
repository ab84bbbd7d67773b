"""Frozen training configuration: presets (TOML) plus ``section.field=value`` overrides."""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from .data.mixing import MixingConfig
from .errors import CusepError
from .model import DetectorConfig, ModelConfig
from .serial import optional_dataclass, type_error
from .spectral import SpectralConfig


@dataclass(frozen=True)
class DataConfig:
    """Where the training audio is. ``layout``: urmp (also what ``cusep synth`` writes) or solos."""

    train: tuple[str, ...] = ()
    valid: tuple[str, ...] = ()
    layout: Literal["urmp", "solos"] = "urmp"
    valid_fraction: float = 0.2
    """Used when no ``valid`` folder is given: the last fraction of the pieces / solo files."""
    frame_step: float = 0.4
    """Visual models: seconds between the cached player crops (read once at load time; uint8,
    3 * S * S bytes per player per step: about 1.35 GB per player-hour at S = 224, 0.4 s)."""

    def __post_init__(self) -> None:
        if self.layout not in ("urmp", "solos"):
            raise ValueError(f"layout must be urmp or solos, got {self.layout!r}")
        if not 0.0 < self.valid_fraction < 1.0:
            raise ValueError(f"valid_fraction must be in (0, 1), got {self.valid_fraction}")
        if not self.frame_step > 0:
            raise ValueError(f"frame_step must be positive, got {self.frame_step}")


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser, schedule, loss and the length of a run."""

    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 5e-4
    plateau_factor: float = 0.5
    plateau_patience: int = 10
    """Validations without improvement before the learning rate is halved."""
    grad_clip: float = 5.0
    loss: Literal["l2", "bce", "mag-l1"] = "l2"
    bce_pos_weight: float = 5.0
    curriculum: bool = False
    curriculum_patience: int = 10
    max_steps: int = 100_000
    max_minutes: float = 0.0
    """Stop after this many minutes of wall time (0: no limit)."""
    valid_every: int = 500
    valid_items: int = 256
    checkpoint_every: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        positive = {"lr": self.lr, "grad_clip": self.grad_clip,
                    "bce_pos_weight": self.bce_pos_weight}
        at_least_one = {"batch_size": self.batch_size, "max_steps": self.max_steps,
                        "valid_every": self.valid_every, "valid_items": self.valid_items,
                        "checkpoint_every": self.checkpoint_every,
                        "plateau_patience": self.plateau_patience,
                        "curriculum_patience": self.curriculum_patience}
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        for name, value in at_least_one.items():
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if self.weight_decay < 0 or self.max_minutes < 0:
            raise ValueError("weight_decay and max_minutes must be 0 or more")
        if not 0.0 < self.plateau_factor <= 1.0:
            raise ValueError(f"plateau_factor must be in (0, 1], got {self.plateau_factor}")
        if self.loss not in ("l2", "bce", "mag-l1"):
            raise ValueError(f"loss must be l2, bce or mag-l1, got {self.loss!r}")


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation of a detector's input features in training (SpecAugment-style): per item,
    ``freq_masks`` bands of up to ``freq_width`` rows and ``time_masks`` spans of up to
    ``time_width`` frames set to the item's mean, after a shift of the whole spectrogram by up
    to +-``freq_shift`` rows (the rows shifted in repeat the edge). All 0: none."""

    freq_masks: int = 0
    freq_width: int = 12
    time_masks: int = 0
    time_width: int = 24
    freq_shift: int = 0

    def __post_init__(self) -> None:
        for name in ("freq_masks", "freq_width", "time_masks", "time_width", "freq_shift"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 or more, got {getattr(self, name)}")

    @property
    def active(self) -> bool:
        return bool(self.freq_masks or self.time_masks or self.freq_shift)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; saved as ``config.json`` in the run folder.

    ``task``: ``separate`` trains the ``model`` section (a ConditionedUNet), ``detect`` the
    ``detector`` section (an InstrumentDetector) on the same data and mixtures.
    """

    task: Literal["separate", "detect"] = "separate"
    model: ModelConfig = field(default_factory=ModelConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    mixing: MixingConfig = field(default_factory=MixingConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    """Detector training only (``task = "detect"``)."""
    preset: str = ""
    description: str = ""
    init: str = ""
    """Start from the weights of this model (name, folder or Hub id): fine-tuning."""

    def __post_init__(self) -> None:
        if self.task not in ("separate", "detect"):
            raise ValueError(f"unknown task '{self.task}'; separate or detect")

    @property
    def network(self) -> ModelConfig | DetectorConfig:
        """The config of the network this run trains."""
        return self.detector if self.task == "detect" else self.model

    @property
    def spectral(self) -> SpectralConfig:
        return self.network.spectral

    @property
    def classes(self) -> tuple[str, ...]:
        """The instrument classes of the network's outputs."""
        return self.detector.classes if self.task == "detect" else self.model.instruments

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def preset_names() -> list[str]:
    """Names of the presets that ship with cusep."""
    root = resources.files("cusep") / "presets"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".toml"))


def load_preset(name: str) -> dict[str, Any]:
    """A preset by name (``exp06``) or path to a TOML file -> nested dict."""
    path = Path(name)
    if path.suffix == ".toml" and path.is_file():
        text = path.read_text()
    else:
        res = resources.files("cusep") / "presets" / f"{name}.toml"
        if not res.is_file():
            raise CusepError(f"unknown preset '{name}'; one of {', '.join(preset_names())} "
                             "or a path to a .toml file")
        text = res.read_text()
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CusepError(f"preset '{name}' is not valid TOML: {exc}") from None


def parse_override(item: str) -> tuple[list[str], Any]:
    """'optim.lr=3e-4' -> (['optim', 'lr'], 0.0003); values are TOML literals or bare strings."""
    if "=" not in item:
        raise CusepError(f"override '{item}' must look like section.field=value, "
                         "e.g. optim.lr=3e-4")
    key, raw = item.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.strip().split("."), value


def _merge(base: dict[str, Any], keys: list[str], value: Any) -> None:
    node = base
    for k in keys[:-1]:
        if node.get(k) is None:  # an absent or unset optional section (model.visual)
            node[k] = {}
        node = node[k]
        if not isinstance(node, dict):
            raise CusepError(f"override '{'.'.join(keys)}': '{k}' is not a section")
    node[keys[-1]] = value


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    """Build a (nested) frozen dataclass from a dict, checking names and coercing sequences."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise CusepError(f"unknown setting(s) {', '.join(where + k for k in unknown)}; "
                         f"{where.rstrip('.') or 'top level'} has: {', '.join(sorted(names))}")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        hint = hints[key]
        nested = optional_dataclass(hint)
        if nested is not None and not (value is None and nested is not hint):
            if not isinstance(value, dict):
                raise CusepError(f"setting {where}{key} must be a section")
            kwargs[key] = _build(nested, value, f"{where}{key}.")
        elif nested is None and (err := type_error(value, hint)) is not None:
            raise CusepError(f"setting {where}{key} {err}")
        elif typing.get_origin(hint) is tuple and isinstance(value, list):
            kwargs[key] = tuple(value)
        elif hint is float and isinstance(value, int):
            kwargs[key] = float(value)
        else:
            kwargs[key] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise CusepError(f"invalid {where.rstrip('.') or 'config'}: {exc}") from None


def build_config(preset: str | None = None, overrides: list[str] | tuple[str, ...] = (),
                 base: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults <- preset <- overrides, validated into a frozen TrainConfig."""
    data: dict[str, Any] = dict(base or {})
    if preset:
        data = load_preset(preset)
        data.setdefault("preset", Path(preset).stem)
    for item in overrides:
        keys, value = parse_override(item)
        _merge(data, keys, value)
    return _build(TrainConfig, data, "")


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Inverse of ``TrainConfig.to_dict`` (e.g. a run's saved config.json)."""
    return _build(TrainConfig, data, "")

