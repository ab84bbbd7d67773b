"""Earlier implementations kept as references: tests check that the new ones give the same
results, and benchmarks time the two side by side."""

from __future__ import annotations

import torch

from cusep import train
from cusep.spectral import MAG_FLOOR, scale_magnitude, stft, to_grid


def every_row_targets(batch, spec) -> train.Targets:
    """``make_targets`` as it was: the STFT and masks of all 13 class rows, used or not."""
    mix_spec = stft(batch.mix, spec.n_fft, spec.hop)
    mix_mag = to_grid(mix_spec.abs(), spec)
    src_mag = to_grid(stft(batch.sources, spec.n_fft, spec.hop).abs(), spec)
    total = src_mag.sum(1, keepdim=True)
    ratio = (src_mag + MAG_FLOOR / src_mag.shape[1]) / (total + MAG_FLOOR)
    binary = (src_mag >= mix_mag.unsqueeze(1) - src_mag).float() * (src_mag > MAG_FLOOR)
    inp = scale_magnitude(mix_mag, spec.mag_scale).unsqueeze(1)
    return train.Targets(inp, ratio, binary, mix_spec, mix_mag.unsqueeze(1), src_mag)


def all_rows_mse(model, t, context, kind, pos_weight, visual=None):
    """``separation_loss`` (l2) as it was: the activations and the MSE over all 13 class rows."""
    assert kind == "l2", "the reference is the l2 loss"
    return torch.nn.functional.mse_loss(model(t.inp, context, visual).float(), t.ratio)
