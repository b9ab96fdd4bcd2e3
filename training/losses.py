"""Losses of the EVOLAND shallow SISR training: L1 reconstruction and the relativistic GAN.

All functions are pure torch functions that follow the device and dtype of their inputs.

GAN set-up of the seed (CESBIO, SUREDOS24): a UNet discriminator that sees high-pass-filtered
images (the filter: :func:`s2sr.training.filters.high_pass`), the relativistic average
formulation of ESRGAN (Wang et al. 2018) on the discriminator's raw logits
(:func:`relativistic_d_loss`, :func:`relativistic_g_loss`), and an adversarial weight of
0.005-0.01 switched on after about 2000 steps (:func:`gan_weight`).

Relativistic average discriminator, with ``C`` the raw discriminator output (logits)::

    D_Ra(a, b) = sigmoid(C(a) - mean(C(b)))
    L_D = -E[log D_Ra(x_r, x_f)] - E[log(1 - D_Ra(x_f, x_r))]
    L_G = -E[log(1 - D_Ra(x_r, x_f))] - E[log D_Ra(x_f, x_r)]

Both losses are computed with ``binary_cross_entropy_with_logits`` (log-sum-exp stable) and
halved, as in ESRGAN's reference set-up, so that an undecided discriminator (all logits equal)
gives ``log 2`` for either loss.
"""

from typing import Optional

import torch
import torch.nn.functional as F


def l1_loss(pred: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean absolute error, optionally over the unmasked elements only.

    Args:
        pred, target: ``[B, C, H, W]`` (any identical shapes), same units.
        mask: 0/1 weights broadcastable to ``pred`` without enlarging it, typically
            ``[B, C, 1, 1]`` (bands without a true target in a sample get 0) or ``[B, C, H, W]``;
            bool or float.

    Returns:
        A scalar: ``sum(|pred - target| * mask) / sum(mask broadcast to pred's shape)``.  When
        the mask is all zero the loss is 0 (not NaN) and still part of the graph.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    diff = (pred - target).abs()
    if mask is None:
        return diff.mean()
    if torch.broadcast_shapes(mask.shape, diff.shape) != diff.shape:
        raise ValueError(f"mask {tuple(mask.shape)} does not broadcast to {tuple(diff.shape)}")
    weights = mask.to(device=diff.device, dtype=diff.dtype).expand_as(diff)
    # clamp: an all-masked batch contributes 0 instead of 0/0.
    return (diff * weights).sum() / weights.sum().clamp_min(1.0)


def _bce_logits(logits: torch.Tensor, target: float) -> torch.Tensor:
    """Mean binary cross-entropy of logits against a constant 0/1 label."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def relativistic_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Relativistic average discriminator loss (ESRGAN), on raw logits.

    ``0.5 * (BCE(C(x_r) - mean C(x_f), 1) + BCE(C(x_f) - mean C(x_r), 0))``.

    Args:
        real_logits: ``C(x_r)``, discriminator logits on real (target) images, any shape, e.g.
            per-pixel maps ``[B, 1, H, W]`` from the UNet discriminator.
        fake_logits: ``C(x_f)``, logits on generated images, same layout.  For the D step the
            generator output must be detached before the discriminator sees it.

    Returns:
        A scalar.  The relativistic means ``mean C(.)`` are taken over all elements (batch and
        spatial dims, and the single channel), and so is the final BCE average: every pixel of
        every sample is one real/fake decision compared with the average decision on the other
        set.  Gradients flow through both branches, means included.
    """
    real_rel = real_logits - fake_logits.mean()
    fake_rel = fake_logits - real_logits.mean()
    return 0.5 * (_bce_logits(real_rel, 1.0) + _bce_logits(fake_rel, 0.0))


def relativistic_g_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Relativistic average generator loss (ESRGAN), on raw logits.

    ``0.5 * (BCE(C(x_r) - mean C(x_f), 0) + BCE(C(x_f) - mean C(x_r), 1))``: the roles of
    :func:`relativistic_d_loss` swapped, so ``g_loss(r, f) == d_loss(f, r)``.  Unlike the
    standard GAN, the generator also learns from the real branch (it makes real images look
    less real relative to its fakes), through ``mean C(x_f)``.

    Args:
        real_logits: ``C(x_r)`` on real images, any shape (e.g. ``[B, 1, H, W]``).  The caller
            passes it DETACHED (``disc(real).detach()``, or computed under ``torch.no_grad``)
            for the G step: real images do not depend on the generator, so the only gradient
            its graph could carry is into D's parameters, which the G step must not update
            (and which would otherwise accumulate into D's ``.grad`` before D's own step).
        fake_logits: ``C(G(x))`` on generated images, NOT detached: the generator's gradient
            flows through it (through D, whose parameters the G optimiser does not step).

    Returns:
        A scalar; means over all elements as in :func:`relativistic_d_loss`.
    """
    real_rel = real_logits - fake_logits.mean()
    fake_rel = fake_logits - real_logits.mean()
    return 0.5 * (_bce_logits(real_rel, 0.0) + _bce_logits(fake_rel, 1.0))


def gan_weight(step: int, start_step: int, ramp_steps: int, weight: float) -> float:
    """Adversarial loss weight at a training step.

    0 for ``step <= start_step`` (pure L1 warm-up; the seed switches the GAN on after about
    2000 steps), then a linear ramp reaching ``weight`` at ``start_step + ramp_steps`` and
    constant after (the seed uses 0.005-0.01).  ``ramp_steps = 0`` switches the full weight on
    right after ``start_step``.  The ramp keeps the still-untrained discriminator from jolting
    a well pre-trained generator.
    """
    if start_step < 0 or ramp_steps < 0 or weight < 0:
        raise ValueError("start_step, ramp_steps and weight must be >= 0")
    if step <= start_step:
        return 0.0
    if ramp_steps == 0:
        return float(weight)
    return float(weight) * min(1.0, (step - start_step) / ramp_steps)


def local_bounds(x: torch.Tensor, factor: int, window: int = 5, tolerance: float = 0.1) -> tuple:
    """Per output pixel, the allowed range from the input's neighbourhood.

    Args:
        x: ``[B, C, H, W]`` input (any units).
        factor: upsampling factor of the output grid.
        window: odd side of the input neighbourhood (input pixels) around each output pixel's
            input pixel.
        tolerance: fraction of the local range ``max - min`` allowed beyond either end.

    Returns:
        ``(low, high)``, each ``[B, C, f H, f W]``: ``min - t (max - min)`` and ``max + t (max - min)``
        over the window, repeated onto the ``factor`` x ``factor`` output pixels of each input pixel.
    """
    if window % 2 != 1:
        raise ValueError(f"window must be odd, got {window}")
    hi = F.max_pool2d(x, window, stride=1, padding=window // 2)
    lo = -F.max_pool2d(-x, window, stride=1, padding=window // 2)
    span = tolerance * (hi - lo)
    up = lambda t: t.repeat_interleave(factor, -2).repeat_interleave(factor, -1)  # noqa: E731
    return up(lo - span), up(hi + span)


def overshoot_excess(pred: torch.Tensor, x: torch.Tensor, window: int = 5, tolerance: float = 0.1,
                     target: Optional[torch.Tensor] = None) -> torch.Tensor:
    """How far ``pred`` leaves its input's local range widened by ``tolerance`` of it, per pixel.

    Args:
        pred: ``[B, C, f H, f W]`` output; x: ``[B, C, H, W]`` input, same units.
        target: optional ``[B, C, f H, f W]`` reference: the bound widens to include it, so only
            overshoot that is also an error counts (in the Wald pairs the true 20 m detail leaves
            the 80 m input's range at 15-25 % of the 20 m bands' pixels; a bound the truth breaks
            would fight the L1 term).

    Returns:
        ``[B, C, f H, f W]`` >= 0: ``relu(pred - high) + relu(low - pred)`` (``local_bounds``).
        Zero where the output stays within 10 % (default) of the local input range beyond the local
        input maximum (bright-target overshoot) and minimum (undershoot).
    """
    factor = pred.shape[-1] // x.shape[-1]
    low, high = local_bounds(x, factor, window, tolerance)
    if target is not None:
        low, high = torch.minimum(low, target), torch.maximum(high, target)
    return F.relu(pred - high) + F.relu(low - pred)


def overshoot_loss(pred: torch.Tensor, x: torch.Tensor, window: int = 5, tolerance: float = 0.1,
                   target: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean of ``overshoot_excess`` (a scalar, pred's units): 0 when the bound holds everywhere."""
    return overshoot_excess(pred, x, window, tolerance, target).mean()
