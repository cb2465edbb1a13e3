"""Classification metrics (sklearn's classification_report + confusion matrix, without sklearn).

  report = classification_report(y_true, y_pred, ["negative", "positive"])
  print(format_report(report))

The dict holds plain Python numbers and lists, so it can be written to JSON as is. A ratio with a
zero denominator (a class never predicted, or absent) is 0.0, as sklearn's zero_division=0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else 0.0


def classification_report(y_true, y_pred, label_names: Sequence[str]) -> dict:
    """{'n', 'accuracy', 'labels', 'per_class': {name: {precision, recall, f1, support}},
    'macro_precision', 'macro_recall', 'macro_f1', 'weighted_precision', 'weighted_recall',
    'weighted_f1', 'confusion': [[count]] (rows = true class, cols = predicted class)}."""
    true_N = np.asarray(y_true).reshape(-1)
    pred_N = np.asarray(y_pred).reshape(-1)
    k = len(label_names)
    if true_N.shape != pred_N.shape:
        raise ValueError(
            f"y_true has {true_N.size} labels but y_pred has {pred_N.size}; pass one prediction per example."
        )
    if k < 1:
        raise ValueError("label_names is empty; pass one name per class id.")
    for name, arr in (("y_true", true_N), ("y_pred", pred_N)):
        if arr.size and (not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0 or arr.max() >= k):
            raise ValueError(
                f"{name} must hold integer class ids in [0, {k}) for {list(label_names)}; got {np.unique(arr)[:10]}."
            )
    confusion_KxK = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion_KxK, (true_N.astype(np.int64), pred_N.astype(np.int64)), 1)

    tp_K = np.diag(confusion_KxK)
    support_K = confusion_KxK.sum(1)
    predicted_K = confusion_KxK.sum(0)
    per_class, p_K, r_K, f_K = {}, [], [], []
    for c, name in enumerate(label_names):
        p = _ratio(tp_K[c], predicted_K[c])
        r = _ratio(tp_K[c], support_K[c])
        f = _ratio(2 * p * r, p + r)
        per_class[name] = {"precision": p, "recall": r, "f1": f, "support": int(support_K[c])}
        p_K.append(p)
        r_K.append(r)
        f_K.append(f)
    n = int(true_N.size)
    weights_K = support_K / n if n else np.zeros(k)
    return {
        "n": n,
        "accuracy": _ratio(tp_K.sum(), n),
        "labels": list(label_names),
        "per_class": per_class,
        "macro_precision": float(np.mean(p_K)),
        "macro_recall": float(np.mean(r_K)),
        "macro_f1": float(np.mean(f_K)),
        "weighted_precision": float(np.dot(weights_K, p_K)),
        "weighted_recall": float(np.dot(weights_K, r_K)),
        "weighted_f1": float(np.dot(weights_K, f_K)),
        "confusion": confusion_KxK.tolist(),
    }


def format_report(report: dict, digits: int = 4) -> str:
    """sklearn-style table (per class, accuracy, macro/weighted avg) and the confusion matrix."""
    names = report["labels"]
    width = max(len("weighted avg"), *(len(n) for n in names))
    col = max(digits + 2, 9)
    head = " " * width + "".join(f"{h:>{col + 1}}" for h in ("precision", "recall", "f1-score", "support"))

    def line(name, p, r, f, s):
        cells = [f"{v:>{col + 1}.{digits}f}" if v is not None else " " * (col + 1) for v in (p, r, f)]
        return f"{name:>{width}}" + "".join(cells) + f"{s:>{col + 1}}"

    lines = [head, ""]
    for name in names:
        c = report["per_class"][name]
        lines.append(line(name, c["precision"], c["recall"], c["f1"], c["support"]))
    n = report["n"]
    lines += [
        "",
        line("accuracy", None, None, report["accuracy"], n),
        line("macro avg", report["macro_precision"], report["macro_recall"], report["macro_f1"], n),
        line("weighted avg", report["weighted_precision"], report["weighted_recall"], report["weighted_f1"], n),
        "",
        "confusion matrix (rows = true, cols = predicted):",
    ]
    cw = max(6, *(len(nm) for nm in names), *(len(str(v)) for row in report["confusion"] for v in row))
    lines.append(" " * width + "".join(f" {nm:>{cw}}" for nm in names))
    for name, row in zip(names, report["confusion"]):
        lines.append(f"{name:>{width}}" + "".join(f" {v:>{cw}}" for v in row))
    return "\n".join(lines)
