"""Classification metrics, computed with torchmetrics from predictions and targets."""

from __future__ import annotations

import torch
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_cohen_kappa,
    multiclass_confusion_matrix,
    multiclass_f1_score,
)


def summarize(preds: torch.Tensor, target: torch.Tensor, num_classes: int) -> dict[str, float]:
    """Overall accuracy, macro F1 and Cohen's kappa (paper 2's three metrics)."""
    if len(target) == 0:
        return {"acc": float("nan"), "f1": float("nan"), "kappa": float("nan")}
    k = num_classes
    return {
        "acc": multiclass_accuracy(preds, target, k, average="micro").item(),
        "f1": multiclass_f1_score(preds, target, k, average="macro").item(),
        "kappa": multiclass_cohen_kappa(preds, target, k).item(),
    }


def detailed(preds: torch.Tensor, target: torch.Tensor, num_classes: int) -> dict:
    """:func:`summarize` plus per-class accuracy (recall) and the confusion matrix.

    The accuracy of a class without images in ``target`` is NaN (undefined), not 0:
    torchmetrics reports 0 for it. The confusion matrix is ``[true class][predicted class]``
    counts.
    """
    out: dict = summarize(preds, target, num_classes)
    per_class = torch.full((num_classes,), float("nan"))
    if len(target):
        present = torch.bincount(target, minlength=num_classes) > 0
        acc = multiclass_accuracy(preds, target, num_classes, average=None).float().cpu()
        per_class[present] = acc[present]
    out["per_class_acc"] = per_class.tolist()
    out["confusion"] = multiclass_confusion_matrix(preds, target, num_classes).tolist()
    return out
