"""Training mixtures drawn on the fly, in torch, on any device.

Two samplers share one batch format:

- mix-and-separate (the paper): k distinct instruments, each a random stem of that instrument
  at a random offset; unrelated recordings summed.
- ensemble: one multitrack piece (chosen with probability proportional to its length), one
  offset, its sources synchronised; optionally a random subset of them.

Targets always sum exactly to the mix (before the optional noise), unlike the reference code.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from ..errors import CusepError
from ..guide import NoteArray, note_array
from ..instruments import CODES
from ..score import read_score
from .perturb import ScorePerturbation, perturb_notes
from .urmp import Piece, score_file

if TYPE_CHECKING:
    from ..visual import VisualConfig
    from .frames import FrameTrack

_BLOCK = 512  # samples per block of the activity (energy) index


def make_generator(seed: int, rank: int = 0, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch generator seeded from (seed, rank), so ranks/workers draw different mixtures."""
    state = int(np.random.SeedSequence([int(seed), int(rank)]).generate_state(1, np.uint64)[0])
    gen = torch.Generator(device=torch.device(device))
    gen.manual_seed(state)
    return gen


def load_mono(path: str | Path, sample_rate: int) -> torch.Tensor:
    """Read an audio file as mono float32 at ``sample_rate``. Shape (samples,)."""
    from ..audio import read_audio, resample, to_mono  # decoders load only when reading

    data, rate = read_audio(path)
    audio = torch.from_numpy(to_mono(data))
    if audio.numel() == 0:
        raise ValueError("no samples")
    return resample(audio, rate, sample_rate).contiguous()


def _read_errors() -> tuple[type[Exception], ...]:
    """What reading a corrupt or unreadable file raises."""
    import soundfile as sf

    return (CusepError, sf.SoundFileError, RuntimeError, OSError, ValueError)


def _progress(items: Sequence, show: bool, what: str) -> Iterable:
    """``items``, with cusep's progress bar (:func:`cusep.progress.progress_bar`) if ``show``."""
    if not show:
        return items
    from ..progress import progress_bar

    def shown() -> Iterator:
        with progress_bar() as bar:
            yield from bar.track(items, description=what)

    return shown()


class StemBank:
    """Audio held in memory at the model rate (mono).

    ``pieces``: list of (codes, tensor (sources, samples)), players of one instrument summed,
    rows in the order of ``codes``; ``names``: the piece names. ``solos``: code -> list of
    1-D tensors. ``skipped``: (path, reason) of files that could not be read.

    Banks for visually conditioned training also hold every source's cached player crops
    (:class:`~cusep.data.frames.FrameTrack`, always on the CPU): ``piece_frames`` (one tuple per
    piece, rows in the order of its codes) and ``solo_frames`` (parallel to ``solos``); both
    None for audio-only banks.

    Banks for score-conditioned training hold every piece source's notes too: ``piece_notes``
    (one tuple per piece, rows in the order of its codes, each a :data:`~cusep.guide.NoteArray`
    in seconds of the piece); None otherwise.
    """

    def __init__(
        self,
        pieces: list[tuple[tuple[str, ...], torch.Tensor]] | None = None,
        solos: dict[str, list[torch.Tensor]] | None = None,
        sample_rate: int = 11025,
        names: list[str] | None = None,
        skipped: list[tuple[Path, str]] | None = None,
        piece_frames: list[tuple[FrameTrack, ...]] | None = None,
        solo_frames: dict[str, list[FrameTrack]] | None = None,
        piece_notes: list[tuple[NoteArray, ...]] | None = None,
    ) -> None:
        self.pieces = list(pieces or [])
        self.piece_notes = list(piece_notes) if piece_notes is not None else None
        self.solos = {c: list(v) for c, v in (solos or {}).items() if v}
        self.piece_frames = list(piece_frames) if piece_frames is not None else None
        self.solo_frames = (
            {c: list(v) for c, v in solo_frames.items() if v} if solo_frames is not None else None
        )
        self.sample_rate = int(sample_rate)
        self.names = (
            list(names) if names is not None else [f"piece{i}" for i in range(len(self.pieces))]
        )
        self.skipped = list(skipped or [])
        for codes, audio in self.pieces:
            if audio.dim() != 2 or audio.shape[0] != len(codes):
                raise ValueError(f"piece tensor {tuple(audio.shape)} does not match codes {codes}")

    @classmethod
    def from_urmp(
        cls,
        pieces: Sequence[Piece],
        sample_rate: int = 11025,
        progress: bool = False,
        dtype: torch.dtype = torch.float32,
        frames: Callable[[Piece, float], Mapping[str, FrameTrack]] | None = None,
        notes: bool = False,
    ) -> StemBank:
        """Read every piece's tracks; a piece with an unreadable track is skipped whole.

        ``frames(piece, seconds)``: its sources' cached crops (a bank for visual training); a
        piece whose frames cannot be read is skipped too. ``notes``: read each piece's score
        (``Sco_*.mid``, one part per player) into its sources' notes (a bank for
        score-conditioned training); a piece without a readable one is skipped.
        """
        read_errors = _read_errors()
        out: list[tuple[tuple[str, ...], torch.Tensor]] = []
        names: list[str] = []
        skipped: list[tuple[Path, str]] = []
        piece_frames: list[tuple[FrameTrack, ...]] = []
        piece_notes: list[tuple[NoteArray, ...]] = []
        for piece in _progress(pieces, progress, "reading pieces"):
            if notes:  # first: the score is small, the audio is not
                try:
                    sources_notes = _piece_notes(piece)
                except (CusepError, *read_errors) as exc:
                    skipped.append((piece.folder, str(exc)))
                    continue
            rows: list[torch.Tensor] = []
            failed = False
            for tracks in piece.sources.values():
                total: torch.Tensor | None = None
                for t in tracks:
                    try:
                        audio = load_mono(t.path, sample_rate)
                    except read_errors as exc:
                        skipped.append((t.path, f"{type(exc).__name__}: {exc}"))
                        failed = True
                        break
                    total = audio if total is None else _add_padded(total, audio)
                if failed or total is None:
                    failed = True
                    break
                rows.append(total)
            if failed:
                continue
            length = max(r.numel() for r in rows)
            if frames is not None:
                try:
                    tracks = frames(piece, length / sample_rate)
                except read_errors as exc:
                    skipped.append((piece.folder, f"{type(exc).__name__}: {exc}"))
                    continue
                piece_frames.append(tuple(tracks[c] for c in piece.instruments))
            stacked = torch.zeros(len(rows), length, dtype=dtype)
            for i, r in enumerate(rows):
                stacked[i, : r.numel()] = r
            out.append((piece.instruments, stacked))
            names.append(piece.name)
            if notes:
                piece_notes.append(sources_notes)
        return cls(out, None, sample_rate, names, skipped,
                   piece_frames if frames is not None else None,
                   piece_notes=piece_notes if notes else None)

    @classmethod
    def from_solos(
        cls,
        files: Mapping[str, Sequence[Path]],
        sample_rate: int = 11025,
        progress: bool = False,
        dtype: torch.dtype = torch.float32,
        frames: Callable[[Path, float], FrameTrack] | None = None,
    ) -> StemBank:
        """Read solo recordings (code -> files); unreadable files are skipped.

        ``frames(path, seconds)``: the recording's cached crops (a bank for visual training); a
        file whose frames cannot be read is skipped too.
        """
        read_errors = _read_errors()
        solos: dict[str, list[torch.Tensor]] = {}
        solo_frames: dict[str, list[FrameTrack]] = {}
        skipped: list[tuple[Path, str]] = []
        items = [(c, Path(p)) for c, paths in files.items() for p in paths]
        for code, path in _progress(items, progress, "reading solos"):
            try:
                audio = load_mono(path, sample_rate)
            except read_errors as exc:
                skipped.append((path, f"{type(exc).__name__}: {exc}"))
                continue
            if frames is not None:
                try:
                    solo_frames.setdefault(code, []).append(
                        frames(path, audio.numel() / sample_rate))
                except read_errors as exc:
                    skipped.append((path, f"{type(exc).__name__}: {exc}"))
                    continue
            solos.setdefault(code, []).append(audio.to(dtype))
        return cls(None, solos, sample_rate, None, skipped, None,
                   solo_frames if frames is not None else None)

    @classmethod
    def concat(cls, *banks: StemBank) -> StemBank:
        """One bank holding the pieces and solos of all ``banks`` (same sample rate)."""
        rates = {b.sample_rate for b in banks}
        if len(rates) != 1:
            raise ValueError(f"banks have different sample rates {sorted(rates)}")
        solos: dict[str, list[torch.Tensor]] = {}
        for b in banks:
            for c, v in b.solos.items():
                solos.setdefault(c, []).extend(v)
        visual = all(b.has_frames for b in banks)
        scored = all(b.piece_notes is not None for b in banks)
        solo_frames: dict[str, list[FrameTrack]] = {}
        for b in banks if visual else ():
            for c, v in (b.solo_frames or {}).items():
                solo_frames.setdefault(c, []).extend(v)
        return cls(
            [p for b in banks for p in b.pieces],
            solos,
            rates.pop(),
            [n for b in banks for n in b.names],
            [s for b in banks for s in b.skipped],
            [f for b in banks for f in b.piece_frames or ()] if visual else None,
            solo_frames if visual else None,
            [n for b in banks for n in b.piece_notes or ()] if scored else None,
        )

    @property
    def has_frames(self) -> bool:
        """True when every source has cached player crops (a bank for visual training)."""
        return self.piece_frames is not None or self.solo_frames is not None

    @property
    def device(self) -> torch.device:
        for _, audio in self.pieces:
            return audio.device
        for v in self.solos.values():
            return v[0].device
        return torch.device("cpu")

    def to(self, device: str | torch.device) -> StemBank:
        """A copy with every audio tensor on ``device`` (cached crops stay on the CPU)."""
        return StemBank(
            [(c, a.to(device)) for c, a in self.pieces],
            {c: [a.to(device) for a in v] for c, v in self.solos.items()},
            self.sample_rate,
            self.names,
            self.skipped,
            self.piece_frames,
            self.solo_frames,
            self.piece_notes,
        )

    @property
    def instruments(self) -> tuple[str, ...]:
        """Codes with audio in the bank, in class order."""
        present = set(self.solos) | {c for codes, _ in self.pieces for c in codes}
        return tuple(c for c in CODES if c in present) + tuple(
            sorted(c for c in present if c not in CODES)
        )

    def minutes_per_instrument(self) -> dict[str, float]:
        """Minutes of audio per instrument code (piece sources and solos)."""
        samples: dict[str, int] = {}
        for codes, audio in self.pieces:
            for c in codes:
                samples[c] = samples.get(c, 0) + audio.shape[1]
        for c, v in self.solos.items():
            samples[c] = samples.get(c, 0) + sum(a.numel() for a in v)
        return {c: samples[c] / self.sample_rate / 60.0 for c in self.instruments}

    def __len__(self) -> int:
        return len(self.pieces) + sum(len(v) for v in self.solos.values())


def _piece_notes(piece: Piece) -> tuple[NoteArray, ...]:
    """The notes of each source of a piece (in the order of its codes) from its score."""
    path = score_file(piece)
    if path is None:
        raise CusepError(f"no Sco_*.mid score in {piece.folder}")
    sources = read_score(path, [t.instrument for t in piece.tracks]).sources()
    return tuple(note_array(sources.get(c, ())) for c in piece.instruments)


def _add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if a.numel() < b.numel():
        a, b = b, a
    out = a.clone()
    out[: b.numel()] += b
    return out


@dataclass(frozen=True)
class MixingConfig:
    """How training mixtures are drawn.

    ``ensemble_ratio``: fraction of items from the ensemble sampler (rest mix-and-separate).
    ``gain_db``: per-source gain range (0, 0 = off). ``normalise``: "paper" (each source
    min-max scaled to [-1, 1], mix and targets divided by k) or "rms" (each source at a
    common rms times its gain, the item scaled so the mix peak is <= 0.99).
    ``noise_std``: Gaussian noise added to the mix only. ``min_active``: rms in dBFS below
    which a chosen segment counts as silent and is redrawn (up to ``active_tries`` times;
    None = off). ``ensemble_subset``: draw a random subset of >= ``min_sources`` of a piece's
    sources (else all of them, up to the cap).
    """

    segment: int = 65535
    ensemble_ratio: float = 1.0
    min_sources: int = 2
    max_sources: int = 7
    gain_db: tuple[float, float] = (-6.0, 6.0)
    normalise: Literal["paper", "rms"] = "rms"
    noise_std: float = 0.0
    min_active: float | None = -50.0
    active_tries: int = 4
    ensemble_subset: bool = True
    rms_level_db: float = -20.0
    eq_db: float = 0.0
    """Timbre augmentation: each source through a random smooth EQ of up to +-eq_db dB."""
    unlabelled: float = 0.0
    """Share of items of 2+ sources in which only a random non-empty subset of the sources is
    named (``present``); the others stay in the mix unnamed, as the *rest* that
    ``--instruments vn --rest`` leaves over. Their masks are zeroed by label conditioning, so
    the named masks learn their share of the whole mixture."""
    score: ScorePerturbation = field(default_factory=ScorePerturbation)
    """Score-conditioned training: how each source's notes are perturbed (as alignment errs)."""

    def __post_init__(self) -> None:
        if self.segment < 1:
            raise CusepError(f"segment must be positive, got {self.segment}.")
        if not 0.0 <= self.ensemble_ratio <= 1.0:
            raise CusepError(f"ensemble_ratio must be in [0, 1], got {self.ensemble_ratio}.")
        if not 1 <= self.min_sources <= self.max_sources:
            raise CusepError(
                f"need 1 <= min_sources <= max_sources, got {self.min_sources}, {self.max_sources}."
            )
        if self.gain_db[0] > self.gain_db[1]:
            raise CusepError(f"gain_db must be (low, high), got {self.gain_db}.")
        if self.normalise not in ("paper", "rms"):
            raise CusepError(f"normalise must be 'paper' or 'rms', got '{self.normalise}'.")
        if self.noise_std < 0:
            raise CusepError(f"noise_std must be >= 0, got {self.noise_std}.")
        if not 0.0 <= self.unlabelled <= 1.0:
            raise CusepError(f"unlabelled must be in [0, 1], got {self.unlabelled}.")


@dataclass
class Batch:
    """A batch of mixtures. mix (B, samples); sources (B, K, samples) in class order with
    absent rows zero; present (B, K) float multi-hot; n_sources (B,) long.

    Visual batches also carry every source's player crops, on the CPU until the step moves them:
    crops uint8 (B, P, F, 3, S, S) (P: the most players of any item, F: frames per player; or
    float16 backbone features (B, P, F, Db) for a frozen backbone) and players (B, P) bool, True
    for real players (the rest is padding).

    Batches for score-conditioned training carry each item's notes: ``notes`` one list per item
    of (class index, :data:`~cusep.guide.NoteArray` in seconds from the segment's start, as
    perturbed), for the named sources.
    """

    mix: torch.Tensor
    sources: torch.Tensor
    present: torch.Tensor
    n_sources: torch.Tensor
    crops: torch.Tensor | None = None
    players: torch.Tensor | None = None
    notes: list[list[tuple[int, NoteArray]]] | None = None

    def to(self, device: str | torch.device) -> Batch:
        return Batch(*(t.to(device) if t is not None else None for t in (
            self.mix, self.sources, self.present, self.n_sources, self.crops, self.players)),
            notes=self.notes)


class _Uniforms:
    """Uniform floats in [0, 1) drawn in blocks from a torch generator (one sync per block)."""

    def __init__(self, generator: torch.Generator, block: int = 256) -> None:
        self.generator = generator
        self.block = block
        self.buffer: list[float] = []

    def __call__(self) -> float:
        if not self.buffer:
            self.buffer = torch.rand(
                self.block,
                generator=self.generator,
                device=self.generator.device,
                dtype=torch.float64,
            ).tolist()[::-1]
        return self.buffer.pop()

    def integer(self, n: int) -> int:
        """Uniform in 0..n-1."""
        return min(int(self() * n), n - 1)

    def choose(self, n: int, k: int) -> list[int]:
        """k distinct indices of range(n), in random order (partial Fisher-Yates)."""
        idx = list(range(n))
        for i in range(k):
            j = i + self.integer(n - i)
            idx[i], idx[j] = idx[j], idx[i]
        return idx[:k]


class MixtureSampler:
    """Draws training batches from a StemBank on the bank's device.

    Piece sources whose instrument is not in ``classes`` are left out of ensemble mixtures
    (there is no target row for them). With ``visual`` (the model's VisualConfig) every batch
    also carries the crops of each source's players at the frame times of its segment; the bank
    must then hold frames (:attr:`StemBank.has_frames`). With ``notes`` every batch carries the
    perturbed notes of its sources (:attr:`Batch.notes`); the bank must hold them
    (:attr:`StemBank.piece_notes`) and no solos.
    """

    def __init__(
        self, bank: StemBank, config: MixingConfig, classes: Sequence[str] = CODES,
        visual: VisualConfig | None = None, notes: bool = False,
    ) -> None:
        if visual is not None and not bank.has_frames:
            raise CusepError("a visually conditioned model needs training data with video "
                             "frames (Solos frames/ or URMP Vid_*.mp4 + boxes.json)")
        if notes and (bank.piece_notes is None or bank.solos):
            raise CusepError("a score-conditioned model needs multitrack pieces with their "
                             "scores (URMP layout with Sco_*.mid, as 'cusep synth' writes)")
        self.notes = notes
        self.bank = bank
        self.config = config
        self.visual = visual
        self.classes = tuple(classes)
        self.device = bank.device
        self.max_sources = config.max_sources
        index = {c: i for i, c in enumerate(self.classes)}
        self._stems: list[torch.Tensor] = []
        self._frames: list[FrameTrack | None] = []
        self._notes: list[NoteArray | None] = []
        self._energy: list[torch.Tensor] = []
        self._by_class: dict[int, list[int]] = {}
        # ensemble pool: (class indices, stem ids, length)
        self._pieces: list[tuple[list[int], list[int], int]] = []
        piece_frames = bank.piece_frames or [None] * len(bank.pieces)
        piece_notes = bank.piece_notes or [None] * len(bank.pieces)
        for (codes, audio), frames, notes_ in zip(bank.pieces, piece_frames, piece_notes,
                                                  strict=True):
            cls_ids, stem_ids = [], []
            for row, code in enumerate(codes):
                if code not in index or audio.shape[1] == 0:
                    continue
                sid = self._add_stem(audio[row], index[code], frames[row] if frames else None,
                                     notes_[row] if notes_ else None)
                cls_ids.append(index[code])
                stem_ids.append(sid)
            if len(cls_ids) >= config.min_sources:
                self._pieces.append((cls_ids, stem_ids, audio.shape[1]))
        for code, stems in bank.solos.items():
            frames = (bank.solo_frames or {}).get(code) or [None] * len(stems)
            if code in index:
                for audio, track in zip(stems, frames, strict=True):
                    if audio.numel():
                        self._add_stem(audio, index[code], track)
        if not self._by_class:
            raise CusepError(
                f"no audio for any of the instruments {', '.join(self.classes)} in the data."
            )
        if config.ensemble_ratio > 0 and not self._pieces:
            raise CusepError(
                f"ensemble_ratio={config.ensemble_ratio} needs multitrack pieces with at least "
                f"{config.min_sources} sources (URMP layout); set ensemble_ratio=0 for solo data."
            )
        lengths = torch.tensor([p[2] for p in self._pieces], dtype=torch.float64)
        self._piece_cdf = (lengths.cumsum(0) / lengths.sum()).tolist() if self._pieces else []

    def _add_stem(self, audio: torch.Tensor, class_id: int,
                  frames: FrameTrack | None = None, notes: NoteArray | None = None) -> int:
        sid = len(self._stems)
        self._stems.append(audio)
        self._frames.append(frames)
        self._notes.append(notes)
        n = audio.numel() // _BLOCK * _BLOCK
        blocks = audio[:n].float().reshape(-1, _BLOCK).pow(2).sum(1).double().cpu()
        self._energy.append(torch.cat([torch.zeros(1, dtype=torch.float64), blocks.cumsum(0)]))
        self._by_class.setdefault(class_id, []).append(sid)
        return sid

    def set_max_sources(self, k: int) -> None:
        """Cap the number of sources per mixture (curriculum)."""
        if k < 1:
            raise CusepError(f"max sources must be >= 1, got {k}.")
        self.max_sources = int(k)

    # -- drawing -------------------------------------------------------------------------------

    def _offset(self, sid: int, u: _Uniforms) -> int:
        n = self._stems[sid].numel() - self.config.segment
        return u.integer(n + 1) if n > 0 else 0

    def _rms_db(self, sid: int, offset: int) -> float:
        """Approximate rms in dBFS of the segment at ``offset`` (whole blocks inside it)."""
        energy = self._energy[sid]
        first = -(-offset // _BLOCK)
        last = min((offset + self.config.segment) // _BLOCK, energy.numel() - 1)
        if last <= first:  # segment shorter than a block: count it as active
            return 0.0
        mean = float(energy[last] - energy[first]) / ((last - first) * _BLOCK)
        return 10.0 * math.log10(mean + 1e-20)

    def _k_range(self, available: int) -> tuple[int, int]:
        hi = min(self.max_sources, self.config.max_sources, available)
        return min(self.config.min_sources, hi), hi

    def _random_item(self, u: _Uniforms) -> list[tuple[int, int, int]]:
        classes = sorted(self._by_class)
        lo, hi = self._k_range(len(classes))
        k = lo + u.integer(hi - lo + 1)
        item = []
        for c in (classes[i] for i in u.choose(len(classes), k)):
            stems = self._by_class[c]
            best = None
            for _ in range(max(1, self.config.active_tries)):
                sid = stems[u.integer(len(stems))]
                off = self._offset(sid, u)
                if self.config.min_active is None:
                    best = (0.0, sid, off)
                    break
                level = self._rms_db(sid, off)
                if best is None or level > best[0]:
                    best = (level, sid, off)
                if level >= self.config.min_active:
                    break
            assert best is not None
            item.append((c, best[1], best[2]))
        return item

    def _ensemble_item(self, u: _Uniforms) -> list[tuple[int, int, int]]:
        x = u()
        p = next((i for i, c in enumerate(self._piece_cdf) if x < c), len(self._pieces) - 1)
        cls_ids, stem_ids, length = self._pieces[p]
        n = len(cls_ids)
        lo, hi = self._k_range(n)
        k = lo + u.integer(hi - lo + 1) if self.config.ensemble_subset else hi
        chosen = u.choose(n, k)
        span = length - self.config.segment
        best = None
        for _ in range(max(1, self.config.active_tries)):
            off = u.integer(span + 1) if span > 0 else 0
            if self.config.min_active is None:
                best = (0, off)
                break
            active = sum(self._rms_db(stem_ids[i], off) >= self.config.min_active for i in chosen)
            if best is None or active > best[0]:
                best = (active, off)
            if active == k:
                break
        assert best is not None
        return [(cls_ids[i], stem_ids[i], best[1]) for i in chosen]

    def draw(self, batch_size: int, generator: torch.Generator) -> Batch:
        """One batch, deterministic given ``generator``'s state; tensors on the bank's device."""
        cfg = self.config
        u = _Uniforms(generator)
        items = [
            self._ensemble_item(u)
            if self._pieces and u() < cfg.ensemble_ratio
            else self._random_item(u)
            for _ in range(batch_size)
        ]
        n_classes, length = len(self.classes), cfg.segment
        items = [sorted(item) for item in items]  # class order, so both sums add alike
        slots = max(len(item) for item in items)
        # compact (B, slots, L) work tensor: only the chosen sources, padded with zero rows
        raw = torch.zeros(batch_size, slots, length, device=self.device)
        cls = torch.zeros(batch_size, slots, dtype=torch.long)
        used = torch.zeros(batch_size, slots, dtype=torch.bool)
        for b, item in enumerate(items):
            for s, (c, sid, off) in enumerate(item):
                seg = self._stems[sid][off : off + length]
                raw[b, s, : seg.numel()] = seg
                cls[b, s] = c
                used[b, s] = True
        n_sources = used.sum(1).to(self.device)
        if cfg.eq_db > 0:
            raw = random_eq(raw, cfg.eq_db, generator)
        lo, hi = cfg.gain_db
        u_gain = torch.rand(batch_size, n_classes, generator=generator, device=generator.device)
        gain_db = lo + (hi - lo) * u_gain.cpu().gather(1, cls)
        gain = (10.0 ** (gain_db / 20.0) * used).to(self.device).unsqueeze(-1)
        if cfg.normalise == "paper":
            mn = raw.amin(-1, keepdim=True)
            spread = raw.amax(-1, keepdim=True) - mn
            scaled = torch.where(
                spread > 1e-8, 2.0 * (raw - mn) / spread.clamp_min(1e-8) - 1.0, 0.0
            )
            k = n_sources.clamp_min(1).view(-1, 1, 1).to(raw.dtype)
            compact = scaled * (gain / k)
        else:
            rms = raw.pow(2).mean(-1, keepdim=True).sqrt().clamp_min(1e-4)
            compact = raw * (gain * 10.0 ** (cfg.rms_level_db / 20.0) / rms)
            peak = compact.sum(1).abs().amax(-1).view(-1, 1, 1)
            compact = compact * torch.clamp(0.99 / peak.clamp_min(1e-8), max=1.0)
        mix = compact.sum(1)
        sources = torch.zeros(batch_size, n_classes, length, device=self.device)
        rows = (torch.arange(batch_size).unsqueeze(1) * n_classes + cls)[used]
        sources.view(-1, length)[rows.to(self.device)] = compact[used.to(self.device)]
        present = torch.zeros(batch_size, n_classes)
        present[torch.arange(batch_size).unsqueeze(1).expand_as(cls)[used], cls[used]] = 1.0
        if cfg.unlabelled > 0:
            self._unname(items, present, u)
        if cfg.noise_std > 0:
            noise = torch.randn(batch_size, length, generator=generator, device=generator.device)
            mix = mix + cfg.noise_std * noise.to(self.device)
        crops, players = self._crops(items) if self.visual is not None else (None, None)
        notes = self._perturbed_notes(items, present, u) if self.notes else None
        return Batch(mix, sources, present.to(self.device), n_sources, crops, players, notes)

    def _perturbed_notes(self, items: list[list[tuple[int, int, int]]], present: torch.Tensor,
                         u: _Uniforms) -> list[list[tuple[int, NoteArray]]]:
        """The named sources' notes in each item's segment, perturbed (``config.score``)."""
        rate, length = self.bank.sample_rate, self.config.segment / self.bank.sample_rate
        named = present.bool().tolist()
        return [[(c, perturb_notes(self._notes[sid], off / rate, length, self.config.score, u))
                 for c, sid, off in item if named[b][c]]
                for b, item in enumerate(items)]

    def _unname(self, items: list[list[tuple[int, int, int]]], present: torch.Tensor,
                u: _Uniforms) -> None:
        """Unname all but a random non-empty subset of the sources of ``unlabelled`` of the
        items (present (B, K) is changed in place)."""
        for b, item in enumerate(items):
            if len(item) < 2 or u() >= self.config.unlabelled:
                continue
            keep = 1 + u.integer(len(item) - 1)
            for i in u.choose(len(item), len(item) - keep):
                present[b, item[i][0]] = 0.0

    def _crops(self, items: list[list[tuple[int, int, int]]]) -> tuple[torch.Tensor, torch.Tensor]:
        """The players of every chosen source at its segment's frame times -> crops uint8
        (B, P, F, 3, S, S) (or cached features (B, P, F, Db)) and players (B, P) bool, on the
        CPU."""
        assert self.visual is not None
        rate = self.bank.sample_rate
        offsets = self.visual.frame_offsets()
        per_item = [
            torch.cat([self._frames[sid].at([off / rate + o for o in offsets])
                       for _, sid, off in item])
            for item in items
        ]
        slots = max(x.shape[0] for x in per_item)
        crops = torch.zeros(len(items), slots, *per_item[0].shape[1:], dtype=per_item[0].dtype)
        players = torch.zeros(len(items), slots, dtype=torch.bool)
        for b, x in enumerate(per_item):
            crops[b, : x.shape[0]] = x
            players[b, : x.shape[0]] = True
        return crops, players


def random_eq(x: torch.Tensor, max_db: float, generator: torch.Generator,
              points: int = 8) -> torch.Tensor:
    """Each signal of x (..., L) through its own smooth random EQ: gains uniform in
    [-max_db, max_db] at ``points`` frequencies spaced evenly in log-frequency, linear in dB
    between them."""
    spec = torch.fft.rfft(x)
    bins = spec.shape[-1]
    gains = (torch.rand(*x.shape[:-1], points, generator=generator, device=generator.device)
             * 2 - 1).to(x.device) * max_db
    # position of every bin on the control-point axis (log-frequency, bin 1 .. Nyquist)
    pos = torch.log(torch.arange(bins, device=x.device).clamp_min(1).float())
    pos = pos / pos[-1] * (points - 1)
    lo = pos.floor().long().clamp(max=points - 2)
    w = pos - lo
    curve = gains[..., lo] * (1 - w) + gains[..., lo + 1] * w
    return torch.fft.irfft(spec * 10.0 ** (curve / 20.0), n=x.shape[-1])


def report_skipped(bank: StemBank) -> None:
    """Warn once per file the bank could not read."""
    for path, reason in bank.skipped:
        warnings.warn(f"skipped unreadable audio {path}: {reason}", stacklevel=2)
