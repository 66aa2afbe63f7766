"""ImagePipeline stage: path -> decoded, colour-converted, resized, rescaled image tensor."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from brevetti_pipe.config._schema import StrictModel
from brevetti_pipe.errors import StageError
from brevetti_pipe.stages._base import ImageSize, Roi, Stage
from brevetti_pipe.stages._brevettiai import image_pipeline_spellings

if TYPE_CHECKING:
    import pandas as pd
    import tensorflow as tf

__all__ = ["ImagePipeline", "ImagePipelineParams"]


class ImagePipelineParams(StrictModel):
    """Parameters of :class:`ImagePipeline` (brevettiai 0.5 names)."""

    target_size: ImageSize | None = Field(None, description="Output (height, width); null keeps the size")
    rois: list[Roi] | None = Field(
        None, description="Regions of interest as (x0, y0, x1, y1) pixel boxes, cropped before resizing"
    )
    roi_mode: Literal["concatenate_height", "concatenate_width", "stack"] = Field(
        "concatenate_height", description="How several ROIs combine"
    )
    color_mode: Literal["rgb", "greyscale", "keep", "bayer"] = Field(
        "rgb", description="Output channels: 3, 1 or as stored; bayer demosaics a raw mosaic (first channel) to RGB "
        "at half the size, as brevettiai did")
    keep_aspect_ratio: bool = Field(False, description="Pad instead of stretching when resizing")
    rescale: Literal["unit", "imagenet", "imagenet_mean_std", "affine"] | None = Field(
        None, description="null keeps [0, 255]; unit -> [0, 1]; imagenet -> [-1, 1]; imagenet_mean_std; affine"
    )
    offset: float = Field(0.0, description="With rescale=affine: added after scaling")
    scale: float = Field(1.0, description="With rescale=affine: multiplies the pixel values")
    resize_method: Literal["bilinear", "nearest", "bicubic", "area", "lanczos3", "lanczos5", "gaussian", "mitchellcubic"] = Field(
        "bilinear", description="Interpolation of the resize"
    )
    antialias: bool = Field(False, description="Antialias when downsampling")
    padding_mode: Literal["constant", "reflect", "symmetric"] = Field(
        "constant", description="Padding when keep_aspect_ratio is set (tf.pad modes)")
    center_padding: bool = Field(True, description="Center the image in the padding (false: pad bottom and right)")
    bit_depth: Literal[8, 16] = Field(8, description="Decode depth: 16 keeps 16-bit PNG/TIFF precision")
    jpeg_downscale: Literal[1, 2, 4, 8] = Field(
        1, description="Decode JPEGs at 1/N size in the DCT (much faster) before resizing; pick N so the "
        "decoded size stays above target_size"
    )
    dtype: Literal["float32", "float16", "uint8", "uint16"] = Field(
        "float32", description="Output dtype (integer dtypes round and clip; use them with rescale=null)"
    )
    path_key: str = Field("path", description="Element key holding the file path")
    output_key: str = Field("img", description="Element key receiving the image")

    _brevettiai = model_validator(mode="before")(image_pipeline_spellings)

    @field_validator("roi_mode")
    @classmethod
    def _rois_combine(cls, mode: str, info: ValidationInfo) -> str:
        rois = info.data.get("rois")
        if rois and info.data.get("target_size") is None:
            sizes = [(y1 - y0, x1 - x0) for (x0, y0, x1, y1) in rois]
            what, got = {"concatenate_height": ("width", [w for _, w in sizes]),
                         "concatenate_width": ("height", [h for h, _ in sizes])}.get(mode, ("size", sizes))
            if len(set(got)) > 1:
                raise StageError(f"{mode} needs ROIs of one {what} unless target_size resizes them; the rois have {got}")
        return mode

    def output_size(self) -> tuple[int, int] | None:
        """(height, width) of the output when the config fixes it (``target_size`` or ``rois``);
        None when it depends on the images. With ``roi_mode=stack``, the size of one crop."""
        if not self.rois:
            return self.target_size
        sizes = [self.target_size or (y1 - y0, x1 - x0) for (x0, y0, x1, y1) in self.rois]
        if self.roi_mode == "concatenate_height":
            return sum(h for h, _ in sizes), sizes[0][1]
        if self.roi_mode == "concatenate_width":
            return sizes[0][0], sum(w for _, w in sizes)
        return sizes[0]


class ImagePipeline(Stage, name="image_pipeline"):
    """Reads and prepares images.

    Input: ``x[path_key]``, a string scalar (a local file path: BMP, PNG, JPEG, GIF, or TIFF,
    which :meth:`prepare` transcodes losslessly to PNG once, in the cache).
    Output: ``x[output_key]``, ``[H, W, C]`` of ``dtype`` with H, W = ``target_size`` and C = 3
    (rgb), 1 (greyscale) or as stored (keep); values per ``rescale`` relative to the decode
    range ([0, 255] at 8 bits, [0, 65535] at 16 bits).
    """

    Params = ImagePipelineParams

    @property
    def channels(self) -> int | None:
        return {"rgb": 3, "greyscale": 1, "bayer": 3}.get(self.params.color_mode)

    def __call__(self, x: dict[str, tf.Tensor], seed: tf.Tensor | None = None) -> dict[str, Any]:
        import tensorflow as tf

        return {**x, self.params.output_key: self.process_bytes(tf.io.read_file(x[self.params.path_key]))}

    def process_bytes(self, data: tf.Tensor) -> tf.Tensor:
        """Encoded image bytes (string scalar) -> the prepared image tensor (see the class docstring)."""
        import tensorflow as tf

        from brevetti_pipe.stages import _image_core as core

        p = self.params
        depth = tf.uint16 if p.bit_depth == 16 else tf.uint8
        if p.color_mode == "bayer":
            image = core.bayer_demosaic(core.decode(data, depth)[..., :1])
        elif p.jpeg_downscale > 1 and p.bit_depth == 8 and self.channels is not None:
            channels = self.channels
            is_jpeg = tf.equal(tf.strings.substr(data, 0, 2), b"\xff\xd8")
            image = tf.cond(
                is_jpeg,
                lambda: tf.io.decode_jpeg(data, channels=channels, ratio=p.jpeg_downscale),
                lambda: core.to_channels(core.decode(data, depth), channels),
            )
            image.set_shape([None, None, channels])
        elif self.channels == 3:
            # the decoders convert grey / grey+alpha / RGBA to RGB themselves: no extra copy
            image = tf.io.decode_image(data, channels=3, dtype=depth, expand_animations=False)
        else:
            image = core.to_channels(core.decode(data, depth), self.channels)
        if p.rois:
            crops = [image[y0:y1, x0:x1] for (x0, y0, x1, y1) in p.rois]
            if p.target_size is not None:
                crops = [core.resize(c, p.target_size, p.resize_method, p.antialias, p.keep_aspect_ratio,
                                 p.padding_mode, p.center_padding) for c in crops]
            axis = {"concatenate_height": 0, "concatenate_width": 1, "stack": None}[p.roi_mode]
            image = tf.stack(crops) if axis is None else tf.concat(crops, axis=axis)
        elif p.target_size is not None:
            image = core.resize(image, p.target_size, p.resize_method, p.antialias, p.keep_aspect_ratio,
                                p.padding_mode, p.center_padding)
        image = core.rescale(image, p.rescale, p.offset, p.scale, maximum=65535.0 if p.bit_depth == 16 else 255.0)
        image = core.cast(image, p.dtype)
        if p.target_size is not None and not p.rois:
            image.set_shape([p.target_size[0], p.target_size[1], self.channels])
        return image

    def reads(self) -> set[str]:
        return {self.params.path_key}

    def sample_ranks(self) -> dict[str, int]:
        return {self.params.path_key: 0}

    @property
    def check_per_sample(self) -> bool:  # type: ignore[override]
        """``color_mode=keep`` compares each image's channels with the others'."""
        return self.params.color_mode != "keep"

    def check(self, samples: pd.DataFrame) -> dict[int, str]:
        """Fully decode every image once (threads, Pillow): empty, truncated, corrupt or non-image
        files, unsupported colour spaces, and with ``color_mode=keep`` a channel count that
        differs from the rest are reported."""
        from brevetti_pipe.stages._transcode import inspect_images

        key = self.params.path_key
        if key not in samples.columns:
            return {}
        results = inspect_images(samples[key].astype(str).tolist())
        bad = {i: r for i, (r, _) in enumerate(results) if r}
        if self.params.color_mode == "keep":
            channels = [c for r, c in results if not r]
            if channels:
                usual = max(set(channels), key=channels.count)
                for i, (r, c) in enumerate(results):
                    if not r and c != usual:
                        bad[i] = f"has {c} channel(s) where the others have {usual} (color_mode=keep needs one count)"
        return bad

    def _tiff(self, samples: pd.DataFrame) -> pd.Series | None:
        key = self.params.path_key
        if key not in samples.columns:
            return None
        return samples[key].astype(str).str.lower().str.endswith((".tif", ".tiff"))

    def prepare_reads_files(self, samples: pd.DataFrame) -> bool:
        tiff = self._tiff(samples)
        return tiff is not None and bool(tiff.any())

    def prepare(self, samples: pd.DataFrame, cache_dir: str) -> pd.DataFrame:
        """TIFF files -> lossless PNG copies in ``cache_dir`` (8 or 16 bit), once per file."""
        tiff = self._tiff(samples)
        if tiff is None or not tiff.any():
            return samples
        key = self.params.path_key
        paths = samples[key].astype(str)
        from brevetti_pipe.stages._transcode import tiff_to_png

        converted = paths.copy()
        converted[tiff] = [tiff_to_png(p, cache_dir) for p in paths[tiff]]
        return samples.assign(**{key: converted})
