"""The PNGs of ``cusep eval``: medians visible (black on coloured boxes), axis titles, counts
per box, and the per-number-of-sources plot with the references as bands."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cusep import report

pytest.importorskip("matplotlib")


def fake_records() -> list[dict]:
    rng = np.random.default_rng(0)
    recs = []
    for n in (2, 3):
        for piece in range(3):
            for code in ("vn", "va", "vc")[:n]:
                for method, level in (("tiny", 3.0), ("irm", 12.0), ("mix", -4.0 * n)):
                    recs.append({"method": method, "present": True, "instrument": code,
                                 "n_sources": n, "piece": f"p{piece}",
                                 "si_sdr": float(level + rng.normal()),
                                 "sdr": float(level + 1 + rng.normal())})
    return recs


@pytest.fixture
def figures(monkeypatch) -> list:
    """The figures the plot functions save (kept open to inspect)."""
    kept: list = []
    real_save = report._save

    def keep(fig, plt, out):
        kept.append(fig)
        fig.savefig(out, dpi=40)
        return Path(out)

    monkeypatch.setattr(report, "_save", keep)
    yield kept
    monkeypatch.setattr(report, "_save", real_save)
    import matplotlib.pyplot as plt

    for fig in kept:
        plt.close(fig)


SETTINGS = {"model": {"name": "tiny"}}


@pytest.mark.parametrize(("by", "xlabel", "counts"), [
    ("instrument", "instrument", {"6", "3"}),
    ("n_sources", "number of sources", {"6", "9"}),
])
def test_box_plots_show_medians_axis_title_and_counts(tmp_path, figures, by, xlabel, counts):
    recs = fake_records()
    assert report.box_plots(recs, tmp_path / "p.png", by, settings=SETTINGS).is_file()
    [fig] = figures
    for ax in fig.axes:
        assert ax.get_xlabel().startswith(xlabel)
        medians = [line for line in ax.lines if line.get_color() == "black"  # whiskers
                   and line.get_linewidth() >= 1.5]  # and caps are thinner
        n_boxes = len(ax.patches)  # one patch per box (patch_artist)
        assert n_boxes and len(medians) == n_boxes
        texts = [t.get_text() for t in ax.texts]
        assert len(texts) == n_boxes and set(texts) == counts
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["tiny", "irm", "mix"]


def test_sources_plot_has_reference_bands(tmp_path, figures):
    recs = fake_records()
    assert report.sources_plot(recs, tmp_path / "s.png", settings=SETTINGS).is_file()
    [fig] = figures
    [ax] = fig.axes
    assert ax.get_xlabel() == "number of sources in the mixture"
    bands = ax.collections  # fill_between: one band per reference and number of sources
    assert len(bands) == 2 * 2
    irm_low = bands[0].get_paths()[0].vertices[:, 1].min()
    mix_high = bands[2].get_paths()[0].vertices[:, 1].max()
    assert irm_low > mix_high  # the IRM band lies above the mixture's
    assert [t.get_text() for t in ax.texts] == ["n=6", "n=9"]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["ideal ratio mask (25-75 %, median)", "mixture (25-75 %, median)", "tiny"]


def test_sources_plot_without_references_or_values_is_none(tmp_path, figures):
    recs = [r for r in fake_records() if r["method"] == "tiny"]
    assert report.sources_plot(recs, tmp_path / "s.png", metric="pes") is None
    assert figures == []


def test_reliability_plot_draws_each_curve_beside_the_diagonal(tmp_path, figures):
    from cusep.metrics import reliability

    rng = np.random.default_rng(0)
    p = rng.random(4000)
    calibrated = reliability(p, rng.random(4000) < p)
    overconfident = reliability(p, rng.random(4000) < 0.5)
    out = report.reliability_plot([("calibrated", calibrated), ("coin", overconfident)],
                                  tmp_path / "r.png")
    assert out.is_file()
    [fig] = figures
    curve_ax, hist_ax = fig.axes
    labels = [t.get_text() for t in curve_ax.get_legend().get_texts()]
    assert labels[0] == "perfectly calibrated" and labels[1].startswith("calibrated (ECE 0.0")
    assert len(curve_ax.lines) == 3 and len(hist_ax.patches) == 2 * 10
