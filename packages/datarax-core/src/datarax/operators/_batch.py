"""Batch-level operators: MixUp and CutMix, with labels mixed accordingly.

Each record is mixed with its partner in the batch: the record at the mirrored
place (``batch[::-1]``), as most implementations do. The mixing draws (the ratio,
the box) come from each record's own key, so they do not depend on the batch
size or the mode; the partner does depend on the batch: at another batch size a
record is mixed with another record.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from datarax.core._records import RecordKeyed
from datarax.core._source import Batch
from datarax.operators._record import check_magnitude, magnitude, record_keys


def _check_alpha(owner: str, alpha: float) -> float:
    alpha = check_magnitude(owner, "alpha", alpha)
    if alpha == 0:
        raise ValueError(f"{owner}: alpha must be > 0 (Beta(alpha, alpha)), got 0.")
    return alpha


def _float_field(owner: str, batch: Batch, field: str) -> jax.Array:
    if field not in batch:
        raise KeyError(
            f"{owner} mixes field {field!r}, but the batch has {sorted(batch)}; "
            "name the fields to mix with fields= (and the labels with label=)."
        )
    x = batch[field]
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(
            f"{owner} mixes float fields, but field {field!r} is {x.dtype}; "
            "Normalize (or cast to float) before mixing."
        )
    return x


def _soft_labels(owner: str, batch: Batch, label: str, num_classes: int | None):
    """The label field as float class probabilities ``[batch, classes]``."""
    if label not in batch:
        raise KeyError(
            f"{owner} mixes the labels in field {label!r}, but the batch has "
            f"{sorted(batch)}; name it with label=."
        )
    y = batch[label]
    if y.ndim == 1 and jnp.issubdtype(y.dtype, jnp.integer):
        if num_classes is None:
            raise ValueError(
                f"{owner}: field {label!r} holds integer class ids; pass "
                "num_classes= to mix them as one-hot labels."
            )
        return jax.nn.one_hot(y, num_classes, dtype=jnp.float32)
    if y.ndim == 2 and jnp.issubdtype(y.dtype, jnp.floating):
        return y
    raise ValueError(
        f"{owner}: field {label!r} is {y.dtype}{list(y.shape)}; labels are integer "
        "class ids [batch] (with num_classes=) or float probabilities "
        "[batch, classes]."
    )


def _per_record(weights: jax.Array, x: jax.Array) -> jax.Array:
    return weights.reshape(-1, *[1] * (x.ndim - 1))


class MixUp(nnx.Module, RecordKeyed):
    """MixUp (Zhang et al. 2018): blends each record with its batch partner.

    ``x = lam * x + (1 - lam) * partner`` for each field in ``fields``, and the
    labels likewise (as probabilities), with ``lam ~ Beta(alpha, alpha)`` per
    record. ``alpha`` is a learnable ``nnx.Param`` (the Beta draw is
    differentiable in it, by implicit reparameterisation).

    Args:
        alpha: the Beta distribution's parameter (> 0; learnable).
        fields: the float fields to mix (e.g. the normalised images).
        label: the label field: integer class ids (pass ``num_classes``) or float
            probabilities ``[batch, classes]``; it comes out as float
            probabilities.
        num_classes: the number of classes of integer labels.
    """

    def __init__(
        self,
        alpha: float = 0.2,
        *,
        fields: Sequence[str] = ("image",),
        label: str = "label",
        num_classes: int | None = None,
    ):
        self.alpha = magnitude(_check_alpha(type(self).__name__, alpha))
        self.fields = tuple(fields)
        self.label = label
        self.num_classes = num_classes
        self.needs_record_keys = True

    def __call__(self, batch: Batch) -> Batch:
        """The batch with every record mixed with its partner."""
        name = type(self).__name__
        keys = record_keys(self)
        alpha = self.alpha[...]
        lam = jax.vmap(lambda key: jax.random.beta(key, alpha, alpha))(keys)
        out = dict(batch)
        for field in self.fields:
            x = _float_field(name, batch, field)
            w = _per_record(lam, x).astype(x.dtype)
            out[field] = w * x + (1 - w) * x[::-1]
        y = _soft_labels(name, batch, self.label, self.num_classes)
        out[self.label] = lam[:, None] * y + (1 - lam[:, None]) * y[::-1]
        return out


class CutMix(nnx.Module, RecordKeyed):
    """CutMix (Yun et al. 2019): pastes a box of the partner into each image.

    The box covers a share ``1 - lam`` of the image, ``lam ~ Beta(alpha,
    alpha)`` per record, centred at a random pixel and clipped to the image; the
    labels are mixed by the share of the image actually pasted. Not learnable
    (the box is a discrete choice).

    Args:
        alpha: the Beta distribution's parameter (> 0).
        field: the image field ``[batch, height, width, channels]``.
        label: as for :class:`MixUp`.
        num_classes: as for :class:`MixUp`.
    """

    def __init__(
        self,
        alpha: float = 1.0,
        *,
        field: str = "image",
        label: str = "label",
        num_classes: int | None = None,
    ):
        self.alpha = _check_alpha(type(self).__name__, alpha)
        self.field = field
        self.label = label
        self.num_classes = num_classes
        self.needs_record_keys = True

    def __call__(self, batch: Batch) -> Batch:
        """The batch with a box of each record's partner pasted into it."""
        name = type(self).__name__
        if self.field not in batch:
            raise KeyError(
                f"{name} pastes into field {self.field!r}, but the batch has "
                f"{sorted(batch)}; name the image field with field=."
            )
        x = batch[self.field]
        if x.ndim != 4:
            raise ValueError(
                f"{name} works on images [batch, height, width, channels], but "
                f"field {self.field!r} has shape {tuple(x.shape)}."
            )
        height, width = x.shape[1], x.shape[2]
        masks = jax.vmap(lambda key: self._box(key, height, width))(record_keys(self))
        pasted = masks.mean(axis=(1, 2))  # the share of each image replaced
        out = dict(batch)
        out[self.field] = jnp.where(masks[..., None], x[::-1], x)
        y = _soft_labels(name, batch, self.label, self.num_classes)
        keep = (1 - pasted)[:, None]
        out[self.label] = keep * y + (1 - keep) * y[::-1]
        return out

    def _box(self, key: jax.Array, height: int, width: int) -> jax.Array:
        """One record's box, as a boolean mask ``[height, width]``."""
        k_lam, k_y, k_x = jax.random.split(key, 3)
        lam = jax.random.beta(k_lam, self.alpha, self.alpha)
        side = jnp.sqrt(1 - lam)
        half_h, half_w = side * height / 2, side * width / 2
        cy = jax.random.uniform(k_y, (), jnp.float32, 0, height)
        cx = jax.random.uniform(k_x, (), jnp.float32, 0, width)
        rows = jnp.arange(height, dtype=jnp.float32)[:, None] + 0.5
        columns = jnp.arange(width, dtype=jnp.float32)[None, :] + 0.5
        inside_y = (rows >= cy - half_h) & (rows < cy + half_h)
        inside_x = (columns >= cx - half_w) & (columns < cx + half_w)
        return inside_y & inside_x
