"""ConditionedUNet: every conditioning x architecture, both frequency grids, the config."""

from __future__ import annotations

import json

import pytest
import torch

from cusep.instruments import CODES, label_vector
from cusep.model import CONDITIONINGS, ConditionedUNet, ModelConfig
from cusep.spectral import SpectralConfig, features

CHANNELS = (8, 16, 32, 64)
SEGMENT = 4095  # 16 frames
QUARTET = ("vn", "va", "vc", "fl")  # MHU-Nets get one decoder per class: keep them few
AUDIO_CONDITIONINGS = [c for c in CONDITIONINGS if c != "final-multiply"]  # visual: test_visual


def config(conditioning: str = "label-multiply", architecture: str = "unet",
           freq_scale: str = "linear", **overrides) -> ModelConfig:
    spectral = SpectralConfig(segment=SEGMENT, freq_scale=freq_scale)
    if architecture == "mhunet" and "instruments" not in overrides:
        overrides = {"instruments": QUARTET, "context_dim": len(QUARTET), **overrides}
    return ModelConfig(channels=CHANNELS, conditioning=conditioning, architecture=architecture,
                       spectral=spectral, **overrides)


def build(cfg: ModelConfig, seed: int = 0) -> ConditionedUNet:
    torch.manual_seed(seed)
    return ConditionedUNet(cfg).eval()


def mixture_input(cfg: ModelConfig, batch: int = 2) -> torch.Tensor:
    """Network input (batch, 1, rows, 16) of a two-tone mixture plus noise."""
    g = torch.Generator().manual_seed(0)
    t = torch.arange(SEGMENT) / cfg.spectral.sample_rate
    mix = torch.stack([
        torch.sin(2 * torch.pi * 220 * (b + 1) * t) + 0.5 * torch.sin(2 * torch.pi * 660 * t)
        + 0.05 * torch.randn(SEGMENT, generator=g)
        for b in range(batch)
    ])
    inp, _ = features(mix, cfg.spectral)
    return inp


def contexts(cfg: ModelConfig, *sets: list[str]) -> torch.Tensor:
    return torch.tensor([label_vector(s, cfg.instruments) for s in sets])


def randomise_film(model: ConditionedUNet, seed: int = 1) -> None:
    """FiLM starts as the identity (zero init); give it weights as training would."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".linear." in name or name.startswith("film"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("freq_scale", ["linear", "log"])
@pytest.mark.parametrize("architecture", ["unet", "mhunet"])
@pytest.mark.parametrize("conditioning", AUDIO_CONDITIONINGS)
def test_every_variant_gives_masks(conditioning, architecture, freq_scale):
    cfg = config(conditioning, architecture, freq_scale)
    model = build(cfg)
    inp = mixture_input(cfg)
    assert inp.shape == (2, 1, cfg.spectral.rows, 16)
    assert cfg.spectral.rows == (512 if freq_scale == "linear" else 256)
    ctx = contexts(cfg, ["vn", "vc"], ["fl"]) if cfg.conditioned else None
    with torch.no_grad():
        masks = model(inp, ctx)
    assert masks.shape == (2, cfg.sources, cfg.spectral.rows, 16)
    assert cfg.sources == (len(QUARTET) if architecture == "mhunet" else len(CODES))
    assert torch.isfinite(masks).all()
    assert masks.min() >= 0 and masks.max() <= 1
    assert len(model.decoders) == (cfg.sources if architecture == "mhunet" else 1)


@pytest.mark.parametrize("architecture", ["unet", "mhunet"])
def test_label_multiply_silences_absent_instruments(architecture):
    cfg = config("label-multiply", architecture)
    model = build(cfg)
    with torch.no_grad():
        masks = model(mixture_input(cfg), contexts(cfg, ["vn", "vc"], ["fl"]))
    present = {0: {"vn", "vc"}, 1: {"fl"}}
    for b, codes in present.items():
        for k, code in enumerate(cfg.instruments):
            if code in codes:
                assert masks[b, k].min() > 0
            else:
                assert torch.count_nonzero(masks[b, k]) == 0  # exactly zero


@pytest.mark.parametrize(("conditioning", "keys"), [
    ("film-bottleneck", ["film_bottleneck.linear.weight", "film_bottleneck.linear.bias"]),
    ("film-final", ["film_final.linear.weight", "film_final.linear.bias"]),
    ("film-encoder", [f"encoder.{i}.film.linear.weight" for i in range(len(CHANNELS) - 1)]),
])
def test_film_layers_exist_after_init(conditioning, keys):
    model = ConditionedUNet(config(conditioning))
    state = model.state_dict()
    for key in keys:
        assert key in state
    params = dict(model.named_parameters())
    assert all(key in params for key in keys)  # trained: the optimiser sees them from the start
    plain = ConditionedUNet(config("none")).state_dict()
    assert not any("film" in key for key in plain)


@pytest.mark.parametrize("conditioning", ["film-bottleneck", "film-encoder", "film-final"])
def test_film_output_depends_on_the_context(conditioning):
    cfg = config(conditioning)
    model = build(cfg)
    inp = mixture_input(cfg, batch=1).expand(2, -1, -1, -1)
    ctx = contexts(cfg, ["vn", "vc"], ["fl", "tba"])
    with torch.no_grad():
        at_init = model(inp, ctx)
        torch.testing.assert_close(at_init[0], at_init[1])  # zero-initialised: identity
        randomise_film(model)
        masks = model(inp, ctx)
    assert (masks[0] - masks[1]).abs().max() > 1e-3


@pytest.mark.parametrize("conditioning", [c for c in AUDIO_CONDITIONINGS if c != "none"])
def test_conditioned_model_needs_a_context(conditioning):
    cfg = config(conditioning)
    with pytest.raises(ValueError, match="context"):
        build(cfg)(mixture_input(cfg, batch=1))


def test_unconditioned_model_ignores_no_context():
    cfg = config("none")
    with torch.no_grad():
        masks = build(cfg)(mixture_input(cfg, batch=1))
    assert masks.shape[1] == len(CODES)


@pytest.mark.parametrize("cfg", [
    ModelConfig(),
    config("film-encoder", "mhunet", "log", mask="binary", dropout=0.1),
    ModelConfig(instruments=("vn", "vc"), context_dim=2,
                spectral=SpectralConfig(mag_scale="log", log_rows=128)),
])
def test_config_round_trip(cfg):
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg  # lists -> tuples


def test_film_context_dim_must_match_the_instruments():
    with pytest.raises(ValueError, match="context_dim"):
        ModelConfig(instruments=("vn", "vc"), conditioning="film-bottleneck")


@pytest.mark.parametrize(("data", "match"), [
    ({"widht": 3}, "unknown model config keys"),
    ({"conditioning": "film-everywhere"}, "conditioning"),
    ({"architecture": "resnet"}, "architecture"),
    ({"mask": "soft"}, "mask"),
    ({"channels": [8]}, "channels"),
    ({"instruments": ["vn", "vc"]}, "context_dim"),
])
def test_config_rejects_bad_values(data, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig.from_dict(data)


def test_eval_mode_is_deterministic_train_mode_is_not():
    cfg = config("film-bottleneck")
    model = build(cfg)
    randomise_film(model)
    inp, ctx = mixture_input(cfg), contexts(cfg, ["vn"], ["va", "vc"])
    with torch.no_grad():
        first, second = model(inp, ctx), model(inp, ctx)
        torch.testing.assert_close(first, second, rtol=0, atol=0)
        model.train()
        torch.manual_seed(3)
        dropped = model(inp, ctx)
    assert (dropped - first).abs().max() > 1e-4  # dropout is active in training only


def test_input_size_multiple():
    assert ConditionedUNet(config()).multiple == 2 ** len(CHANNELS)
