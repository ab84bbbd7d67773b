"""Evaluation reports: results files (JSON, CSV), summary tables (rich, markdown), box plots and
paired comparisons of results files (Wilcoxon signed-rank tests).

Tables pool every (segment, source) value of every piece, as the paper's tables do: mean +- std,
and the median beside them. Records are the dicts of :mod:`cusep.evaluate` (``None`` = skipped).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from .atomic import atomic_path
from .errors import CusepError
from .evaluate import RECORD_FIELDS, REFERENCE_METHODS, EvalResult, Record, write_json
from .instruments import BY_CODE, CODES

LABELS: dict[str, str] = {"si_sdr": "SI-SDR", "sd_sdr": "SD-SDR", "si_sdri": "SI-SDRi",
                          "pes": "PES", "sdr": "SDR", "sir": "SIR", "sar": "SAR", "isr": "ISR"}
SUMMARY_METRICS: tuple[str, ...] = ("si_sdr", "sd_sdr", "si_sdri", "pes", "sdr", "sir", "sar")
NOT_SIGNIFICANT = "†"
ALPHA = 0.05


@dataclass(frozen=True)
class Grid:
    """A table as text cells: rendered with rich (terminal) or as markdown."""

    title: str
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""

    def rich(self) -> Table:
        table = Table(title=self.title, caption=self.caption or None)
        for i, name in enumerate(self.header):
            table.add_column(name, justify="left" if i == 0 else "right", no_wrap=i == 0)
        for row in self.rows:
            table.add_row(*row)
        return table

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.header) + " |",
                 "|" + "|".join("---" if i == 0 else "---:" for i in range(len(self.header)))
                 + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        if self.caption:
            lines += ["", self.caption]
        return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ files


def write_results(out: str | Path, result: EvalResult) -> tuple[Path, Path]:
    """``results.json`` (settings, skipped pieces, every record) and ``results.csv``."""
    out = Path(out)
    json_path, csv_path = out / "results.json", out / "results.csv"
    write_json(json_path, {
        "settings": result.settings,
        "pieces": {"evaluated": len(result.computed) + len(result.cached),
                   "skipped": [{"piece": p, "reason": r} for p, r in result.skipped]},
        "records": result.records,
    })
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=RECORD_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in r.items()}
                         for r in result.records)
    return json_path, csv_path


def load_results(path: str | Path) -> dict[str, Any]:
    """A ``results.json`` written by :func:`write_results` (settings, pieces, records)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CusepError(f"{path}: file not found; give a results.json of `cusep eval`") from None
    except (OSError, ValueError) as exc:
        raise CusepError(f"{path}: not a readable JSON file ({exc}); give a results.json "
                         "of `cusep eval`") from None
    if not isinstance(data, dict) or not isinstance(data.get("records"), list) \
            or not isinstance(data.get("settings"), dict):
        raise CusepError(f"{path}: not a results.json of `cusep eval` (no settings/records)")
    return data


# ------------------------------------------------------------------------------- statistics


def values(records: Iterable[Record], metric: str) -> np.ndarray:
    """The non-null values of ``metric`` (float64)."""
    return np.array([r[metric] for r in records if r.get(metric) is not None], np.float64)


def methods(records: Sequence[Record], model: str | None = None) -> list[str]:
    """Methods in table order: the model first, then the references, then any others."""
    found = list(dict.fromkeys(r["method"] for r in records))
    first = [m for m in found if m == model]
    refs = [m for m in REFERENCE_METHODS if m in found and m != model]
    return first + [m for m in found if m not in first and m not in refs] + refs


def stats(x: np.ndarray) -> dict[str, float]:
    """n, mean, std (population, as numpy), median of a value array (NaN when empty)."""
    if len(x) == 0:
        return {"n": 0, "mean": math.nan, "std": math.nan, "median": math.nan}
    return {"n": len(x), "mean": float(x.mean()), "std": float(x.std()),
            "median": float(np.median(x))}


def _mean_std(x: np.ndarray, counts: bool = False) -> str:
    s = stats(x)
    if s["n"] == 0:
        return "-"
    text = f"{s['mean']:.2f} ± {s['std']:.2f}"
    return f"{text} ({s['n']})" if counts else text


def summary(records: Sequence[Record], model: str | None = None,
            metrics: Sequence[str] = SUMMARY_METRICS) -> dict[str, dict[str, dict[str, float]]]:
    """{method: {metric: stats}} over the pooled values."""
    return {m: {k: stats(values([r for r in records if r["method"] == m], k)) for k in metrics}
            for m in methods(records, model)}


def summary_grids(records: Sequence[Record], settings: dict[str, Any] | None = None,
                  metrics: Sequence[str] = SUMMARY_METRICS) -> list[Grid]:
    """The paper-style table (mean ± std per method and metric) and the medians."""
    settings = settings or {}
    model = (settings.get("model") or {}).get("name")
    table = summary(records, model, metrics)
    metrics = [k for k in metrics if any(table[m][k]["n"] for m in table)]
    protocol = settings.get("protocol", "?")
    unit = "(piece, source)" if protocol == "full" else "(segment, source)"
    counts = {m: sum(1 for r in records if r["method"] == m and r["present"]) for m in table}
    header = ("method", "n", *(LABELS[k] for k in metrics))
    mean_rows = tuple(
        (m, str(counts[m]), *(_fmt_ms(table[m][k]) for k in metrics)) for m in table)
    median_rows = tuple(
        (m, str(counts[m]), *(_fmt(table[m][k]["median"]) for k in metrics)) for m in table)
    caption = (f"dB, every {unit} value pooled; n = present {unit} pairs; "
               "PES only for absent instruments (--pes)")
    return [Grid(f"{protocol} protocol: mean ± std", header, mean_rows, caption),
            Grid(f"{protocol} protocol: median", header, median_rows)]


def _fmt(x: float) -> str:
    return "-" if not math.isfinite(x) else f"{x:.2f}"


def _fmt_ms(s: dict[str, float]) -> str:
    return "-" if s["n"] == 0 else f"{s['mean']:.2f} ± {s['std']:.2f}"


def group_key(record: Record, by: str) -> Any:
    if by not in ("instrument", "n_sources"):
        raise ValueError(f"group by 'instrument' or 'n_sources', not {by!r}")
    return record[by]


def _groups(records: Sequence[Record], by: str) -> list[Any]:
    keys = {group_key(r, by) for r in records if r["present"]}
    if by == "instrument":
        return [c for c in CODES if c in keys] + sorted(k for k in keys if k not in CODES)
    return sorted(keys)


def _group_label(key: Any, by: str) -> str:
    if by == "instrument":
        return f"{key} ({BY_CODE[key].name})" if key in BY_CODE else str(key)
    return f"{key} sources"


def group_grid(records: Sequence[Record], by: str, metric: str = "si_sdr",
               settings: dict[str, Any] | None = None) -> Grid:
    """Rows: instruments (``by="instrument"``) or numbers of sources (``"n_sources"``);
    columns: methods; cells: mean ± std (count) of ``metric`` over present sources."""
    model = ((settings or {}).get("model") or {}).get("name")
    order = methods(records, model)
    rows = []
    for key in _groups(records, by):
        sel = [r for r in records if r["present"] and group_key(r, by) == key]
        rows.append((_group_label(key, by),
                     *(_mean_std(values([r for r in sel if r["method"] == m], metric), True)
                       for m in order)))
    what = "instrument" if by == "instrument" else "number of sources"
    return Grid(f"{LABELS[metric]} by {what}", (what, *order), tuple(rows),
                "dB, mean ± std (count)")


def markdown_report(grids: Sequence[Grid], settings: dict[str, Any]) -> str:
    """The tables as markdown, headed by the settings that matter to read them."""
    model = settings.get("model", {})
    lines = [f"# cusep eval: {model.get('name', '?')} on {settings.get('data', {}).get('path')}",
             "", f"- model sha256: `{model.get('sha256')}`",
             f"- protocol: {settings.get('protocol')}: {settings.get('protocol_description')}",
             f"- BSS-eval: {settings.get('metric_variant', {}).get('bss')}",
             f"- conditioning: {settings.get('conditioning')}",
             f"- Wiener iterations: {settings.get('wiener_iterations')}, mix floor "
             f"{settings.get('mix_floor', 0.0)}, precision "
             f"{settings.get('precision')}, cusep {settings.get('cusep_version')}", ""]
    return "\n".join(lines) + "\n" + "\n".join(g.markdown() for g in grids)


# ------------------------------------------------------------------------------------ plots


def _pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def box_plots(records: Sequence[Record], out: str | Path, by: str,
              metrics: Sequence[str] = ("si_sdr", "sdr"),
              settings: dict[str, Any] | None = None) -> Path | None:
    """PNG box plots of ``metrics`` per instrument or per number of sources, one box per method
    (like the paper's Figures 3 and 4), each with its median in black and its count of values
    above it. None when matplotlib is not installed."""
    plt = _pyplot()
    if plt is None:
        return None
    model = ((settings or {}).get("model") or {}).get("name")
    order = methods(records, model)
    keys = _groups(records, by)
    metrics = [k for k in metrics if len(values(records, k))]
    if not keys or not metrics:
        return None
    fig, axes = plt.subplots(len(metrics), 1, figsize=(max(6.0, 1.0 + 0.9 * len(keys)
                                                           * max(1, len(order)) / 2),
                                                       3.4 * len(metrics)), squeeze=False)
    width = 0.8 / len(order)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    what = "instrument" if by == "instrument" else "number of sources"
    for ax, metric in zip(axes[:, 0], metrics, strict=True):
        for j, m in enumerate(order):
            data = [values([r for r in records if r["present"] and r["method"] == m
                            and group_key(r, by) == key], metric) for key in keys]
            pos = [i + (j - (len(order) - 1) / 2) * width for i in range(len(keys))]
            keep = [(p, d) for p, d in zip(pos, data, strict=True) if len(d)]
            if not keep:
                continue
            colour = colours[j % len(colours)]
            box = ax.boxplot([d for _, d in keep], positions=[p for p, _ in keep],
                             widths=width * 0.9, patch_artist=True, showfliers=True,
                             flierprops={"markersize": 2, "markeredgecolor": colour},
                             medianprops={"color": "black", "linewidth": 1.6})
            for patch in box["boxes"]:
                patch.set_facecolor(colour)
                patch.set_alpha(0.6)
            for p, d in keep:  # the count, just above the axis' lower edge
                ax.text(p, 0.01, f"{len(d)}", transform=ax.get_xaxis_transform(),
                        ha="center", va="bottom", fontsize=6, color="0.3")
            ax.plot([], [], color=colour, lw=6, alpha=0.6, label=m)
        ax.set_xticks(range(len(keys)))
        ax.set_xticklabels([str(k) for k in keys])
        ax.set_xlabel(f"{what} (numbers above the axis: values per box)")
        ax.set_ylabel(f"{LABELS[metric]} (dB)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    axes[0, 0].set_title(f"by {what}")
    return _save(fig, plt, out)


def sources_plot(records: Sequence[Record], out: str | Path, metric: str = "si_sdr",
                 settings: dict[str, Any] | None = None) -> Path | None:
    """PNG of the model's ``metric`` per number of sources (boxes, median and count), with the
    references (ideal ratio mask above, mixture below) as bands from their 25th to 75th
    percentile with a line at their median. None without matplotlib or without values."""
    plt = _pyplot()
    if plt is None:
        return None
    model = ((settings or {}).get("model") or {}).get("name")
    order = methods(records, model)
    own = [m for m in order if m not in REFERENCE_METHODS]
    keys = _groups(records, "n_sources")
    if not own or not keys or not len(values(records, metric)):
        return None
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(keys) + 2), 3.8))
    bands = {"irm": ("ideal ratio mask", "tab:green"), "mix": ("mixture", "tab:red")}
    for ref in [r for r in REFERENCE_METHODS if r in order]:
        name, colour = bands.get(ref, (ref, "0.5"))
        for i, key in enumerate(keys):
            x = values([r for r in records if r["present"] and r["method"] == ref
                        and r["n_sources"] == key], metric)
            if not len(x):
                continue
            low, mid, high = np.percentile(x, [25, 50, 75])
            ax.fill_between([i - 0.45, i + 0.45], low, high, color=colour, alpha=0.18, lw=0,
                            label=f"{name} (25-75 %, median)" if i == 0 else None)
            ax.plot([i - 0.45, i + 0.45], [mid, mid], color=colour, lw=1.2, ls="--")
    data = [values([r for r in records if r["present"] and r["method"] == own[0]
                    and r["n_sources"] == key], metric) for key in keys]
    keep = [(i, d) for i, d in enumerate(data) if len(d)]
    box = ax.boxplot([d for _, d in keep], positions=[i for i, _ in keep], widths=0.35,
                     patch_artist=True, medianprops={"color": "black", "linewidth": 1.6},
                     flierprops={"markersize": 2})
    for patch in box["boxes"]:
        patch.set_facecolor("tab:blue")
        patch.set_alpha(0.6)
    for i, d in keep:
        ax.text(i, 0.01, f"n={len(d)}", transform=ax.get_xaxis_transform(), ha="center",
                va="bottom", fontsize=7, color="0.3")
    ax.plot([], [], color="tab:blue", lw=6, alpha=0.6, label=own[0])
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels([str(k) for k in keys])
    ax.set_xlim(-0.6, len(keys) - 0.4)
    ax.set_xlabel("number of sources in the mixture")
    ax.set_ylabel(f"{LABELS[metric]} (dB)")
    ax.set_title(f"{LABELS[metric]} by number of sources, with the references")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    return _save(fig, plt, out)


def reliability_plot(curves: Sequence[tuple[str, dict[str, Any]]], out: str | Path,
                     title: str = "reliability of the detector's probabilities") -> Path | None:
    """PNG of reliability curves (:func:`cusep.metrics.reliability` results, each with its
    label): observed share of positives against mean probability per bin, the diagonal of
    perfect calibration, and the count of each bin below. None without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5.2, 6.0), sharex=True,
                                   gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="0.5", ls="--", lw=1, label="perfectly calibrated")
    width = 1.0 / max(len(curves), 1)
    for i, (label, curve) in enumerate(curves):
        used = curve["count"] > 0
        ax.plot(curve["confidence"][used], curve["observed"][used], marker="o", ms=4,
                label=f"{label} (ECE {curve['ece']:.3f})")
        edges = curve["edges"]
        step = edges[1] - edges[0]
        hist.bar(edges[:-1] + step * width * (i + 0.5), curve["count"], width=step * width,
                 label=label)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share that really plays")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")
    hist.set_yscale("log")
    hist.set_xlabel("predicted probability (bin mean)")
    hist.set_ylabel("count")
    hist.grid(alpha=0.3)
    return _save(fig, plt, out)


def _save(fig: Any, plt: Any, out: str | Path) -> Path:
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")  # the legends sit beside the axes
    plt.close(fig)
    return out


# ------------------------------------------------------------------------------- comparison


@dataclass(frozen=True)
class Comparison:
    """Paired differences ``other - baseline`` of one metric (pairs on piece, segment,
    instrument) and the two-sided Wilcoxon signed-rank p-value."""

    baseline: str
    other: str
    metric: str
    n: int
    baseline_mean: float
    other_mean: float
    mean_diff: float
    median_diff: float
    p_value: float

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA


def _label(path: Path, data: dict[str, Any], method: str) -> str:
    where = path.parent.name if path.name == "results.json" else path.stem
    return f"{method} ({where})" if where and where != method else method


def _pick_method(data: dict[str, Any], method: str | None, path: Path) -> str:
    found = list(dict.fromkeys(r["method"] for r in data["records"]))
    name = method or (data["settings"].get("model") or {}).get("name")
    if name not in found:
        raise CusepError(f"{path}: no records of method '{name}' (it has: "
                         f"{', '.join(found) or 'none'}); choose one with --method")
    return name


def paired(base: Sequence[Record], other: Sequence[Record], metric: str
           ) -> tuple[np.ndarray, np.ndarray]:
    """Values of ``metric`` in both, matched on (piece, segment, instrument): (base, other)."""
    index = {(r["piece"], r["segment"], r["instrument"]): r[metric]
             for r in base if r.get(metric) is not None}
    a, b = [], []
    for r in other:
        key = (r["piece"], r["segment"], r["instrument"])
        if r.get(metric) is not None and key in index:
            a.append(index[key])
            b.append(r[metric])
    return np.array(a, np.float64), np.array(b, np.float64)


def wilcoxon_p(diff: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (1.0 when all are zero,
    NaN without pairs)."""
    from scipy.stats import wilcoxon

    if len(diff) == 0:
        return math.nan
    if not np.any(diff != 0):
        return 1.0
    return float(wilcoxon(diff).pvalue)


def compare(paths: Sequence[str | Path], metrics: Sequence[str] = SUMMARY_METRICS,
            method: str | None = None) -> list[Comparison]:
    """Compare every results file with the first (the baseline), metric by metric.

    The model of each file is compared unless ``method`` names another (e.g. ``irm``).
    """
    if len(paths) < 2:
        raise CusepError("compare needs at least two results files: the baseline first")
    loaded = [(Path(p), load_results(p)) for p in paths]
    protocols = {d["settings"].get("protocol") for _, d in loaded}
    if len(protocols) > 1:
        names = ", ".join(sorted(map(str, protocols)))
        raise CusepError(f"the results files use different protocols ({names}); "
                         "compare runs of one protocol")
    picked = [(p, d, _pick_method(d, method, p)) for p, d in loaded]
    base_path, base_data, base_method = picked[0]
    base = [r for r in base_data["records"] if r["method"] == base_method]
    base_label = _label(base_path, base_data, base_method)
    out: list[Comparison] = []
    for path, data, name in picked[1:]:
        recs = [r for r in data["records"] if r["method"] == name]
        label = _label(path, data, name)
        for metric in metrics:
            a, b = paired(base, recs, metric)
            if len(a) == 0:
                continue
            diff = b - a
            out.append(Comparison(base_label, label, metric, len(a), float(a.mean()),
                                  float(b.mean()), float(diff.mean()), float(np.median(diff)),
                                  wilcoxon_p(diff)))
    if not out:
        raise CusepError("the results files share no (piece, segment, instrument) pair with "
                         "values; compare runs of the same data and protocol")
    return out


def comparison_grid(rows: Sequence[Comparison]) -> Grid:
    """One row per (file, metric); a dagger marks differences not significant at p < 0.05."""
    header = ("vs baseline", "metric", "pairs", "baseline", "other", "Δ mean", "Δ median", "p")
    cells = []
    for c in rows:
        mark = "" if c.significant else f" {NOT_SIGNIFICANT}"
        cells.append((c.other, LABELS.get(c.metric, c.metric), str(c.n), _fmt(c.baseline_mean),
                      _fmt(c.other_mean), f"{c.mean_diff:+.2f}{mark}", f"{c.median_diff:+.2f}",
                      "-" if math.isnan(c.p_value) else f"{c.p_value:.2g}"))
    base = rows[0].baseline if rows else "?"
    return Grid(f"paired differences vs {base}", header, tuple(cells),
                f"dB, other - baseline on matched (piece, segment, instrument) pairs; "
                f"{NOT_SIGNIFICANT} not significant (two-sided Wilcoxon signed-rank, "
                f"p ≥ {ALPHA})")
