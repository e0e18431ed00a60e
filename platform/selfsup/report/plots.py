"""The selection report's figures (matplotlib, PNG): each label-free metric against probe accuracy,
the metrics over epochs, and the singular-value spectra of the picked and the best-probe trial."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from selfsup.report.selection import DEFAULT, PROBE, Report, finished  # noqa: E402

CURVES = ["label_free/rankme", "label_free/lidar", "label_free/alpha_req", "train/loss"]


def scatter(report: Report, path: str) -> None:
    """One panel per selector metric: final value (x) vs linear-probe accuracy (y) of the finished
    trials; the selector's pick circled, the oracle starred."""
    verdicts = list(report.verdicts.values())
    fig, axes = plt.subplots(1, len(verdicts), figsize=(4 * len(verdicts), 3.6), squeeze=False)
    for ax, v in zip(axes[0], verdicts):
        pts = [r for r in finished(report.rows) if math.isfinite(r.metrics.get(v.rule.metric, math.nan)) and PROBE in r.metrics]
        ax.scatter([r.metrics[v.rule.metric] for r in pts], [r.metrics[PROBE] for r in pts], s=18, color="tab:blue")
        if v.pick is not None and PROBE in v.pick.metrics:
            ax.scatter([v.pick.metrics[v.rule.metric]], [v.pick.metrics[PROBE]], s=120, facecolors="none", edgecolors="tab:red", label="pick")
        o = report.oracle
        if o is not None and math.isfinite(o.metrics.get(v.rule.metric, math.nan)):
            ax.scatter([o.metrics[v.rule.metric]], [o.metrics[PROBE]], marker="*", s=140, color="tab:green", label="best probe")
        tau = "-" if v.tau is None else f"{v.tau:.2f}"
        ax.set_title(f"{v.rule.name}{' (default)' if v.rule.name == DEFAULT else ''}: tau {tau}", fontsize=10)
        ax.set_xlabel(v.rule.metric, fontsize=8)
        ax.set_ylabel(PROBE, fontsize=8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def curves(histories: dict[str, dict[str, list[tuple[int, float]]]], path: str) -> None:
    """Each metric of :data:`CURVES` over epochs, one line per trial (``histories[trial][metric]``)."""
    fig, axes = plt.subplots(1, len(CURVES), figsize=(4 * len(CURVES), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], CURVES):
        for trial, hist in histories.items():
            points = hist.get(metric, [])
            if points:
                ax.plot([s for s, _ in points], [v for _, v in points], lw=1, label=trial)
        ax.set_title(metric, fontsize=10)
        ax.set_xlabel("epoch", fontsize=8)
    if len(histories) <= 12:
        axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def spectra(spectra: dict[str, list[float]], path: str) -> None:
    """Normalised singular values (``sigma_k / sigma_1``, log scale) of the named trials' embeddings."""
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for label, sigma in spectra.items():
        top = sigma[0] if sigma and sigma[0] > 0 else 1.0
        ax.semilogy(range(1, len(sigma) + 1), [max(s / top, 1e-12) for s in sigma], label=label)
    ax.set_xlabel("k")
    ax.set_ylabel("sigma_k / sigma_1")
    ax.set_title("singular values of the backbone embeddings", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
