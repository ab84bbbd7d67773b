"""Stand-in scores for URMP-layout pieces that have none: each player's notes tracked from its
true stem, written as ``Sco_<piece>.mid`` in the piece's folder (for ``cusep eval --score``).

f0 per 10 ms frame (torchaudio's NCCF pitch detector, limited to the instrument's range),
voiced where the stem is within 30 dB of its peak level, rounded to MIDI; runs of one pitch of
at least 80 ms become notes. Tracked notes hold what was played (and tracking errors), not what
a printed score says: a proxy, not a score. Work on a copy of the data:

    cp -r ../shared/data/urmp-dev ~/.cache/cusep/data/urmp-dev-tracked
    python scripts/track_scores.py ~/.cache/cusep/data/urmp-dev-tracked
    cusep eval urmp ~/.cache/cusep/data/urmp-dev-tracked --protocol full --no-bss --score aligned
"""

import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from cusep.instruments import BY_CODE
from cusep.score import Score, ScoreNote, ScorePart, write_midi

root = Path(sys.argv[1])
for piece in sorted(p for p in root.iterdir() if p.is_dir()):
    parts = []
    for f in sorted(piece.glob("AuSep_*.wav")):
        code = f.name.split("_")[2]
        x, r = sf.read(f, dtype="float32")
        x = x if x.ndim == 1 else x.mean(1)
        inst = BY_CODE[code]
        lo = 440 * 2 ** ((inst.low - 69) / 12) * 0.9
        hi = min(440 * 2 ** ((inst.high - 69) / 12) * 1.1, 3000)
        f0 = AF.detect_pitch_frequency(torch.from_numpy(x), r, frame_time=0.01, win_length=5,
                                       freq_low=int(lo), freq_high=int(hi)).numpy()
        hop = len(x) / len(f0)
        frames = np.arange(len(f0))
        rms = np.array([np.sqrt(np.mean(x[int(i * hop):int(i * hop + hop)] ** 2) + 1e-12)
                        for i in frames])
        voiced = 20 * np.log10(rms / rms.max()) > -30
        midi = np.where(voiced, np.round(69 + 12 * np.log2(np.maximum(f0, 1) / 440)), -1)
        notes, start = [], 0
        for i in range(1, len(midi) + 1):
            if i == len(midi) or midi[i] != midi[start]:
                if midi[start] >= 0 and (i - start) * hop / r >= 0.08:
                    notes.append(ScoreNote(start * hop / r, i * hop / r, int(midi[start])))
                start = i
        parts.append(ScorePart(f.stem, inst.program, code, tuple(notes)))
        print(piece.name, code, len(notes), "notes")
    write_midi(Score(piece / "Sco.mid", tuple(parts)), piece / f"Sco_{piece.name}.mid")
