"""ImageAugmenter stage: seeded geometric and photometric augmentation, masks kept aligned."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from brevetti_pipe.config._schema import StrictModel
from brevetti_pipe.stages._base import Stage

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = ["ImageAugmenter", "RandomTransformer", "ImageNoise", "ImageAugmenterParams"]


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
    contrast: float = Field(0.25, ge=0, lt=1, description="Scale contrast by a factor in [1 - c, 1 + c]")
    stddev: float = Field(0.0, ge=0, description="Gaussian noise stddev as a fraction of the value range")

    @property
    def active(self) -> bool:
        return self.chance > 0 and (self.brightness > 0 or self.contrast > 0 or self.stddev > 0)


class ImageAugmenterParams(StrictModel):
    """Parameters of :class:`ImageAugmenter`; a part set to null is skipped."""

    image_keys: list[str] = Field(default_factory=lambda: ["img"], description="Keys of images to augment")
    label_keys: list[str] = Field(default_factory=list, description="Keys of masks (geometric transforms only, nearest)")
    value_range: tuple[float, float] = Field((0.0, 1.0), description="Pixel value range of the images (after rescale)")
    random_transformer: RandomTransformer | None = Field(default_factory=RandomTransformer)
    image_noise: ImageNoise | None = Field(default_factory=ImageNoise)


class ImageAugmenter(Stage, name="image_augmenter"):
    """Augments images (and aligned masks) with stateless per-sample randomness.

    Input/Output: ``x[k]`` for k in ``image_keys``: float ``[H, W, C]``, same shape and dtype out;
    ``x[k]`` for k in ``label_keys``: ``[H, W, C]`` masks, same geometric transform, nearest
    neighbour, dtype kept. Every transform draws from its own stream of the sample seed, so
    flips, warp and noise are independent; each epoch draws anew.
    """

    Params = ImageAugmenterParams
    random = True

    def __call__(self, x: dict[str, tf.Tensor], seed: tf.Tensor | None = None) -> dict[str, Any]:
        import tensorflow as tf

        from brevetti_pipe.stages import _augment_core as core

        if seed is None:
            raise ValueError("ImageAugmenter needs a seed; run it inside a DataGenerator")
        p = self.params
        out = dict(x)
        keys = [*p.image_keys, *p.label_keys]
        t = p.random_transformer
        if t is not None:
            for flag, key, fn in ((t.flip_left_right, 1, tf.image.flip_left_right), (t.flip_up_down, 2, tf.image.flip_up_down)):
                if flag:
                    do = core.chance(seed, key, 0.5)
                    for k in keys:
                        out[k] = tf.cond(do, lambda v=out[k], f=fn: f(v), lambda v=out[k]: v)
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
        n = p.image_noise
        if n is not None and n.active:
            lo, hi = p.value_range
            span = hi - lo
            do = core.chance(seed, 10, n.chance)
            delta = core.uniform(seed, 11, -n.brightness, n.brightness) * span
            factor = core.uniform(seed, 12, 1.0 - n.contrast, 1.0 + n.contrast)
            for i, k in enumerate(p.image_keys):
                img = out[k]

                def noisy(img: tf.Tensor = img, i: int = i) -> tf.Tensor:
                    mean = tf.reduce_mean(img, axis=[0, 1], keepdims=True)
                    y = (img - mean) * factor + mean + delta
                    if n.stddev > 0:
                        y = y + tf.random.stateless_normal(tf.shape(img), seed=core._fold(seed, 20 + i)) * (n.stddev * span)
                    return tf.clip_by_value(y, lo, hi)

                out[k] = tf.cond(do, noisy, lambda v=img: v)
        return out
