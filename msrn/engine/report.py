"""Plain-text tables of the metrics (for the trainer's epoch summary and ``msrn evaluate``)."""

from collections.abc import Sequence

import numpy as np

from ..metrics import METRIC_NAMES

__all__ = ["format_metrics_table", "format_class_ap_table"]


def format_metrics_table(metrics: dict[str, float], top_k: int = 3) -> str:
    """Rows ``all`` and ``top-k`` (when present) under the columns mAP, CP, CR, CF1, OP, OR, OF1."""
    header = f"{'':6}" + "".join(f"{name:>8}" for name in METRIC_NAMES)
    lines = [
        header,
        f"{'all':6}" + "".join(f"{metrics.get(name, float('nan')):8.2f}" for name in METRIC_NAMES),
    ]
    if f"CP_top{top_k}" in metrics:
        cells = [f"{'':>8}"] + [f"{metrics[f'{name}_top{top_k}']:8.2f}" for name in METRIC_NAMES[1:]]
        lines.append(f"{f'top-{top_k}':6}" + "".join(cells))
    return "\n".join(lines)


def format_class_ap_table(classes: Sequence[str], average_precisions: Sequence[float]) -> str:
    """One line per class with its AP in percent (``n/a`` for a class without positives)."""
    width = max(5, max(len(name) for name in classes))
    lines = [f"{'class':<{width}}  {'AP':>6}"]
    for name, ap in zip(classes, average_precisions, strict=True):
        lines.append(f"{name:<{width}}  {ap:6.2f}" if np.isfinite(ap) else f"{name:<{width}}  {'n/a':>6}")
    return "\n".join(lines)
