"""Turn a training run folder into a model directory with a model card.

A detector run's model stores the validation threshold of its best step (the one that maximised
macro-F1 on the validation mixtures) in ``config.json``.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any

from .checkpoint import default_card, kind_of, save_model_dir
from .errors import CusepError
from .model import build_network
from .train import load_resume_state, load_weights, read_run_config
from .version import __version__


def read_metrics_log(run_dir: Path) -> list[dict]:
    """The validation records of a run. A partial last line (what a kill leaves) is skipped
    with a warning; a broken line before it is an error."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                raise CusepError(f"{path} line {i + 1} is not JSON; repair or remove it") from None
            warnings.warn(f"{path}: skipped a partial last line (an interrupted write)",
                          stacklevel=2)
    return records


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from ``path`` (CusepError naming ``what``: unreadable, not JSON, not an
    object)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CusepError(f"cannot read {what} '{path}': {exc}") from None
    if not isinstance(data, dict):
        raise CusepError(f"{what} '{path}' must hold a JSON object")
    return data


def _per_class(thresholds: dict[str, float], classes: tuple[str, ...]) -> tuple[float, ...]:
    """{code: threshold} -> one threshold per class in ``classes`` order (CusepError: not a
    detector run, a class missing or unknown, a value outside (0, 1])."""
    if not classes:
        raise CusepError("class thresholds are for detector runs")
    if set(thresholds) != set(classes):
        raise CusepError(f"class thresholds must name every class of the detector "
                         f"({', '.join(classes)}); got {', '.join(thresholds) or 'none'}")
    values = tuple(float(thresholds[c]) for c in classes)
    if not all(0.0 < t <= 1.0 for t in values):
        raise CusepError("class thresholds must be in (0, 1]")
    return values


def export_run(run_dir: Path, model_dir: Path, weights: str = "best",
               metrics_file: Path | None = None, notes_file: Path | None = None,
               threshold: float | None = None,
               class_thresholds: dict[str, float] | None = None) -> Path:
    """Write ``model_dir`` (fp16 safetensors, config.json, README.md) from ``run_dir``.

    ``threshold`` (detectors only) replaces the stored decision threshold, e.g. one chosen on
    validation for ``--instruments auto`` (see scripts/eval_detect.py --thresholds);
    ``class_thresholds`` ({code: threshold}, every class of the detector) stores one per class
    (see scripts/eval_detect.py --class-thresholds).
    """
    run_dir = Path(run_dir)
    config, extra = read_run_config(run_dir)
    network = config.network
    if threshold is not None and (config.task != "detect" or not 0.0 < threshold <= 1.0):
        raise CusepError("--threshold is for detector runs and must be in (0, 1]; "
                         f"got {threshold} for a {config.task} run")
    model = build_network(network)
    if weights == "best":
        path = run_dir / "best.safetensors"
        if not path.exists():
            raise CusepError(f"'{run_dir}' has no best.safetensors yet; train until the first "
                             "validation or use --weights last")
        state = load_weights(path)
    elif weights == "last":
        path = run_dir / "checkpoint.pt"
        if not path.exists():
            raise CusepError(f"'{run_dir}' has no checkpoint.pt")
        state = load_resume_state(path)["model"]
    else:
        raise CusepError(f"--weights must be best or last, not '{weights}'")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CusepError(f"{path} does not fit the run's model "
                         f"({str(exc).strip().splitlines()[0][:160]}); restore the run") from None
    log = read_metrics_log(run_dir)
    key = "valid_map" if config.task == "detect" else "valid_si_sdr"
    best = max(log, key=lambda r: r[key]) if log else {}
    if config.task == "detect" and (threshold is not None or "valid_threshold" in best):
        network = dataclasses.replace(
            network, threshold=best["valid_threshold"] if threshold is None else threshold)
    if class_thresholds is not None:
        network = dataclasses.replace(network, class_thresholds=_per_class(
            class_thresholds, network.classes if config.task == "detect" else ()))
    training = {
        "preset": config.preset,
        "description": config.description,
        "data": list(config.data.train),
        "valid_data": list(config.data.valid),
        "steps": log[-1]["step"] if log else None,
        "best_step": best.get("step"),
        "minutes": round(log[-1]["minutes"], 1) if log else None,
        "device": extra.get("device"),
        "world_size": extra.get("world_size"),
        "batch_size": config.optim.batch_size,
        "command": extra.get("command"),
        "mixing": dataclasses.asdict(config.mixing),
        "optim": dataclasses.asdict(config.optim),
    }
    names = ("valid_map", "valid_f1", "valid_threshold", "valid_si_sdr", "valid_si_sdri",
             "valid_loss")
    metrics = {k: best[k] for k in names if k in best}
    if metrics_file is not None:
        metrics.update(read_json_object(metrics_file, "--metrics"))
    card = default_card({**network.to_dict(), "cusep_version": __version__,
                         "kind": kind_of(network), "training": training, "metrics": metrics})
    if notes_file is not None:
        card += "\n" + Path(notes_file).read_text()
    return save_model_dir(model_dir, model, network, training=training, metrics=metrics,
                          card=card)
