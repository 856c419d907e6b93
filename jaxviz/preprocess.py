"""Normalisation between RGB pixels and a model's input, and its inverse for display.

Images are NHWC RGB. uint8 images are divided by 255; float images must already be in
[0, 1]. Normalisation is outside the models on purpose: gradient methods work in the
normalised space and need to know its valid box (`valid_range`).
"""

import numpy as np
import jax
import jax.numpy as jnp

from jaxviz.errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_images(images, *, name: str = 'images', allow_single: bool = True):
  """Checks that `images` is (N, H, W, 3) or (H, W, 3); returns it batched.

  Grayscale and RGBA get a one-line error naming the fix; files read with
  `jaxviz.data` are converted to RGB on load.
  """
  shape = tuple(np.shape(images))
  if allow_single and len(shape) == 3 and shape[-1] in (1, 3, 4):
    images, shape = images[None], (1,) + shape
  if len(shape) == 2 or (len(shape) == 3 and not allow_single):
    raise InputError(f'{name} has shape {shape}: expected (N, H, W, 3) RGB; a 2-D array '
                     'is a grayscale image, repeat it over 3 channels')
  if len(shape) != 4:
    raise InputError(f'{name} has shape {shape}: expected (N, H, W, 3) RGB images')
  if shape[-1] != 3:
    kind = {1: 'grayscale', 4: 'RGBA'}.get(shape[-1], f'{shape[-1]}-channel')
    raise InputError(f'{name} has shape {shape}: a {kind} image, but models take RGB '
                     '(N, H, W, 3); convert it first (jaxviz.data.load_image does)')
  if shape[0] == 0:
    raise InputError(f'{name} is an empty batch')
  return images


def preprocess(images, mean=IMAGENET_MEAN, std=IMAGENET_STD, dtype=jnp.float32):
  """RGB images, uint8 in [0, 255] or float in [0, 1], -> normalised model input.

  Args:
    images: (N, H, W, 3) or (H, W, 3) RGB.
    mean, std: per-channel constants (a loaded model carries its own).
    dtype: output dtype.

  Returns:
    (N, H, W, 3) array (x / 255 - mean) / std for uint8, (x - mean) / std for floats.
  """
  images = check_images(images)
  if np.issubdtype(images.dtype, np.integer):
    if images.dtype != np.uint8:
      raise InputError(f'integer images must be uint8, got {images.dtype}')
    x = jnp.asarray(images, dtype) / 255
  else:
    x = jnp.asarray(images, dtype)
    if not isinstance(x, jax.core.Tracer):
      lo, hi = float(x.min()), float(x.max())
      if not (np.isfinite(lo) and np.isfinite(hi)):
        raise InputError('images contain NaN or infinite values')
      if lo < -1e-6 or hi > 1 + 1e-6:
        raise InputError(f'float images must lie in [0, 1], got [{lo:.3g}, {hi:.3g}] '
                         '(already normalised? pass uint8 or [0, 1] RGB)')
  return (x - jnp.asarray(mean, dtype)) / jnp.asarray(std, dtype)


def deprocess(x, mean=IMAGENET_MEAN, std=IMAGENET_STD, clip: bool = True):
  """Inverse of `preprocess`: normalised images -> float RGB in [0, 1] (clipped)."""
  rgb = x * jnp.asarray(std, x.dtype) + jnp.asarray(mean, x.dtype)
  return jnp.clip(rgb, 0.0, 1.0) if clip else rgb


def valid_range(mean=IMAGENET_MEAN, std=IMAGENET_STD) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel (low, high) of the normalised values of pixels in [0, 1]."""
  mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
  return -mean / std, (1 - mean) / std
