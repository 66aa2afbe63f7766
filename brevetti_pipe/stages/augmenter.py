"""ImageAugmenter stage: seeded geometric and photometric augmentation, masks kept aligned."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, Field, NonNegativeFloat, PositiveInt, field_validator, model_validator

from brevetti_pipe.config._schema import StrictModel
from brevetti_pipe.errors import StageError
from brevetti_pipe.stages._base import Stage
from brevetti_pipe.stages._brevettiai import augmenter_spellings

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = [
    "ImageAugmenter", "ImageAugmenterParams", "ImageDeformation", "ImageFiltering", "ImageNoise", "RandomTransformer",
]


def _at_most(value: tuple[float, float], limit: float) -> tuple[float, float]:
    if value[1] > limit:
        raise StageError(f"a range here goes up to at most {limit}; got {list(value)}")
    return value


def _ordered(value: tuple[float, float]) -> tuple[float, float]:
    if value[0] > value[1]:
        raise StageError(f"a range is [low, high] with low <= high; got {list(value)}")
    return value


#: A [low, high] range drawn uniformly (brevettiai's spelling of contrast, saturation, emboss_strength).
Range = Annotated[tuple[NonNegativeFloat, NonNegativeFloat], AfterValidator(_ordered)]


def factor_range(value: float | tuple[float, float]) -> tuple[float, float] | None:
    """A factor parameter as its [low, high] range: ``c`` -> [1 - c, 1 + c]; None when it is the identity."""
    low, high = value if isinstance(value, tuple) else (1.0 - value, 1.0 + value)
    return None if low == high == 1.0 else (low, high)


def strength_range(value: float | tuple[float, float]) -> tuple[float, float] | None:
    """A strength parameter as its [low, high] range: ``s`` -> [0, s]; None when it is always 0."""
    low, high = value if isinstance(value, tuple) else (0.0, value)
    return None if high == 0.0 else (low, high)


class RandomTransformer(StrictModel):
    """Geometric transforms, drawn once per sample and applied to images and label masks alike."""

    chance: float = Field(0.5, ge=0, le=1, description="Probability that the affine warp is applied")
    flip_up_down: bool = Field(True, description="Random vertical flip (probability 0.5)")
    flip_left_right: bool = Field(True, description="Random horizontal flip (probability 0.5)")
    scale: float = Field(0.1, ge=0, lt=1, description="Zoom by a factor in [1 - scale, 1 + scale]")
    rotate_chance: float = Field(0.5, ge=0, le=1, description="Probability of a rotation within the warp")
    rotate: float = Field(0.0, ge=0, le=180, description="Rotation in [-rotate, rotate] degrees")
    translate_horizontal: float = Field(0.1, ge=0, le=1, description="Shift by up to this fraction of the width")
    translate_vertical: float = Field(0.1, ge=0, le=1, description="Shift by up to this fraction of the height")
    shear: float = Field(0.04, ge=0, le=1, description="Shear factor in [-shear, shear]")
    rotate90: bool = Field(False, description="Random rotation by 0/90/180/270 degrees (square images)")
    interpolation: Literal["bilinear", "nearest"] = Field("bilinear", description="Image interpolation (masks: nearest)")
    fill_mode: Literal["reflect", "constant", "nearest", "wrap"] = Field("reflect", description="Outside pixels")

    @property
    def warps(self) -> bool:
        """False when the parameters make the affine warp the identity (then it is skipped)."""
        return self.chance > 0 and (
            self.scale > 0 or (self.rotate > 0 and self.rotate_chance > 0)
            or self.translate_horizontal > 0 or self.translate_vertical > 0 or self.shear > 0
        )


class ImageNoise(StrictModel):
    """Photometric changes, applied to image keys only."""

    chance: float = Field(0.5, ge=0, le=1, description="Probability that the noise block is applied")
    brightness: float = Field(0.25, ge=0, le=1, description="Add up to +-brightness x value range")
    contrast: Annotated[float, Field(ge=0, lt=1)] | Range = Field(
        0.25, description="Scale contrast by a factor in [1 - c, 1 + c], or in a [low, high] range")
    hue: float = Field(0.0, ge=0, le=0.5, description="Shift hue by up to +-hue (rgb images only)")
    saturation: Annotated[float, Field(ge=0, lt=1)] | Range = Field(
        0.0, description="Scale saturation by a factor in [1 - s, 1 + s] or a [low, high] range (rgb only)")
    stddev: float = Field(0.0, ge=0, description="Gaussian noise stddev as a fraction of the value range")
    salt_pepper: float = Field(0.0, ge=0, le=1, description="Fraction of pixels set to black or white")

    @property
    def active(self) -> bool:
        return self.chance > 0 and (
            any(v > 0 for v in (self.brightness, self.hue, self.stddev, self.salt_pepper))
            or factor_range(self.contrast) is not None or factor_range(self.saturation) is not None
        )


class ImageFiltering(StrictModel):
    """Blur and emboss filters, applied to image keys only."""

    chance: float = Field(0.5, ge=0, le=1, description="Probability that the filter block is applied")
    emboss_strength: Annotated[float, Field(ge=0, le=1)] | Annotated[Range, AfterValidator(lambda r: _at_most(r, 4.0))] = Field(
        0.0, description="Blend in up to this much of an emboss filter, or a strength drawn in [low, high] (<= 4)")
    avg_blur: tuple[PositiveInt, PositiveInt] = Field((1, 1), description="Box blur kernel (height, width); (1, 1) is none")
    gaussian_blur_sigma: float = Field(0.0, ge=0, le=10, description="Gaussian blur with sigma drawn in [0, this]")

    @property
    def active(self) -> bool:
        return self.chance > 0 and (
            strength_range(self.emboss_strength) is not None or max(self.avg_blur) > 1 or self.gaussian_blur_sigma > 0)


class ImageDeformation(StrictModel):
    """Elastic deformation: smooth random displacements, applied to images and masks alike."""

    chance: float = Field(0.5, ge=0, le=1, description="Probability that the deformation is applied")
    alpha: float = Field(0.0, ge=0, description="Displacement strength in pixels")
    sigma: float = Field(4.0, gt=0, le=16, description="Smoothness of the displacement field (pixels)")
    interpolation: Literal["bilinear", "nearest"] = Field("bilinear", description="Image resampling (masks: nearest)")

    @property
    def active(self) -> bool:
        return self.chance > 0 and self.alpha > 0


class ImageAugmenterParams(StrictModel):
    """Parameters of :class:`ImageAugmenter`; a part set to null is skipped."""

    image_keys: list[str] = Field(default_factory=lambda: ["img"], description="Keys of images to augment")
    label_keys: list[str] = Field(default_factory=list, description="Keys of masks (geometric transforms only, nearest)")
    value_range: tuple[float, float] = Field((0.0, 1.0), description="Pixel value range of the images (after rescale)")
    random_transformer: RandomTransformer | None = Field(default_factory=RandomTransformer)
    image_noise: ImageNoise | None = Field(default_factory=ImageNoise)
    image_filter: ImageFiltering | None = Field(
        default_factory=ImageFiltering, description="Blur / emboss (inactive at zero strength); null skips it"
    )
    image_deformation: ImageDeformation | None = Field(
        default_factory=ImageDeformation, description="Elastic deformation (inactive at alpha 0); null skips it"
    )

    _brevettiai = model_validator(mode="before")(augmenter_spellings)

    @field_validator("value_range")
    @classmethod
    def _low_below_high(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not value[0] < value[1]:
            raise StageError("value_range is (low, high) with low < high, e.g. [0, 1] after rescale=unit")
        return value


class ImageAugmenter(Stage, name="image_augmenter"):
    """Augments images (and aligned masks) with stateless per-sample randomness.

    Input/Output: ``x[k]`` for k in ``image_keys``: float ``[H, W, C]``, same shape and dtype out;
    ``x[k]`` for k in ``label_keys``: ``[H, W, C]`` masks, same geometric transform, nearest
    neighbour, dtype kept. Every transform draws from its own stream of the sample seed, so
    flips, warp and noise are independent; each epoch draws anew.
    """

    Params = ImageAugmenterParams
    random = True

    def reads(self) -> set[str]:
        return set(self.params.image_keys) | set(self.params.label_keys)

    def sample_ranks(self) -> dict[str, int]:
        return {k: 3 for k in self.params.image_keys}

    def __call__(self, x: dict[str, tf.Tensor], seed: tf.Tensor | None = None) -> dict[str, Any]:
        import tensorflow as tf

        from brevetti_pipe.stages import _augment_core as core

        if seed is None:
            seed = self.seed_tensor()
        p = self.params
        out = dict(x)
        keys = [*p.image_keys, *(k for k in p.label_keys if k in x)]  # absent masks are skipped, as in brevettiai
        t = p.random_transformer
        if t is not None:
            for flag, key, fn in ((t.flip_left_right, 1, tf.image.flip_left_right), (t.flip_up_down, 2, tf.image.flip_up_down)):
                if flag:
                    do = core.chance(seed, key, 0.5)
                    for k in keys:
                        out[k] = tf.cond(do, lambda v=out[k], f=fn: f(v), lambda v=out[k]: v)
            if t.rotate90:
                ref = out[p.image_keys[0]]
                if ref.shape[0] is not None and ref.shape[0] != ref.shape[1]:
                    raise StageError(f"rotate90 needs square images; got {ref.shape[0]}x{ref.shape[1]}")
                k = tf.cast(tf.floor(core.uniform(seed, 13, 0.0, 4.0)), tf.int32)
                for key_ in keys:
                    out[key_] = tf.ensure_shape(tf.image.rot90(out[key_], k), out[key_].shape)
            if t.warps:
                ref = out[p.image_keys[0]]
                h, w = tf.shape(ref)[0], tf.shape(ref)[1]
                angle = tf.where(core.chance(seed, 4, t.rotate_chance), core.uniform(seed, 5, -t.rotate, t.rotate) * core.DEG, 0.0)
                matrix = core.affine_matrix(
                    h, w, angle,
                    core.uniform(seed, 6, 1.0 - t.scale, 1.0 + t.scale),
                    core.uniform(seed, 7, -t.shear, t.shear),
                    core.uniform(seed, 8, -t.translate_horizontal, t.translate_horizontal) * tf.cast(w, tf.float32),
                    core.uniform(seed, 9, -t.translate_vertical, t.translate_vertical) * tf.cast(h, tf.float32),
                )
                do = core.chance(seed, 3, t.chance)
                fill = t.fill_mode.upper()
                for k in keys:
                    interp = t.interpolation if k in p.image_keys else "nearest"
                    out[k] = tf.cond(do, lambda v=out[k], i=interp: core.warp(v, matrix, i, fill), lambda v=out[k]: v)
        d = p.image_deformation
        if d is not None and d.active:
            ref = out[p.image_keys[0]]
            dy, dx = core.displacement(seed, 30, tf.shape(ref)[:2], d.alpha, d.sigma)
            do = core.chance(seed, 31, d.chance)
            for k in keys:
                nearest = k not in p.image_keys or d.interpolation == "nearest"
                out[k] = tf.cond(do, lambda v=out[k], n_=nearest: core.dense_warp(v, dy, dx, n_), lambda v=out[k]: v)
        n = p.image_noise
        if n is not None and n.active:
            lo, hi = p.value_range
            span = hi - lo
            delta = core.uniform(seed, 11, -n.brightness, n.brightness) * span if n.brightness > 0 else None
            contrast = factor_range(n.contrast)
            factor = core.uniform(seed, 12, *contrast) if contrast is not None else None
            saturation = factor_range(n.saturation)
            for i, k in enumerate(p.image_keys):
                img = out[k]

                def noisy(img: tf.Tensor = img, i: int = i) -> tf.Tensor:
                    y = img
                    if factor is not None:
                        mean = tf.reduce_mean(y, axis=[0, 1], keepdims=True)
                        y = (y - mean) * factor + mean
                    if delta is not None:
                        y = y + delta
                    if (n.hue > 0 or saturation is not None) and img.shape[-1] == 3:
                        unit = (core.clip(y, lo, hi) - lo) / span
                        if n.hue > 0:
                            unit = tf.image.adjust_hue(unit, core.uniform(seed, 14, -n.hue, n.hue))
                        if saturation is not None:
                            unit = tf.image.adjust_saturation(unit, core.uniform(seed, 15, *saturation))
                        y = unit * span + lo
                    if n.stddev > 0:
                        y = y + tf.random.stateless_normal(tf.shape(img), seed=core._fold(seed, 20 + i)) * (n.stddev * span)
                    if n.salt_pepper > 0:
                        y = core.salt_and_pepper(y, seed, 40 + i, core.uniform(seed, 16, 0.0, n.salt_pepper), lo, hi)
                    return core.clip(y, lo, hi)

                if n.chance >= 1.0:
                    out[k] = noisy()
                else:
                    out[k] = tf.cond(core.chance(seed, 10, n.chance), noisy, lambda v=img: v)
        f = p.image_filter
        if f is not None and f.active:
            do = core.chance(seed, 50, f.chance)
            for k in p.image_keys:
                img = out[k]

                def filtered(img: tf.Tensor = img) -> tf.Tensor:
                    y = tf.cast(img, tf.float32)
                    if max(f.avg_blur) > 1:
                        ky = tf.fill([f.avg_blur[0]], 1.0 / f.avg_blur[0])
                        kx = tf.fill([f.avg_blur[1]], 1.0 / f.avg_blur[1])
                        y = core.separable_filter(y, ky, kx)
                    if f.gaussian_blur_sigma > 0:
                        radius = max(1, int(math.ceil(3 * f.gaussian_blur_sigma)))
                        kernel = core.gaussian_kernel(core.uniform(seed, 51, 0.0, f.gaussian_blur_sigma), radius)
                        y = core.separable_filter(y, kernel, kernel)
                    emboss = strength_range(f.emboss_strength)
                    if emboss is not None:
                        strength = core.uniform(seed, 52, *emboss)
                        y = y * (1 - strength) + core.filter2d(y, tf.constant(core.EMBOSS)) * strength
                    return tf.cast(y, img.dtype)

                out[k] = tf.cond(do, filtered, lambda v=img: v)
        return out
