"""``cusep align``: move a score's notes onto the time of its recording."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from ..errors import CusepError
from .common import console


def register(app: typer.Typer) -> None:
    @app.command()
    def align(
        recording: Path = typer.Argument(..., help="The recording (audio or video file)."),
        score: Path = typer.Option(..., "--score", help="Its score: .mid, .musicxml or .mxl."),
        out: Path = typer.Option(..., "--out", "-o", help="The aligned score to write (.mid)."),
        instruments: str = typer.Option(
            None, "--instruments", "-i",
            help="The parts' instruments in part order, e.g. 'vn,vn,va,vc' (default: from "
                 "the parts' MIDI programs or names)."),
        reference: str = typer.Option(
            "auto", "--reference",
            help="The score's side: render (FluidSynth), notes, or auto (render when "
                 "FluidSynth and a SoundFont are installed)."),
        force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
    ) -> None:
        """Move a score's notes onto its recording; write MIDI."""
        from ..align import aligned_score
        from ..audio import read_audio
        from ..score import MIDI_SUFFIXES, read_score, write_midi

        if out.suffix.lower() not in MIDI_SUFFIXES:
            raise CusepError(f"--out {out} is not a MIDI file name; end it with .mid")
        if out.exists() and not force:
            raise CusepError(f"{out} exists; use --force to overwrite it")
        if out.resolve() == score.resolve():
            raise CusepError(f"--out {out} is the input score; choose another file name")
        if reference not in ("auto", "render", "notes"):
            raise CusepError(f"unknown --reference '{reference}'; auto, render or notes")
        parsed = read_score(score, instruments)
        audio, rate = read_audio(recording)
        result, alignment = aligned_score(parsed, audio, rate, reference)
        write_midi(result, out)
        notes = sum(len(p.notes) for p in result.parts)
        parts = ", ".join(p.code for p in result.parts)
        console.print(f"aligned {notes} notes of {len(result.parts)} part(s) ({parts}) to "
                      f"{escape(str(recording))}: confidence {alignment.confidence:.2f} "
                      f"(mean feature similarity along the path; score {alignment.reference}) "
                      f"-> {escape(str(out))}",
                      soft_wrap=True)
