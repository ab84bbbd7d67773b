"""``cusep train`` and ``cusep export``."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer

from ..errors import CusepError
from .common import console
from .options import Layout, Weights, device_option


def register(app: typer.Typer) -> None:
    @app.command()
    def train(
        run_dir: Path = typer.Argument(..., help="Run folder (created; holds checkpoints)."),
        preset: str = typer.Option("cusep-label", "--preset", "-p",
                                   help="Preset name (exp01..exp18, cusep-*) or a .toml file."),
        data: list[Path] = typer.Option(None, "--data", metavar="<folder>",
                                        help="Training data folder (repeatable)."),
        valid: list[Path] = typer.Option(None, "--valid", metavar="<folder>",
                                         help="Validation data folder (repeatable)."),
        layout: Layout = typer.Option(None, "--layout",
                                      help="Data layout (default: the preset's, urmp)."),
        overrides: list[str] = typer.Option(None, "--set", "-s", metavar="<section.field=value>",
                                            help="Override a setting (repeatable)."),
        max_steps: int = typer.Option(None, "--max-steps", help="Stop after this many steps."),
        max_minutes: float = typer.Option(None, "--max-minutes", help="Stop after N minutes."),
        resume: bool = typer.Option(False, "--resume", help="Continue the run in RUN_DIR."),
        device: str = device_option(),
        progress: bool = typer.Option(True, "--progress/--no-progress",
                                      help="Show a progress bar."),
    ) -> None:
        """Train a separation model or an instrument detector.

        --preset cusep-detect trains a detector; runs under torchrun for several GPUs/nodes."""
        from ..config import build_config
        from ..train import (
            Interrupted,
            Trainer,
            describe,
            read_run_config,
            setup_distributed,
            tune_process,
        )

        sets = list(overrides or [])
        if data:
            sets.append("data.train=" + _toml_list(data))
        if valid:
            sets.append("data.valid=" + _toml_list(valid))
        if layout:
            sets.append(f'data.layout="{layout}"')
        if max_steps is not None:
            sets.append(f"optim.max_steps={max_steps}")
        if max_minutes is not None:
            sets.append(f"optim.max_minutes={max_minutes}")
        if resume:
            if not (run_dir / "checkpoint.pt").exists():
                raise CusepError(f"nothing to resume in '{run_dir}' (no checkpoint.pt); "
                                 "drop --resume to start a new run")
            saved, _ = read_run_config(run_dir)
            config = build_config(None, sets, base=saved.to_dict())
        else:
            if (run_dir / "checkpoint.pt").exists():
                raise CusepError(f"'{run_dir}' already holds a run; use --resume to continue it "
                                 "or choose another folder")
            config = build_config(preset, sets)
        dev = setup_distributed(device)
        tune_process(dev)
        command = "cusep " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        trainer = Trainer(config, run_dir, dev, log=console.print, command=command)
        if resume:
            trainer.resume()
            console.print(f"resumed {run_dir} at step {trainer.step}")
        params = sum(p.numel() for p in trainer.model.parameters()) / 1e6
        console.print(f"training '{config.preset or 'custom'}' on {dev}, {params:.2f} M parameters")
        try:
            record = trainer.fit(progress=progress)
        except Interrupted as stopped:
            console.print(f"interrupted at step {stopped.step}: checkpoint written; continue "
                          f"with: cusep train {run_dir} --resume", soft_wrap=True)
            raise typer.Exit(130) from None
        if record:
            console.print(f"step {record['step']}: {describe(record)}; run in {run_dir}")

    @app.command()
    def export(
        run_dir: Path = typer.Argument(..., help="A training run folder."),
        model_dir: Path = typer.Argument(..., help="Model directory to write."),
        weights: Weights = typer.Option("best", "--weights",
                                        help="The best validation step's weights or the last."),
        metrics: Path = typer.Option(None, "--metrics",
                                     help="JSON of measured test metrics for the model card."),
        notes: Path = typer.Option(None, "--notes", help="Markdown appended to the model card."),
        threshold: float = typer.Option(
            None, "--threshold",
            help="Detectors: the decision threshold to store (default: the one that maximised "
                 "validation macro-F1 at the best step)."),
        class_thresholds: Path = typer.Option(
            None, "--class-thresholds",
            help="Detectors: a JSON {code: threshold} for every class, chosen on validation "
                 "(scripts/eval_detect.py --class-thresholds)."),
    ) -> None:
        """Export a training run as a model directory.

        fp16 safetensors, config and model card; a detector run stores the validation threshold
        that maximised macro-F1, or --threshold, and --class-thresholds one per class."""
        from ..export import export_run, read_json_object

        per_class = None
        if class_thresholds is not None:
            per_class = read_json_object(class_thresholds, "--class-thresholds")
        path = export_run(run_dir, model_dir, weights=weights, metrics_file=metrics,
                          notes_file=notes, threshold=threshold, class_thresholds=per_class)
        console.print(f"wrote {path}")


def _toml_list(paths: list[Path]) -> str:
    return "[" + ", ".join('"' + str(p.expanduser()).replace("\\", "/") + '"' for p in paths) + "]"
