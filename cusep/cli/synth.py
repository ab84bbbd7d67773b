"""``cusep synth``: render training/test pieces from the music21 corpus with FluidSynth."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console

from ..instruments import CODES


def register(app: typer.Typer) -> None:
    """Add the ``synth`` command to ``app``."""

    @app.command("synth")
    def synth_cmd(
        out_dir: Path = typer.Argument(..., help="Output folder (URMP layout)."),
        split: str = typer.Option("train", "--split", help="train, valid or test (by work)."),
        fonts: str = typer.Option(
            "fluidr3", "--fonts",
            help="Comma list of SoundFonts used in turn per piece: fluidr3, fluidr3mono, "
                 "musescore, timgm6mb, .sf2/.sf3 paths, or sample banks of real recorded notes: "
                 "samples ($CUSEP_SAMPLES) or a folder with a manifest.json.",
        ),
        instruments: str = typer.Option(",".join(CODES), "--instruments",
                                        help="Comma list of instrument codes."),
        min_players: int = typer.Option(2, "--min-players", help="Fewest players per piece."),
        max_players: int = typer.Option(4, "--max-players", help="Most players (up to 7)."),
        minutes: float = typer.Option(10.0, "--minutes-per-instrument",
                                      help="Minutes of audio each instrument gets at least."),
        max_pieces: int = typer.Option(0, "--max-pieces",
                                       help="Stop after N pieces (0: no limit)."),
        sample_rate: int = typer.Option(11025, "--sample-rate", help="Output sample rate (Hz)."),
        seed: int = typer.Option(0, "--seed", help="Seed: same seed and options, same files."),
        jobs: int = typer.Option(1, "--jobs", "-j", help="Parallel processes."),
        reverb: float = typer.Option(0.0, "--reverb",
                                     help="Share of pieces with reverb (0..1); 0 = all dry."),
        excerpt_seconds: float = typer.Option(30.0, "--excerpt-seconds",
                                              help="Length of excerpts cut from works."),
        sources: str = typer.Option(
            "bach,haydn,mozart,beethoven,trecento,monteverdi", "--sources",
            help="music21 corpus sources (also: palestrina).",
        ),
        timbre_shift: int = typer.Option(
            0, "--timbre-shift",
            help="Timbre augmentation: render each player transposed by a random -N..N "
                 "semitones and resample it back (other samples of the font, notes and timing "
                 "unchanged; 0: off).",
        ),
        mic_eq: float = typer.Option(
            0.0, "--mic-eq", help="Microphone colour: a smooth random EQ of up to +-DB dB and "
                                  "a 40-120 Hz high-pass per player (0: off)."),
        room: float = typer.Option(
            0.0, "--room", help="Share of pieces recorded in a mild room (0..1): one room per "
                                "piece, one position per player, mostly near-dry."),
        noise_floor: float = typer.Option(
            0.0, "--noise-floor", help="A noise floor per player about DB dB below its level "
                                       "(0: off; e.g. 55)."),
        level_spread: float = typer.Option(
            0.0, "--level-spread", help="Player levels vary by up to +-DB dB (0: off)."),
        humanise: bool = typer.Option(True, "--humanise/--no-humanise",
                                      help="Tempo drift, timing jitter, dynamics, vibrato."),
        distinct: bool = typer.Option(True, "--distinct/--repeat-instruments",
                                      help="Distinct instruments within a piece."),
        video: bool = typer.Option(
            False, "--video/--no-video",
            help="Also render Vid_<piece>.mp4 (players side by side, each moving with its own "
                 "note onsets and loudness; h264 + AAC of the mix) and boxes.json per piece.",
        ),
        resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run."),
        force: bool = typer.Option(False, "--force", help="Replace an existing set."),
    ) -> None:
        """Render multitrack chamber music from the music21 corpus.

        Stems and their exact mix, in the URMP layout."""
        from ..data.synth import SynthConfig, render_dataset

        config = SynthConfig(
            split=split.strip().lower(),
            fonts=tuple(f.strip() for f in fonts.split(",") if f.strip()),
            instruments=tuple(i for i in instruments.split(",") if i.strip()),
            min_players=min_players,
            max_players=max_players,
            minutes_per_instrument=minutes,
            sample_rate=sample_rate,
            seed=seed,
            excerpt_seconds=excerpt_seconds,
            reverb=reverb,
            humanise=humanise,
            distinct=distinct,
            sources=tuple(s.strip().lower() for s in sources.split(",") if s.strip()),
            max_pieces=max_pieces,
            video=video,
            timbre_shift=timbre_shift,
            mic_eq_db=mic_eq,
            room=room,
            noise_db=noise_floor,
            level_db=level_spread,
            jobs=jobs,
            resume=resume,
            force=force,
        )
        start = time.perf_counter()
        manifest = render_dataset(out_dir, config, progress=True)
        minutes_done = manifest["minutes_per_instrument"]
        console = Console(highlight=False)
        console.print(
            f"{len(manifest['pieces'])} pieces in {out_dir} "
            f"({time.perf_counter() - start:.0f} s); minutes per instrument: "
            + ", ".join(f"{c} {m:.1f}" for c, m in minutes_done.items())
        )
