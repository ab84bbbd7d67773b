"""The visual branch of the paper: player crops -> one context vector (or instrument probabilities).

A torchvision ResNet (ResNet-50 in the paper, ImageNet weights) without its classifier gives one
feature vector per crop (2048-d; 512-d for ResNet-18). One frame: adaptive max pooling to
``feature_dim``; several frames: an LSTM (last hidden state) or a max over the frames. Then a max
over the *present* players only gives the context (B, feature_dim) that conditions the U-Net.

Fixes against the reference code: crops are ImageNet-normalised
(:func:`cusep.video.normalise`), absent players never enter the max, a frozen backbone stays in
eval mode (its BatchNorm statistics do not move), and the per-instrument probabilities of
final-multiply models are sigmoids (several instruments play at once), computed by the separation
model's head (``ConditionedUNet``).

ImageNet weights are never downloaded: they are read from a file the user has (the torchvision
cache, ``$TORCH_HOME/hub/checkpoints``, or ``visual.weights=/path/file.pth``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from .errors import CusepError

BACKBONES: dict[str, tuple[int, str]] = {
    # name: (feature size, torchvision's ImageNet checkpoint file name)
    "resnet50": (2048, "resnet50-0676ba61.pth"),
    "resnet18": (512, "resnet18-f37072fd.pth"),
}


@dataclass(frozen=True)
class VisualConfig:
    """The visual branch of a visually conditioned model (``ModelConfig.visual``).

    ``weights``: ``"imagenet"`` (torchvision's checkpoint file from its cache), a path to a
    ``.pth`` / ``.safetensors`` file of the backbone, or ``"none"`` (random initialisation).
    Weights are read once, when a training run starts; a saved model holds the whole branch.
    ``frames``: 1 (the frame at the segment start) or more, ``frame_stride`` video frames apart
    at ``fps`` (paper: 5 frames every 30th frame at 25 fps). ``temporal``: how several frames
    combine, ``"lstm"`` (last hidden state) or ``"max"``. ``freeze``: keep the backbone fixed
    (paper: fine-tuned for one frame, frozen for five); a frozen backbone stays in eval mode.
    ``crop_size``: side of the square player crops in pixels.
    """

    backbone: Literal["resnet50", "resnet18"] = "resnet50"
    weights: str = "imagenet"
    frames: int = 1
    frame_stride: int = 30
    fps: float = 25.0
    temporal: Literal["max", "lstm"] = "max"
    feature_dim: int = 1024
    freeze: bool = False
    crop_size: int = 224

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone '{self.backbone}'; one of {tuple(BACKBONES)}")
        if self.temporal not in ("max", "lstm"):
            raise ValueError(f"unknown temporal pooling '{self.temporal}'; max or lstm")
        if self.frames < 1 or self.frame_stride < 1 or self.fps <= 0:
            raise ValueError("visual frames, frame_stride and fps must be positive")
        if self.feature_dim < 1 or self.crop_size < 32:
            raise ValueError("visual feature_dim must be >= 1 and crop_size >= 32")

    @property
    def backbone_dim(self) -> int:
        """Size of the backbone's feature vector per crop."""
        return BACKBONES[self.backbone][0]

    def frame_offsets(self) -> tuple[float, ...]:
        """Seconds after a segment's start of the frames the model sees."""
        return tuple(i * self.frame_stride / self.fps for i in range(self.frames))


def imagenet_checkpoint(backbone: str) -> Path:
    """Where torchvision keeps the ImageNet weights of ``backbone`` (may not exist)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / BACKBONES[backbone][1]


def read_backbone_weights(config: VisualConfig) -> dict[str, torch.Tensor]:
    """The backbone's state dict (without ``fc``) from the file ``config.weights`` names.

    Raises a one-line CusepError when the file is missing or is not a backbone of that kind.
    """
    if config.weights == "imagenet":
        path = imagenet_checkpoint(config.backbone)
        if not path.is_file():
            found = sorted(path.parent.glob(f"{config.backbone}-*.pth"))
            if not found:
                raise CusepError(
                    f"ImageNet weights for {config.backbone} not found: put torchvision's "
                    f"{path.name} in {path.parent} (or set TORCH_HOME), or pass "
                    "--set model.visual.weights=/path/file.pth (weights=none trains from scratch)"
                )
            path = found[0]
    else:
        path = Path(config.weights).expanduser()
        if not path.is_file():
            raise CusepError(f"visual weights file {path} not found; pass an existing .pth or "
                             ".safetensors file, 'imagenet' or 'none'")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file gets the same one-line message
        raise CusepError(f"cannot read visual weights {path} ({type(exc).__name__}); "
                         "pass a torchvision ResNet checkpoint") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CusepError(f"visual weights {path} hold no state dict; pass a torchvision ResNet "
                         "checkpoint")
    return {k.removeprefix("module."): v for k, v in state.items() if not k.startswith("fc.")}


def _backbone(name: str) -> nn.Module:
    """A torchvision ResNet, randomly initialised, with ``fc`` replaced by the identity."""
    from torchvision import models

    net = getattr(models, name)(weights=None)
    net.fc = nn.Identity()
    return net


class VisualEncoder(nn.Module):
    """Player crops -> context vector (the paper's visual branch).

    forward(inputs, present) -> context (B, feature_dim), where ``inputs`` is either crops
    (B, P, F, 3, S, S) ImageNet-normalised or precomputed backbone features (B, P, F, Db), and
    ``present`` (B, P) bool marks real players (padding and absent players are ignored; an item
    without any present player gets a zero context).
    """

    def __init__(self, config: VisualConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = _backbone(config.backbone)
        dim = config.backbone_dim
        self.lstm = (nn.LSTM(dim, config.feature_dim, batch_first=True)
                     if config.frames > 1 and config.temporal == "lstm" else None)
        if config.freeze:
            self.backbone.requires_grad_(False).eval()

    def load_pretrained(self) -> None:
        """Load the backbone weights ``config.weights`` names (nothing for ``"none"``)."""
        if self.config.weights == "none":
            return
        state = read_backbone_weights(self.config)
        missing, unexpected = self.backbone.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing or unexpected:
            raise CusepError(f"visual weights {self.config.weights} do not fit a "
                             f"{self.config.backbone} ({len(missing)} missing, {len(unexpected)} "
                             "unexpected keys); pass a checkpoint of that backbone")

    def train(self, mode: bool = True) -> VisualEncoder:
        """Like nn.Module.train, but a frozen backbone always stays in eval mode."""
        super().train(mode)
        if self.config.freeze:
            self.backbone.eval()
        return self

    def features(self, crops: torch.Tensor) -> torch.Tensor:
        """crops (B, P, F, 3, S, S) -> backbone features (B, P, F, Db)."""
        lead = crops.shape[:3]
        flat = crops.reshape(-1, *crops.shape[3:])
        if self.config.freeze:
            with torch.no_grad():
                out = self.backbone(flat)
        else:
            out = self.backbone(flat)
        return out.reshape(*lead, -1)

    def player_embeddings(self, inputs: torch.Tensor) -> torch.Tensor:
        """crops (B, P, F, 3, S, S) or features (B, P, F, Db) -> per player (B, P, feature_dim)."""
        feats = self.features(inputs) if inputs.dim() == 6 else inputs
        b, p, f, d = feats.shape
        if self.lstm is not None:
            _, (hidden, _) = self.lstm(feats.reshape(b * p, f, d).float())
            return hidden[-1].reshape(b, p, -1)
        pooled = feats.amax(dim=2)  # max over frames (one frame: itself)
        return F.adaptive_max_pool1d(pooled.reshape(b * p, 1, d).float(),
                                     self.config.feature_dim).reshape(b, p, -1)

    def forward(self, inputs: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        emb = self.player_embeddings(inputs)
        mask = present.to(device=emb.device, dtype=torch.bool)[:, :, None]
        pooled = emb.masked_fill(~mask, float("-inf")).amax(dim=1)
        return torch.where(mask.any(dim=1), pooled, torch.zeros_like(pooled))
