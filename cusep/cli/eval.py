"""``cusep eval``: score a model on URMP-layout data (``urmp``, ``synth``) and compare runs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape

from ..atomic import write_text
from ..errors import CusepError
from ..progress import progress_bar
from .common import console
from .options import (
    BATCH_SIZE,
    MIX_FLOOR,
    OVERLAP,
    REFERENCE_METHODS,
    WIENER_ITERATIONS,
    Precision,
    Protocol,
    device_option,
)

if TYPE_CHECKING:  # torch, the metrics and matplotlib load only when an evaluation runs
    from ..checkpoint import ModelDir
    from ..data.urmp import Piece
    from ..evaluate import EvalConfig, EvalResult


def _references(text: str) -> tuple[str, ...]:
    items = [t.strip().lower() for t in text.split(",") if t.strip()]
    return () if items in ([], ["none"]) else tuple(dict.fromkeys(items))


def _run(kind: str, data: Path, model: str | None, protocol: str, out: Path | None,
         reference: str, pes: bool, save_stems: bool, jobs: int, device: str, iterations: int,
         overlap: float, batch_size: int, precision: str, raw: bool, window: float,
         split: str | None, plots: bool, mix_floor: float, rest: bool, bss: bool,
         score: str = "none", score_warp: float = 0.1, score_prior: str = "harmonic"
         ) -> None:
    from .. import report
    from ..checkpoint import resolve_model
    from ..evaluate import EvalConfig, select_pieces

    config = EvalConfig(protocol=protocol, references=_references(reference), pes=pes,
                        wiener_iterations=iterations, overlap=overlap, batch_size=batch_size,
                        precision=precision, residual=not raw, window=window,
                        save_stems=save_stems, mix_floor=mix_floor, rest=rest, bss=bss,
                        score=score, score_warp=score_warp, score_prior=score_prior)
    mdir = resolve_model(model)
    pieces, notes = select_pieces(data, split)
    for note in notes:
        console.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)
    data_name = Path(data).expanduser().resolve().name
    out = out or Path("eval") / f"{mdir.path.name}-{data_name}-{protocol}"
    console.print(f"evaluating [bold]{escape(mdir.path.name)}[/] on {len(pieces)} piece(s) of "
                  f"{escape(str(data))} ({kind}, {protocol} protocol, references: "
                  f"{', '.join(config.references) or 'none'}) -> {escape(str(out))}"
                  + ("; tails shorter than a segment are dropped, as in the paper"
                     if protocol == "paper" else ""), soft_wrap=True)
    if config.pes and mdir.model_config.conditioned:
        console.print("[yellow]note:[/] --pes requests every instrument of the model, so a "
                      "conditioned model is told that all of them play", soft_wrap=True)
    start = time.perf_counter()
    result = _evaluate_with_progress(pieces, mdir, out, config, data, kind, split,
                                     device, jobs)
    for piece, reason in result.skipped:
        console.print(f"[yellow]skipped[/] {escape(piece)}: {escape(reason)}", soft_wrap=True)
    errors = {r["piece"]: r["align_ms"] for r in result.records if r.get("align_ms") is not None}
    if errors:
        import numpy as np

        console.print(f"score alignment: median onset error {np.median(list(errors.values())):.0f}"
                      f" ms over {len(errors)} piece(s) (per piece: median over its notes)",
                      soft_wrap=True)
    if not result.records:
        raise CusepError(f"no piece could be evaluated ({len(result.skipped)} skipped); "
                         "see the lines above")
    json_path, csv_path = report.write_results(out, result)
    grids = report.summary_grids(result.records, result.settings)
    grids += [report.group_grid(result.records, by, "si_sdr", result.settings)
              for by in ("instrument", "n_sources")]
    write_text(out / "summary.md", report.markdown_report(grids, result.settings))
    stdout = _stdout()
    for grid in grids:
        stdout.print(grid.rich())
    if plots:
        made = [report.box_plots(result.records, out / f"by_{by}.png", by,
                                 settings=result.settings) for by in ("instrument", "n_sources")]
        report.sources_plot(result.records, out / "sources_vs_references.png",
                            settings=result.settings)  # None without references
        if any(p is None for p in made):
            console.print("[yellow]note:[/] matplotlib is not installed: no box plots "
                          "(pip install 'cusep[eval]')")
    console.print(
        f"{len(result.computed)} piece(s) computed, {len(result.cached)} from cache, "
        f"{len(result.skipped)} skipped in {time.perf_counter() - start:.1f} s; results in "
        f"{escape(str(json_path))} and {escape(csv_path.name)}", soft_wrap=True)


def _stdout() -> Console:
    """Tables go to stdout, wide enough for a paper-style table when not a terminal."""
    out = Console(highlight=False)
    return out if out.is_terminal else Console(highlight=False, width=max(out.width, 140))


def _evaluate_with_progress(pieces: list[Piece], model: ModelDir, out: Path, config: EvalConfig,
                            data: Path, kind: str, split: str | None, device: str,
                            jobs: int) -> EvalResult:
    from ..evaluate import PieceOutcome, evaluate
    from ..runtime import resolve_device, tune_cpu_allocator

    if resolve_device(device).type == "cpu":
        tune_cpu_allocator()  # a process-wide setting: the entry point's to make
    terminal = console.is_terminal
    with progress_bar(console=console, transient=True, disable=not terminal) as bar:
        task = bar.add_task("pieces", total=len(pieces))

        def progress(outcome: PieceOutcome, done: int, total: int) -> None:
            bar.update(task, completed=done, description=escape(outcome.piece))
            if not terminal:  # logs: one line per piece
                extra = f" {outcome.seconds:.1f} s" if outcome.status == "computed" else ""
                console.print(f"[{done}/{total}] {escape(outcome.piece)}: {outcome.status}"
                              f"{extra}", soft_wrap=True)

        return evaluate(pieces, model, out, config, data=data, dataset=kind, split=split,
                        device=device, jobs=jobs, progress=progress)


def register(app: typer.Typer) -> None:
    """Add the ``eval`` command group (``urmp``, ``synth``, ``compare``) to ``app``."""
    eval_app = typer.Typer(help="Evaluate separation models on URMP-layout data.",
                           no_args_is_help=True)

    def make(kind: str, doc: str) -> None:
        @eval_app.command(kind, help=doc)
        def command(
            data: Path = typer.Argument(..., help="Dataset folder (URMP layout)."),
            model: str = typer.Option(None, "--model", "-m",
                                      help="Model name, directory or Hub id (default: "
                                           "registry's)."),
            protocol: Protocol = typer.Option("paper", "--protocol",
                                         help="paper (65535-sample segments at 11025 Hz) | "
                                              "full (whole pieces, framewise BSS v4)."),
            out: Path = typer.Option(None, "--out", "-o",
                                     help="Output folder (default eval/<model>-<data>-"
                                          "<protocol>)."),
            reference: str = typer.Option(",".join(REFERENCE_METHODS), "--reference",
                                          help="Reference methods: irm,mix or none."),
            pes: bool = typer.Option(False, "--pes", help="Request every instrument of the "
                                     "model; score absent ones with PES."),
            save_stems: bool = typer.Option(False, "--save-stems",
                                            help="Keep stems in <out>/stems/<piece>/."),
            jobs: int = typer.Option(1, "--jobs", "-j", help="Worker processes."),
            device: str = device_option(),
            iterations: int = typer.Option(WIENER_ITERATIONS, "--wiener-iterations", "--niter",
                                           help="EM Wiener iterations (0 = soft masks)."),
            mix_floor: float = typer.Option(MIX_FLOOR, "--mix-floor",
                                            help="Share of the mixture in every stem (0..1)."),
            rest: bool = typer.Option(False, "--rest", help="Score each instrument separated "
                                      "alone with a rest stem (partial lists)."),
            bss: bool = typer.Option(True, "--bss/--no-bss", help="BSS-eval SDR/SIR/SAR "
                                     "besides SI-SDR (--no-bss: much faster)."),
            overlap: float = typer.Option(OVERLAP, "--overlap",
                                          help="Window overlap (full protocol)."),
            batch_size: int = typer.Option(BATCH_SIZE, "--batch-size", help="Windows per pass."),
            precision: Precision = typer.Option("auto", "--precision",
                                                help="Compute precision (as for separate)."),
            raw: bool = typer.Option(False, "--raw", help="No mixture-consistent residual."),
            window: float = typer.Option(1.0, "--window",
                                         help="BSS-eval window and hop, seconds (full)."),
            split: str = typer.Option(None, "--split", help="Only pieces of this manifest "
                                      "split."),
            plots: bool = typer.Option(True, "--plots/--no-plots", help="Write box plots."),
            score: str = typer.Option("none", "--score",
                                      help="Score-informed: none | exact | warped | aligned "
                                           "(the pieces' Sco_*.mid and URMP Notes_*.txt)."),
            score_warp: float = typer.Option(0.1, "--score-warp",
                                             help="Tempo warp of --score warped/aligned "
                                                  "(+-share, every 4 s)."),
            score_prior: str = typer.Option("harmonic", "--score-prior",
                                            help="What the score does to the masks: activity "
                                                 "(silent where a part rests) | harmonic "
                                                 "(also: near its notes' partials) | none "
                                                 "(a score model's input only)."),
        ) -> None:
            _run(kind, data, model, protocol, out, reference, pes, save_stems, jobs, device,
                 iterations, overlap, batch_size, precision, raw, window, split, plots,
                 mix_floor, rest, bss, score, score_warp, score_prior)

    make("urmp", "Evaluate a model on URMP as distributed.\n\n"
                 "Piece folders with AuMix_*/AuSep_* at 48 kHz.")
    make("synth", "Evaluate a model on pieces rendered by `cusep synth`.\n\n"
                  "The URMP layout that `cusep synth` writes.")

    @eval_app.command("compare")
    def compare_cmd(
        results: list[Path] = typer.Argument(..., metavar="RESULTS_JSON",
                                             help="results.json files; first = baseline."),
        method: str = typer.Option(None, "--method",
                                   help="Method to compare (default: each file's model)."),
        metrics: str = typer.Option("si_sdr,sd_sdr,si_sdri,pes,sdr,sir,sar", "--metrics",
                                    help="Comma list of metrics."),
    ) -> None:
        """Compare runs: paired differences against the first, with Wilcoxon tests."""
        from .. import report

        names = [m.strip().lower().replace("-", "_") for m in metrics.split(",") if m.strip()]
        unknown = [m for m in names if m not in report.LABELS]
        if unknown:
            raise CusepError(f"unknown metric(s) {', '.join(unknown)}; choose from "
                             f"{', '.join(report.LABELS)}")
        rows = report.compare(results, names, method)
        _stdout().print(report.comparison_grid(rows).rich())

    app.add_typer(eval_app, name="eval")
