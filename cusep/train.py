"""Training: one loop for every preset, on CPU or CUDA, one process or DistributedDataParallel.

The whole data path runs on the training device: stems held in memory (StemBank), mixtures drawn
by MixtureSampler, STFT and targets computed on the device, so no data-loader workers are needed.
A run folder holds ``config.json``, ``metrics.jsonl``, ``checkpoint.pt`` (the *resume state*:
everything to resume exactly) and ``best.safetensors`` (the weights with the best validation
SI-SDR). In code "checkpoint" is never the resume state: :mod:`cusep.checkpoint` is about model
directories; here it is ``resume state`` (:meth:`Trainer.save_resume_state`,
:func:`load_resume_state`); the file keeps its name.

A visually conditioned model (``model.visual`` set) trains on the same mixtures with each source's
player crops (Solos frames or URMP videos + boxes.json, cached at load time by ``data/frames.py``);
its backbone starts from ``model.visual.weights`` (ImageNet from the torchvision cache).

A run whose ``task`` is ``detect`` trains an InstrumentDetector with the same data, mixtures, loop
and resume state: BCE of its clip logits against the audible sources of each mixture; validation
reports loss, mAP and macro-F1 (at the threshold that maximises it) and keeps the best mAP.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch.nn import functional as F

from .atomic import atomic_path, write_text
from .checkpoint import resolve_model
from .config import AugmentConfig, TrainConfig, config_from_dict
from .data.banks import load_banks
from .data.mixing import Batch, MixingConfig, MixtureSampler, StemBank, make_generator
from .errors import CusepError
from .guide import NoteArray, bin_frequencies, harmonic_combs
from .metrics import detection_metrics, si_sdr
from .model import VisualInput, build_network
from .runtime import autocast_dtype, resolve_device, tune_cpu_allocator
from .spectral import (
    MAG_FLOOR,
    SpectralConfig,
    features,
    from_grid,
    istft,
    scale_magnitude,
    stft,
    to_grid,
)

Log = Callable[[str], None]


@dataclass(frozen=True)
class Targets:
    """Network input and training targets of a batch, all on the device.

    inp (B, 1, rows, T); ratio (B, K, rows, T) ratio masks; binary (B, K, rows, T); mix_spec
    complex (B, F, T); src_mag (B, K, rows, T) source magnitudes on the network grid.
    """

    inp: torch.Tensor
    ratio: torch.Tensor
    binary: torch.Tensor
    mix_spec: torch.Tensor
    mix_mag: torch.Tensor
    src_mag: torch.Tensor


def make_targets(batch: Batch, spec: SpectralConfig, score: torch.Tensor | None = None
                 ) -> Targets:
    """Ratio masks |S_i| / sum_j |S_j| and binary masks [|S_i| >= |X| - |S_i|] of a batch.

    Only the source rows that hold a signal go through the STFT (a mixture uses a few of the
    classes); the silent ones, absent sources above all, have zero magnitudes. ``score``
    (B, K, rows, T): a score-conditioned model's further input channels (:func:`score_inputs`),
    after the mixture's.
    """
    mix_spec = stft(batch.mix, spec.n_fft, spec.hop)
    mix_mag = to_grid(mix_spec.abs(), spec)
    (n, k), shape = batch.sources.shape[:2], mix_mag.shape[1:]
    used = batch.sources.ne(0).any(-1).nonzero(as_tuple=True)  # (item, class) of each used row
    item = used[0]
    mag = (to_grid(stft(batch.sources[used], spec.n_fft, spec.hop).abs(), spec) if len(item)
           else mix_mag.new_zeros((0, *shape)))  # (used rows, rows, T); stft takes no empty batch
    src_mag = mix_mag.new_zeros((n, k, *shape))
    src_mag[used] = mag
    total = mix_mag.new_zeros((n, *shape)).index_add_(0, item, mag)  # sum over the classes
    # a silent row: ratio (0 + floor / K) / (total + floor), binary 0
    ratio = ((MAG_FLOOR / k) / (total + MAG_FLOOR)).unsqueeze(1).repeat(1, k, 1, 1)
    ratio[used] = (mag + MAG_FLOOR / k) / (total[item] + MAG_FLOOR)
    binary = torch.zeros_like(src_mag)
    binary[used] = (mag >= mix_mag[item] - mag).float() * (mag > MAG_FLOOR)
    inp = scale_magnitude(mix_mag, spec.mag_scale).unsqueeze(1)
    if score is not None:
        inp = torch.cat([inp, score.to(inp.device, inp.dtype)], dim=1)
    return Targets(inp, ratio, binary, mix_spec, mix_mag.unsqueeze(1), src_mag)


def score_inputs(notes: list[list[tuple[int, NoteArray]]], classes: int, spec: SpectralConfig,
                 frames: int) -> torch.Tensor:
    """The notes of a batch (:attr:`Batch.notes`) as a score-conditioned network takes them:
    the harmonic combs of each class's notes at the ``frames`` STFT frames of a segment, on the
    network grid -> (B, classes, rows, frames); what :meth:`cusep.guide.ScoreGuide.inputs` gives
    at separation."""
    freqs = bin_frequencies(spec.sample_rate, spec.n_fft)
    times = np.arange(frames) * spec.hop / spec.sample_rate
    out = np.zeros((len(notes), classes, spec.bins, frames), np.float32)
    for b, item in enumerate(notes):
        for c, arr in item:
            out[b, c] = harmonic_combs(arr, freqs, times)
    return to_grid(torch.from_numpy(out), spec)


def separation_loss(model: torch.nn.Module, t: Targets, context: torch.Tensor | None, kind: str,
                    pos_weight: float, visual: VisualInput | None = None) -> torch.Tensor:
    """l2: MSE of ratio masks (paper); bce: BCE of binary masks (pos_weight); mag-l1: L1 of the
    masked mixture magnitude against the source magnitude, relative to the mixture's mean.
    ``visual``: (crops, players) for a visual model (``context`` is then ignored)."""
    if kind == "bce":
        logits = model(t.inp, context, visual, logits=True).float()  # forward: DDP-safe
        weight = torch.tensor(pos_weight, device=logits.device)
        return F.binary_cross_entropy_with_logits(logits, t.binary, pos_weight=weight)
    if kind == "l2":
        if visual is None and context is not None and getattr(
                getattr(model, "module", model), "zero_where_unlabelled", False):
            return _labelled_rows_mse(model, t, context)
        return F.mse_loss(model(t.inp, context, visual).float(), t.ratio)
    masks = model(t.inp, context, visual).float()
    if kind == "mag-l1":
        scale = t.mix_mag.mean(dim=(1, 2, 3), keepdim=True) + 1e-8
        return ((masks * t.mix_mag - t.src_mag).abs() / scale).mean()
    raise CusepError(f"unknown loss '{kind}'; l2, bce or mag-l1")


def _labelled_rows_mse(model: torch.nn.Module, t: Targets, context: torch.Tensor
                       ) -> torch.Tensor:
    """``F.mse_loss(masks, t.ratio)`` of a model whose masks are 0 where the context is 0: the
    network's outputs go through the activations only for the labelled rows (a batch labels
    about 3 of 13); each other row adds its target's squares, a constant."""
    rows = context.ne(0).nonzero(as_tuple=True)
    target = t.ratio[rows]  # (N, rows, T)
    err = (model(t.inp, context, rows=rows).float() - target).square().sum()
    unlabelled = t.ratio.square().sum() - target.square().sum()
    return (err + unlabelled) / t.ratio.numel()


def estimate_sources(masks: torch.Tensor, mix_spec: torch.Tensor, spec: SpectralConfig,
                     length: int) -> torch.Tensor:
    """Soft-mask estimates: masks (B, K, rows, T), mix complex (B, F, T) -> (B, K, length)."""
    lin = from_grid(masks.float(), spec)
    return istft(lin * mix_spec.unsqueeze(1), length, spec.n_fft, spec.hop)


def detection_loss(model: torch.nn.Module, inp: torch.Tensor, targets: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """BCE of the clip logits against targets (B, K) -> (loss, clip logits (B, K))."""
    clip, _ = model(inp)
    return F.binary_cross_entropy_with_logits(clip.float(), targets.float()), clip


def augment_features(inp: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator
                     ) -> torch.Tensor:
    """SpecAugment-style copy of a detector's input (B, 1, rows, T) (:class:`AugmentConfig`)."""
    b, _, rows, frames = inp.shape
    dev = inp.device
    out = inp.clone()
    if cfg.freq_shift:
        shift = torch.randint(-cfg.freq_shift, cfg.freq_shift + 1, (b,), generator=generator,
                              device=dev)
        index = (torch.arange(rows, device=dev)[None] - shift[:, None]).clamp(0, rows - 1)
        out = out.gather(2, index[:, None, :, None].expand(b, 1, rows, frames))
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    for count, width, size, dim in ((cfg.freq_masks, cfg.freq_width, rows, 2),
                                    (cfg.time_masks, cfg.time_width, frames, 3)):
        for _ in range(count):
            w = torch.randint(0, width + 1, (b,), generator=generator, device=dev)
            start = (torch.rand(b, generator=generator, device=dev) * (size - w + 1)).long()
            pos = torch.arange(size, device=dev)[None]
            hit = (pos >= start[:, None]) & (pos < (start + w)[:, None])  # (B, size)
            hit = hit[:, None, :, None] if dim == 2 else hit[:, None, None, :]
            out = torch.where(hit, mean, out)
    return out


def audible(present: torch.Tensor, sources: torch.Tensor, floor_db: float = -60.0
            ) -> torch.Tensor:
    """Detection targets: present (B, K) and not silent in the segment (sources (B, K, L))."""
    power = sources.float().pow(2).mean(-1)
    return present * (power > 10.0 ** (floor_db / 10.0)).to(present.dtype)


class Trainer:
    """Trains a ConditionedUNet (or an InstrumentDetector: ``task = "detect"``) as a TrainConfig
    says, writing a resumable run folder."""

    def __init__(self, config: TrainConfig, run_dir: Path, device: torch.device,
                 log: Log = print, command: str = "") -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.device = device
        self.log = log
        self.command = command
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.main = self.rank == 0
        torch.manual_seed(config.optim.seed)
        self.detect = config.task == "detect"
        self.best_key = "valid_map" if self.detect else "valid_si_sdr"
        self.model = build_network(config.network)
        if config.init:
            self._init_from(config.init)
        elif getattr(self.model, "visual", None) is not None:
            self.model.visual.load_pretrained()  # ImageNet (or a given file) unless weights=none
        self.model = self.model.to(device)
        self.amp = autocast_dtype(device, "auto")
        self.channels_last = self.amp is not None or device.type == "cpu"
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.net: torch.nn.Module = self.model
        if self.world > 1:
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None)
        opt = config.optim
        trainable = [p for p in self.model.parameters() if p.requires_grad]  # frozen backbone
        self.optimizer = torch.optim.Adam(trainable, lr=opt.lr, weight_decay=opt.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="min", factor=opt.plateau_factor, patience=opt.plateau_patience)
        self.generator = make_generator(opt.seed, self.rank, device)
        self.step = 0
        self.best = -math.inf
        self.curriculum_best = math.inf
        self.curriculum_wait = 0
        self.max_sources = 2 if opt.curriculum else config.mixing.max_sources
        self.train_sampler, self.valid_set = self._data()
        self.train_sampler.set_max_sources(self.max_sources)

    def _init_from(self, spec: str) -> None:
        """Load the weights of an exported model (its config must match this run's model)."""
        model_dir = resolve_model(spec)
        if self.detect:
            saved = dataclasses.replace(model_dir.detector_config,
                                        threshold=self.config.detector.threshold)
        else:
            saved = model_dir.model_config
            if self.config.model.score_input and not saved.score_input:
                saved = dataclasses.replace(saved, score_input=True)  # widened below
        if model_dir.kind != ("detector" if self.detect else "separator") \
                or saved != self.config.network:
            raise CusepError(f"--set init={spec}: that model's config differs from this run's "
                             "model section; use the same preset")
        weights = {k: v.float() if v.is_floating_point() else v
                   for k, v in load_weights(model_dir.weights).items()}
        self.model.load_state_dict(widen_inputs(weights, self.model.state_dict()))

    # -- data ----------------------------------------------------------------------------------
    def _data(self) -> tuple[MixtureSampler, list[Batch]]:
        cfg = self.config
        encode = None
        if self.visual_config is not None and self.visual_config.freeze:
            from .data.frames import encode_track

            def encode(track):  # a frozen backbone runs once per crop, at load time
                return encode_track(track, self.model.visual, self.device)
        notes = self.scored
        train_bank, valid_bank = load_banks(cfg.data, cfg.spectral.sample_rate,
                                            self.log if self.main else (lambda s: None),
                                            visual=self.visual_config, encode=encode,
                                            notes=notes)
        classes, visual = cfg.classes, self.visual_config
        train = MixtureSampler(train_bank.to(self.device), cfg.mixing, classes, visual, notes)
        valid = MixtureSampler(valid_bank.to(self.device), validation_mixing(cfg, valid_bank),
                               classes, visual, notes)
        gen = make_generator(cfg.optim.seed + 1_000_003, 0, self.device)
        size = cfg.optim.batch_size
        items = [valid.draw(min(size, cfg.optim.valid_items - i), gen)
                 for i in range(0, cfg.optim.valid_items, size)]
        return train, items

    @property
    def scored(self) -> bool:
        """True when the network is score-conditioned (it takes the sources' notes)."""
        return not self.detect and self.config.model.score_input

    def _targets(self, batch: Batch) -> Targets:
        """make_targets of a batch, with the score channels for a score-conditioned model."""
        spec = self.config.model.spectral
        score = None
        if self.scored:  # the sampler puts the notes on every batch of a score model
            score = score_inputs(batch.notes, self.config.model.sources, spec, spec.frames)
        return make_targets(batch, spec, score)

    @property
    def visual_config(self):
        """The model's VisualConfig (None: audio-only or a detector)."""
        return None if self.detect else self.config.model.visual

    def _visual(self, batch: Batch) -> VisualInput | None:
        """A visual batch's (normalised crops, players) on the device; None for audio batches."""
        if batch.crops is None:
            return None
        from .video import normalise

        crops = batch.crops.to(self.device, non_blocking=True)
        crops = normalise(crops) if crops.dtype == torch.uint8 else crops.float()  # or features
        return crops, batch.players.to(self.device)

    # -- state ---------------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "best": self.best,
            "curriculum": [self.curriculum_best, self.curriculum_wait, self.max_sources],
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda"
            else torch.empty(0, dtype=torch.uint8),
        }

    def load_state(self, state: dict) -> None:
        try:
            self.model.load_state_dict(state["model"])
        except (RuntimeError, KeyError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0][:160]
            raise CusepError(f"the checkpoint does not fit this run's model ({first}); resume "
                             "without changing model settings, or start a new run") from None
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.best = float(state["best"])
        cb, cw, ms = state["curriculum"]
        self.curriculum_best, self.curriculum_wait, self.max_sources = float(cb), int(cw), int(ms)
        self.train_sampler.set_max_sources(self.max_sources)
        self.generator.set_state(state["generator"].to("cpu"))
        torch.set_rng_state(state["torch_rng"].cpu())
        if self.device.type == "cuda" and state["cuda_rng"].numel():
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), self.device)

    def save_resume_state(self) -> None:
        """Write ``checkpoint.pt`` (the resume state), atomically; rank 0 only."""
        if not self.main:
            return
        with atomic_path(self.run_dir / "checkpoint.pt") as tmp:
            torch.save(self.state(), tmp)

    def resume(self) -> bool:
        """Load the run folder's resume state if any (every rank). True if resumed."""
        path = self.run_dir / "checkpoint.pt"
        if not path.exists():
            return False
        self.load_state(load_resume_state(path, self.device))
        if self.world > 1:  # each rank continues its own stream, decorrelated from the others
            self.generator.manual_seed(self.config.optim.seed + 7919 * self.rank + self.step)
        return True

    # -- loop ----------------------------------------------------------------------------------
    def _autocast(self):
        if self.amp is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.amp)

    def train_step(self) -> float:
        cfg = self.config
        self.net.train()
        batch = self.train_sampler.draw(cfg.optim.batch_size, self.generator)
        if self.detect:
            return self._update(self._detection_loss(batch)[0])
        t = self._targets(batch)
        inp = t.inp.contiguous(memory_format=torch.channels_last) if self.channels_last else t.inp
        t = Targets(inp, t.ratio, t.binary, t.mix_spec, t.mix_mag, t.src_mag)
        visual = self._visual(batch)
        with self._autocast():
            loss = separation_loss(self.net, t, batch.present, cfg.optim.loss,
                                   cfg.optim.bce_pos_weight, visual)
        return self._update(loss)

    def _update(self, loss: torch.Tensor) -> float:
        cfg = self.config
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
        self.optimizer.step()
        self.step += 1
        return float(loss.detach())

    def _detection_loss(self, batch: Batch, net: torch.nn.Module | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (BCE loss, clip logits (B, K), targets (B, K)) of a batch for the detector; the
        training network (``net`` None) sees its features augmented (``config.augment``)."""
        inp, _ = features(batch.mix, self.config.spectral)
        if net is None and self.config.augment.active:
            inp = augment_features(inp, self.config.augment, self.generator)
        if self.channels_last:
            inp = inp.contiguous(memory_format=torch.channels_last)
        targets = audible(batch.present, batch.sources)
        with self._autocast():
            loss, clip = detection_loss(net or self.net, inp, targets)
        return loss, clip, targets

    @torch.no_grad()
    def validate_detection(self) -> dict[str, float]:
        """Loss, mAP and macro-F1 (at the best threshold, also reported) of the detector."""
        self.model.eval()
        losses, probs, targets = [], [], []
        for batch in self.valid_set:
            loss, clip, target = self._detection_loss(batch, self.model)
            losses.append(float(loss))
            probs.append(torch.sigmoid(clip.float()).cpu())
            targets.append(target.cpu())
        m = detection_metrics(torch.cat(probs).numpy(), torch.cat(targets).numpy())
        return {"valid_loss": sum(losses) / len(losses), "valid_map": m["map"],
                "valid_f1": m["f1"], "valid_threshold": m["threshold"]}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Loss and SI-SDR (soft masks, present sources) on the fixed validation mixtures
        (a detector: :meth:`validate_detection`)."""
        if self.detect:
            return self.validate_detection()
        cfg = self.config
        self.model.eval()
        losses, scores, gains = [], [], []
        for batch in self.valid_set:
            t = self._targets(batch)
            visual = self._visual(batch)
            with self._autocast():
                losses.append(float(separation_loss(self.model, t, batch.present, cfg.optim.loss,
                                                    cfg.optim.bce_pos_weight, visual)))
                masks = (torch.sigmoid(self.model.logits(t.inp, batch.present, visual))
                         if cfg.optim.loss == "bce" else self.model(t.inp, batch.present, visual))
            if cfg.model.conditioning == "label-multiply" or cfg.optim.loss == "bce":
                masks = masks.float() * batch.present[:, :, None, None]
            est = estimate_sources(masks, t.mix_spec, cfg.model.spectral, batch.mix.shape[-1])
            active = batch.present.bool() & (batch.sources.abs().sum(-1) > 1e-5)
            sdr = si_sdr(est, batch.sources)[active]
            base = si_sdr(batch.mix.unsqueeze(1).expand_as(batch.sources), batch.sources)[active]
            scores.append(sdr.float().cpu())
            gains.append((sdr - base).float().cpu())
        return {
            "valid_loss": sum(losses) / len(losses),
            "valid_si_sdr": float(torch.cat(scores).mean()),
            "valid_si_sdri": float(torch.cat(gains).mean()),
        }

    def _curriculum(self, valid_loss: float) -> None:
        opt = self.config.optim
        if not opt.curriculum or self.max_sources >= self.config.mixing.max_sources:
            return
        if valid_loss < self.curriculum_best - 1e-4:
            self.curriculum_best, self.curriculum_wait = valid_loss, 0
            return
        self.curriculum_wait += 1
        if self.curriculum_wait >= opt.curriculum_patience:
            self.max_sources += 1
            self.train_sampler.set_max_sources(self.max_sources)
            self.curriculum_best, self.curriculum_wait = math.inf, 0

    def _write(self, record: dict) -> None:
        if self.main:
            with open(self.run_dir / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(record) + "\n")

    def fit(self, progress: bool = True) -> dict[str, float]:
        """Train until max_steps or max_minutes; returns the last validation record.

        Ctrl-C (SIGINT) finishes the step under way, writes the checkpoint and raises
        :class:`Interrupted`: no step is lost and ``--resume`` continues exactly there."""
        stop = _StopFlag()
        with stop:
            return self._fit(progress, stop)

    def _fit(self, progress: bool, stop: _StopFlag) -> dict[str, float]:
        opt = self.config.optim
        if self.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_json(self.run_dir / "config.json", {
                **self.config.to_dict(), "command": self.command,
                "device": str(self.device), "world_size": self.world,
            })
        start = time.monotonic()
        losses: list[float] = []
        record: dict[str, float] = {}
        bar = _Bar(opt.max_steps, self.step, enabled=progress and self.main)
        while self.step < opt.max_steps:
            losses.append(self.train_step())
            bar.update(self.step, losses[-1])
            out_of_time = opt.max_minutes > 0 and time.monotonic() - start > opt.max_minutes * 60
            if opt.max_minutes > 0 and self.world > 1:  # every rank stops at the same step
                flag = torch.tensor([float(out_of_time)], device=self.device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                out_of_time = bool(flag.item())
            last = self.step >= opt.max_steps or out_of_time
            if self.step % opt.valid_every == 0 or last:
                record = {"step": self.step, "train_loss": sum(losses) / len(losses),
                          "lr": self.optimizer.param_groups[0]["lr"],
                          "max_sources": self.max_sources,
                          "minutes": (time.monotonic() - start) / 60, **self.validate()}
                losses = []
                self.scheduler.step(record["valid_loss"])
                self._curriculum(record["valid_loss"])
                if record[self.best_key] > self.best:
                    self.best = record[self.best_key]
                    if self.main:
                        save_weights(self.run_dir / "best.safetensors", self.model)
                self._write(record)
                bar.note(record)
                if not progress and self.main:
                    self.log(json.dumps(record))
            if self.step % opt.checkpoint_every == 0 or last or stop.set:
                self.save_resume_state()
            if stop.set:
                bar.close()
                raise Interrupted(self.step)
            if out_of_time:
                break
        bar.close()
        return record


class Interrupted(Exception):
    """Training stopped by Ctrl-C after ``step``, its checkpoint written."""

    def __init__(self, step: int) -> None:
        super().__init__(f"interrupted at step {step}")
        self.step = step


class _StopFlag:
    """While active (main thread only), SIGINT sets ``set`` instead of raising at once."""

    def __init__(self) -> None:
        self.set = False
        self._old = None

    def _handle(self, signum, frame) -> None:
        self.set = True

    def __enter__(self) -> _StopFlag:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        import signal

        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def validation_mixing(cfg: TrainConfig, bank: StemBank) -> MixingConfig:
    """The validation mixtures are the same for every preset drawing from the same data, so runs
    compare: whole ensembles when the data has multitrack pieces (the test condition), else
    mix-and-separate; no gain augmentation, no noise."""
    ensembles = any(len(codes) >= cfg.mixing.min_sources for codes, _ in bank.pieces)
    return dataclasses.replace(cfg.mixing, ensemble_ratio=1.0 if ensembles else 0.0,
                               gain_db=(0.0, 0.0), noise_std=0.0, normalise="rms",
                               ensemble_subset=False, unlabelled=0.0)


def widen_inputs(saved: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
                 ) -> dict[str, torch.Tensor]:
    """Weights of a mixture-only network for its score-conditioned twin: a conv that takes the
    network input (the first encoder conv, the last decoder level) gets zero weights for the
    new score channels, which follow the mixture's channel, so the twin starts as the original.
    Other weights are returned as they are."""
    out = dict(saved)
    for key, weight in saved.items():
        want = target.get(key)
        if want is None or want.shape == weight.shape or weight.dim() != 4 \
                or want.shape[0] != weight.shape[0] or want.shape[2:] != weight.shape[2:]:
            continue
        extra = want.shape[1] - weight.shape[1]
        if extra <= 0:
            continue
        wide = weight.new_zeros(want.shape)
        wide[:, :1] = weight[:, :1]
        wide[:, 1 + extra:] = weight[:, 1:]
        out[key] = wide
    return out


def save_weights(path: Path, model: torch.nn.Module) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()},
                  str(tmp))


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A run's safetensors weights; CusepError when the file is truncated or corrupt."""
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own SafetensorError (and OSError)
        raise CusepError(f"{path} is truncated or corrupt ({exc}); export another step "
                         "(--weights last) or train again") from None


def load_resume_state(path: Path, device: str | torch.device = "cpu") -> dict:
    """A run's resume state, checkpoint.pt (tensors only: nothing is unpickled); CusepError
    when it is truncated or corrupt."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # zip, pickle and I/O errors of a cut or damaged file
        raise CusepError(f"{path} is truncated or corrupt ({type(exc).__name__}); delete it "
                         "to start again, or restore the run folder") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CusepError(f"{path} is not a cusep checkpoint; delete it or restore the run")
    return state


def save_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def read_run_config(run_dir: Path) -> tuple[TrainConfig, dict]:
    """A run folder's TrainConfig and the extra keys saved beside it."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise CusepError(f"'{run_dir}' is not a cusep run folder (no config.json)")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CusepError(f"{path} is not valid JSON ({exc}); restore the run's config.json") \
            from None
    if not isinstance(raw, dict):
        raise CusepError(f"{path} must hold a JSON object; restore the run's config.json")
    extra = {k: raw.pop(k) for k in ("command", "device", "world_size") if k in raw}
    return config_from_dict(raw), extra


def tune_process(device: torch.device) -> None:
    """The process-wide settings a training run wants, made by its entry point (``cusep
    train``), never by the Trainer: glibc's allocator tuned on CPU, cudnn's autotuner on CUDA."""
    if device.type == "cpu":
        tune_cpu_allocator()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def setup_distributed(device: str) -> torch.device:
    """Initialise torch.distributed when launched by torchrun; return this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return resolve_device(device)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return dev


def describe(record: dict) -> str:
    """One line of a validation record: SI-SDR for a separator, mAP and F1 for a detector."""
    if "valid_map" in record:
        return (f"valid loss {record['valid_loss']:.4f}, mAP {record['valid_map']:.3f}, "
                f"F1 {record['valid_f1']:.3f} at threshold {record['valid_threshold']:.2f}")
    return (f"valid loss {record['valid_loss']:.4f}, SI-SDR {record['valid_si_sdr']:.2f} dB "
            f"(+{record['valid_si_sdri']:.2f})")


class _Bar:
    """A rich progress bar when attached to a terminal; silent otherwise."""

    def __init__(self, total: int, done: int, enabled: bool) -> None:
        self.progress = None
        if enabled and sys.stderr.isatty():
            from rich.progress import TextColumn

            from .progress import progress_bar

            self.progress = progress_bar(TextColumn("{task.fields[info]}"))
            self.progress.start()
            self.task = self.progress.add_task("train", total=total, completed=done, info="")

    def update(self, step: int, loss: float) -> None:
        if self.progress:
            self.progress.update(self.task, completed=step, info=f"loss {loss:.4f}")

    def note(self, record: dict) -> None:
        if self.progress:
            self.progress.console.print(f"step {record['step']}: {describe(record)}")

    def close(self) -> None:
        if self.progress:
            self.progress.stop()
