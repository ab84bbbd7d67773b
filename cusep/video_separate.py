"""From a video and a box per player to one stem per player.

Three ways, chosen automatically (and reported in :attr:`PlayerPlan.method`):

``boxes``   every box names its instrument: label conditioning with those instruments, each
            player gets the stem of the instrument in its box;
``motion``  some or all boxes lack an instrument and the model is audio-only: the instruments
            come from ``instruments`` (or are detected in the audio), the audio is separated,
            and each player is matched to a stem by comparing the stem's onsets with the motion
            in the player's box (:mod:`cusep.players`);
``visual``  the model is conditioned on the players' pictures (a visual preset): the network sees
            the crops of every box; the players' instruments come from the boxes, else from the
            model's own per-player instrument probabilities, else from motion matching.

Players of the same instrument share its stem (the plan says so). Stems are kept in memory:
(instruments x channels x samples) float32 at the input rate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .audio import read_audio, resample, to_mono
from .errors import CusepError
from .instruments import parse_instruments
from .players import Assignment, match_players
from .separate import Progress, Separator, is_auto
from .video import Player, VideoInfo, load_boxes, motion_energy, video_info

if TYPE_CHECKING:
    from .detect import Detector

MATCH_RATE = 11025
"""Rate of the mono stems used for onset matching."""


@dataclass(frozen=True)
class PlayerPlan:
    """How the players of one video got their stems.

    ``codes``: the instruments separated (stem order); ``stem``: per player, an index into
    ``codes``; ``score`` (P, K): motion/onset similarity when matching was used.
    """

    players: tuple[Player, ...]
    codes: tuple[str, ...]
    stem: tuple[int, ...]
    method: str
    source: tuple[str, ...]
    """Per player: where its instrument came from (``box``, ``visual`` or ``motion``)."""
    score: np.ndarray | None = None
    notes: tuple[str, ...] = field(default=())

    def code_of(self, player: int) -> str:
        """Instrument code of the 0-based ``player``."""
        return self.codes[self.stem[player]]

    def labels(self) -> tuple[str, ...]:
        """File-name stems, one per player: ``player<k>_<code>``."""
        return tuple(replace(p, code=self.code_of(i)).label for i, p in enumerate(self.players))


@dataclass(frozen=True)
class VideoInput:
    """A video, its audio and its players (boxes validated against the frame size)."""

    path: Path
    info: VideoInfo
    players: tuple[Player, ...]
    audio: np.ndarray
    """(channels, samples) float32 at ``rate``."""
    rate: int


def open_video(path: str | Path, boxes: str | Path) -> VideoInput:
    """Read a video's audio track and its boxes; CusepError when either is unusable."""
    path = Path(path)
    info = video_info(path)
    if not info.has_audio:
        raise CusepError(f"{path}: the video has no audio track; nothing to separate")
    players = load_boxes(boxes, info.width, info.height)
    audio, rate = read_audio(path)
    return VideoInput(path, info, tuple(players), audio, rate)


def _fixed_codes(players: Sequence[Player], instruments: str | Sequence[str] | None,
                 ) -> tuple[str, ...] | None:
    """Instruments fixed by ``instruments`` (None when not given or 'auto'); boxes that name an
    instrument must agree with it."""
    if instruments is None or is_auto(instruments):
        return None
    codes = parse_instruments(instruments)
    named = {p.code for p in players if p.code}
    extra = sorted(named - set(codes))
    if extra:
        raise CusepError(f"boxes name {', '.join(extra)} but --instruments says "
                         f"{', '.join(codes)}; make them agree (or leave out --instruments)")
    return codes


@dataclass(frozen=True)
class InstrumentPlan:
    """What to separate and where each player's instrument comes from.

    ``codes``: the instruments to separate; ``known``: player (0-based) -> code for the players
    whose instrument is known before separating; ``source``: per player, ``box``, ``visual``
    (named by a final-multiply visual model) or ``motion`` (to be matched); ``detection``: the
    DetectionResult when the instruments were detected in the audio, else None; ``notes``: what
    the user should know (e.g. detections left out because there are fewer boxes).
    """

    codes: tuple[str, ...]
    method: str
    known: Mapping[int, str]
    source: tuple[str, ...]
    detection: Any = None
    notes: tuple[str, ...] = ()


def plan_instruments(video: VideoInput, sep: Separator,
                     instruments: str | Sequence[str] | None = None,
                     detector: str | Path | Detector | None = None) -> InstrumentPlan:
    """The instruments to separate and how the players will get them: ``boxes`` when every box
    names its instrument, ``visual`` for a visual model, else ``motion``."""
    players = video.players
    given = _fixed_codes(players, instruments)
    visual = _is_visual(sep)
    known = {i: p.code for i, p in enumerate(players) if p.code}
    source = ["box" if p.code else "motion" for p in players]
    method = "visual" if visual else ("boxes" if len(known) == len(players) else "motion")
    if visual and given is None and len(known) < len(players) \
            and sep.model.instrument_head is not None:
        for i, code in name_players(video, sep).items():  # the model says what they play
            known.setdefault(i, code)
            source[i] = "box" if source[i] == "box" else "visual"
    named = tuple(dict.fromkeys(known.values()))
    detection = None
    notes: list[str] = []
    if len(known) == len(players):
        codes = named
    elif given is not None:
        codes = tuple(dict.fromkeys((*named, *given)))
    else:
        from .detect import Detector

        if not isinstance(detector, Detector):
            detector = Detector(detector, device=sep.device)
        detection = detector.detect(video.audio, video.rate)
        if not detection.detected and not named:
            raise CusepError(f"{detection.nothing_detected(str(video.path))}; name the "
                             "instruments in boxes.json or with --instruments")
        extra = [c for c in detection.confidences() if c in detection.detected
                 and c not in named]  # most probable first
        free = len(players) - len(known)
        if len(extra) > free:  # more instruments than unnamed players: keep the likeliest
            notes.append(f"detected {len(extra) + len(named)} instruments for "
                         f"{len(players)} boxes; kept the {free} most probable unnamed "
                         f"({', '.join(extra[:free])}), left out {', '.join(extra[free:])}")
            extra = extra[:free]
        codes = tuple(dict.fromkeys((*named, *(c for c in detection.detected if c in extra))))
    return InstrumentPlan(sep.check_instruments(codes), method, known, tuple(source), detection,
                          tuple(notes))


def name_players(video: VideoInput, sep: Separator, views: int = 8) -> dict[int, str]:
    """Player (0-based) -> the instrument a final-multiply visual model finds most probable in
    the player's crops (mean over ``views`` windows spread over the video)."""
    from .video import frame_provider

    config = sep.model.config.visual
    span = max(video.info.duration - config.frame_offsets()[-1], 0.0)
    starts = np.linspace(0.0, span, views)
    crops, _ = frame_provider(video.path, video.players, config)(starts)
    with torch.inference_mode():
        probs = sep.model.player_probabilities(crops.to(sep.device)).float().mean(0).cpu()
    classes = sep.model.config.instruments
    return {i: classes[int(probs[i].argmax())] for i in range(len(video.players))}


def _is_visual(sep: Separator) -> bool:
    return sep.model.config.visual is not None


def assign_players(video: VideoInput, plan: InstrumentPlan, stems: np.ndarray) -> PlayerPlan:
    """Give every player a stem. stems (K, channels, samples) at ``video.rate``, in
    ``plan.codes`` order. Players with a known instrument keep it; the others are matched by
    motion."""
    players, codes = video.players, plan.codes
    fixed = {i: codes.index(c) for i, c in plan.known.items()}
    notes = list(plan.notes)
    score = None
    if len(fixed) == len(players):
        result = Assignment(tuple(fixed[i] for i in range(len(players))),
                            np.zeros((len(players), len(codes))))
    else:
        times, motion = motion_energy(video.path, players)
        mono = resample(np.stack([to_mono(s) for s in stems]), video.rate, MATCH_RATE)
        result = match_players(motion, mono, MATCH_RATE, times, fixed)
        score = result.score
        if len(codes) > len(players):
            notes.append(f"{len(codes)} instruments ({', '.join(codes)}) but "
                         f"{len(players)} boxes; add a box per player or name the instruments")
    for k, group in result.shared().items():
        names = ", ".join(players[p].name for p in group)
        notes.append(f"{names} play {codes[k]} and share its stem")
    for k in result.unmatched():
        notes.append(f"no box matched {codes[k]}: its stem is not written")
    return PlayerPlan(players, codes, result.stem, plan.method, plan.source, score, tuple(notes))


def separate_video(video: str | Path, boxes: str | Path,
                   instruments: str | Sequence[str] | None = None,
                   model: str | Path | Separator | None = None,
                   detector: str | Path | None = None, device: str = "auto",
                   ) -> tuple[dict[str, np.ndarray], PlayerPlan]:
    """One stem per player of a video.

    -> ({label: stem (channels, samples) at the video's audio rate}, plan); labels such as
    ``player1_vn`` come from :meth:`PlayerPlan.labels`.
    """
    sep = model if isinstance(model, Separator) else Separator(model, device=device)
    vid = open_video(video, boxes)
    instrument_plan = plan_instruments(vid, sep, instruments, detector)
    stems = separate_stems(sep, vid, instrument_plan.codes)
    plan = assign_players(vid, instrument_plan, stems)
    return player_stems(plan, stems), plan


def separate_stems(sep: Separator, video: VideoInput, codes: tuple[str, ...],
                   progress: Progress | None = None) -> np.ndarray:
    """Separate the video's audio -> (K, channels, samples) in ``codes`` order."""
    if _is_visual(sep):
        from .video import frame_provider

        provider = frame_provider(video.path, video.players, sep.model.config.visual)
        blocks = sep.iter_blocks(video.audio, video.rate, codes, progress, visual=provider)
    else:
        blocks = sep.iter_blocks(video.audio, video.rate, codes, progress)
    return np.concatenate(list(blocks), axis=-1)


def player_stems(plan: PlayerPlan, stems: np.ndarray) -> dict[str, np.ndarray]:
    """{player label: its stem (channels, samples)} from the separated stems (K, C, N)."""
    return {label: stems[plan.stem[i]] for i, label in enumerate(plan.labels())}
