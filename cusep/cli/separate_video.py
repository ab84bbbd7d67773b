"""``cusep separate VIDEO --boxes boxes.json``: one stem per player of a video."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from ..errors import CusepError
from ..separate import Separator
from ..video_separate import (
    PlayerPlan,
    assign_players,
    open_video,
    plan_instruments,
    player_stems,
    separate_stems,
)
from .common import Output, console, detected_line, file_progress, model_label, write_stems

METHODS = {
    "boxes": "instruments named in the boxes",
    "motion": "players matched to stems by motion",
    "visual": "visual conditioning on the players' crops",
}


OVERLAY_EXTENSIONS = (".mp4", ".mkv", ".mov")


def separate_players(sep: Separator, path: Path, boxes: Path,
                     instruments: str | Sequence[str] | None, detector: str | None,
                     overlay: Path | None, output: Output) -> None:
    """Separate one video into one stem per player, print the assignment, write the stems (and
    the overlay video). Raises CusepError before anything is written when the input is bad."""
    start = time.perf_counter()
    if overlay is not None and overlay.suffix.lower() not in OVERLAY_EXTENSIONS:
        raise CusepError(f"--overlay {overlay} is not a video file name; end it with "
                         f"{', '.join(OVERLAY_EXTENSIONS)}")
    video = open_video(path, boxes)
    if overlay is not None and overlay.resolve() == path.resolve():
        raise CusepError(f"--overlay {overlay} would overwrite the input video; choose "
                         "another file name")
    if overlay is not None and overlay.exists() and not output.force:
        raise CusepError(f"{overlay} exists; use --force to overwrite it")
    instrument_plan = plan_instruments(video, sep, instruments, detector)
    codes = instrument_plan.codes
    if instrument_plan.detection is not None:
        console.print(detected_line(path, instrument_plan.detection), soft_wrap=True)
    console.print(f"model [bold]{escape(model_label(sep))}[/] on [bold]{sep.device}[/] "
                  f"({sep.precision}), {len(video.players)} players, instruments "
                  f"{', '.join(codes)}", soft_wrap=True)
    with file_progress(path.name, video.audio.shape[-1]) as update:
        stems = separate_stems(sep, video, codes, progress=update)
    plan = assign_players(video, instrument_plan, stems)
    console.print(assignment_table(plan))
    for note in plan.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)
    labels = plan.labels()
    paths = output.paths(path, labels)
    existing = [p for p in paths.values() if p.exists()]
    if existing and not output.force:
        raise CusepError(f"{existing[0]} exists; use --force to overwrite it")
    try:
        output.folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CusepError(f"cannot create output folder '{output.folder}' "
                         f"({exc.strerror or exc}); choose a writable --out") from None
    by_player = player_stems(plan, stems)
    block = [by_player[label] for label in labels]
    write_stems(iter([block]), paths, video.rate, video.audio.shape[0], output)
    stems_done = time.perf_counter()
    if overlay is not None:
        from ..video import write_overlay

        write_overlay(path, overlay, plan.players,
                      {p.index: label for p, label in zip(plan.players, labels, strict=True)})
    end = time.perf_counter()
    where = paths[labels[0]].parent
    console.print(f"[green]ok[/] {escape(str(path))} -> {escape(str(where))} "
                  f"({len(labels)} player stems in {stems_done - start:.1f} s)"
                  + (f", overlay {escape(str(overlay))} in {end - stems_done:.1f} s"
                     if overlay else ""), soft_wrap=True)


def assignment_table(plan: PlayerPlan) -> Table:
    """Player, box, instrument and (when matched by motion) the match scores."""
    table = Table(title=f"players ({METHODS[plan.method]})")
    for col in ("player", "box (x, y, w, h)", "instrument", "how"):
        table.add_column(col)
    if plan.score is not None:
        table.add_column("motion match")
    for i, p in enumerate(plan.players):
        row = [escape(p.name), ", ".join(str(v) for v in p.box), plan.code_of(i), plan.source[i]]
        if plan.score is not None:
            row.append(f"{plan.score[i, plan.stem[i]]:+.2f}" if plan.source[i] == "motion"
                       else "")
        table.add_row(*row)
    return table
