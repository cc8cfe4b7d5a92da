"""Independent float64 reference implementations the tests compare against.

Written from the paper's formula, deliberately unlike the library code: the
(pixels x classes) ratio matrix ``n_j / n_y`` is built explicitly.
"""
import numpy as np
import torch


def naive_counts(label, num_classes, ignore_index=255):
    """Per-class pixel counts with numpy, ignoring ``ignore_index``."""
    flat = np.asarray(label).reshape(-1)
    flat = flat[flat != ignore_index]
    return np.array([(flat == c).sum() for c in range(num_classes)],
                    dtype=np.float64)


def naive_arb_loss(logits,
                   label,
                   counts,
                   ignore_index=255,
                   avg_non_ignore=False,
                   class_weight=None):
    """Mean ARB-Loss: -log(e^{z_y} / sum_j (n_j / n_y) e^{z_j}), float64.

    The mean follows mmseg's CrossEntropyLoss: over all pixels, or only the
    non-ignored ones with ``avg_non_ignore``; each pixel weighted by its
    class weight, ignored pixels counting 1 (or 0 with avg_non_ignore).
    """
    num_classes = logits.shape[1]
    z = logits.detach().double().movedim(1, -1).reshape(-1, num_classes)
    y = label.reshape(-1).long()
    n = torch.as_tensor(counts, dtype=torch.float64)
    keep = y != ignore_index
    losses = torch.zeros(len(y), dtype=torch.float64)
    weights = torch.ones(len(y), dtype=torch.float64)
    if avg_non_ignore:
        weights[~keep] = 0
    zk, yk = z[keep], y[keep]
    ratio = n[None, :] / n[yk][:, None]  # (pixels, C): n_j / n_y
    # Numerator and denominator scaled by e^{-max z}, and -log(e^a / d)
    # taken as -a + log d: float64 would under/overflow for large logits.
    zk = zk - zk.max(1, keepdim=True).values
    denom = (ratio * zk.exp()).sum(1)
    pixel_loss = -zk.gather(1, yk[:, None])[:, 0] + denom.log()
    if class_weight is not None:
        w = torch.as_tensor(class_weight, dtype=torch.float64)[yk]
        pixel_loss = pixel_loss * w
        weights[keep] = w
    losses[keep] = pixel_loss
    return losses.sum() / weights.sum()


def naive_class_weights(counts,
                        batch_counts,
                        weight_power=0.0,
                        max_weight_ratio=float('inf')):
    """``w_c = max(n_c, n_max / R^(1/p))^-p / mean`` in float64, the mean
    taken over the labelled pixels of ``batch_counts``."""
    n = torch.as_tensor(counts, dtype=torch.float64)
    w_class = torch.ones(len(n), dtype=torch.float64)
    if weight_power:
        b = torch.as_tensor(np.asarray(batch_counts), dtype=torch.float64)
        floor = n.max() / max_weight_ratio**(1.0 / weight_power)
        w_class = torch.maximum(n, floor)**(-weight_power)
        w_class = w_class / ((b * w_class).sum() / b.sum())
    return w_class


def naive_arb_family_loss(logits,
                          label,
                          counts,
                          tau=1.0,
                          weight_power=0.0,
                          max_weight_ratio=float('inf'),
                          batch_counts=None,
                          ignore_index=255,
                          avg_non_ignore=False,
                          denominator=None):
    """Mean of the whole family in float64, differentiable in ``logits``:

        l_i = -log( e^{z_y} / sum_j (n_j / n_y)^tau e^{z_j} ) * w_y

    with ``w_y`` of :func:`naive_class_weights` (the mean over
    ``batch_counts``, default: those of ``label``), reduced as mmseg's
    class-weighted mean (sum of w l over the sum of w, ignored pixels
    counting 1 unless ``avg_non_ignore``), or over ``denominator`` if given.
    """
    num_classes = logits.shape[1]
    z = logits.double().movedim(1, -1).reshape(-1, num_classes)
    y = label.reshape(-1).long()
    n = torch.as_tensor(counts, dtype=torch.float64)
    keep = y != ignore_index
    zk, yk = z[keep], y[keep]
    if batch_counts is None:
        batch_counts = np.bincount(yk.numpy(), minlength=num_classes)
    w_class = naive_class_weights(n, batch_counts, weight_power,
                                  max_weight_ratio)
    ratio = (n[None, :] / n[yk][:, None])**tau  # (pixels, C)
    zk = zk - zk.max(1, keepdim=True).values.detach()
    denom = (ratio * zk.exp()).sum(1)
    w = w_class[yk]
    pixel_loss = (-zk.gather(1, yk[:, None])[:, 0] + denom.log()) * w
    if denominator is None:
        denominator = w.sum() + (0 if avg_non_ignore else (~keep).sum())
    return pixel_loss.sum() / denominator
