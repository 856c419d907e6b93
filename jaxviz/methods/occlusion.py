"""Occlusion sensitivity (Zeiler & Fergus 2014, Fig. 7): slide a grey square over the
image and watch the class score."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz import parallel, validation
from jaxviz.errors import InputError
from jaxviz.methods._batched import BatchedMethod
from jaxviz.methods.attribution import attribution


class Occlusion(NamedTuple):
  """Per window position (N, gh, gw), and per pixel (N, H, W):

  probability: the target's softmax probability with the window occluded (the paper's
    Fig. 7 panel b).
  score_drop: f_target(image) - f_target(occluded image), logits (positive: the window
    covered evidence for the target).
  predicted: the class predicted with the window occluded (panel e).
  attribution: each pixel's mean score drop over the windows that cover it; 0 for
    pixels no window covers (a stride that does not divide H - window).
  """
  probability: jax.Array
  score_drop: jax.Array
  predicted: jax.Array
  attribution: jax.Array


def window_starts(size: int, window: int, stride: int) -> np.ndarray:
  """The first row (or column) of every window that fits: 0, stride, ... <= size - window."""
  if window > size:
    raise InputError(f'the occlusion window ({window} px) is larger than the image '
                     f'({size} px)')
  return np.arange(0, size - window + 1, stride)


def _coverage(size: int, window: int, stride: int) -> np.ndarray:
  """(size, windows) 0/1: pixel p lies in window i."""
  starts = window_starts(size, window, stride)
  p = np.arange(size)[:, None]
  return ((p >= starts[None]) & (p < starts[None] + window)).astype(np.float64)


def check_options(window, stride, window_chunk):
  validation.check_positive(window, 'window', integer=True)
  validation.check_positive(stride, 'stride', integer=True)
  validation.check_chunk_size(window_chunk)
  return int(window), int(stride)


def occlusion_one(apply_fn, params, image, label, key=None, *, window: int = 16,
                  stride: int = 8, fill: float = 0.0, window_chunk: int | None = 32):
  """Occlusion of one image: an `Occlusion` of (gh, gw) panels and an (H, W) attribution.

  Every window position is one image of a batched forward pass, `window_chunk` of them
  at a time (None: all at once).

  Args:
    apply_fn, params, image, label, key: the attribution protocol's (key unused).
    window: the square's side in pixels.
    stride: pixels between window positions; windows only where they fit.
    fill: the square's value in normalised space (0: the dataset's mean colour).
    window_chunk: at most this many occluded images per forward pass (None: all; the
      default 32 bounds memory at 224 px, where there are 729 windows).

  References:
    Zeiler & Fergus, Visualizing and Understanding Convolutional Networks, ECCV 2014,
    sec. 4.2 and Fig. 7.
  """
  del key
  window, stride = check_options(window, stride, window_chunk)
  validation.check_image(image)
  validation.check_class(label, apply_fn, params, image.shape)
  (h, w), dtype = image.shape[:2], image.dtype
  rows, cols = window_starts(h, window, stride), window_starts(w, window, stride)
  starts = np.stack(np.meshgrid(rows, cols, indexing='ij'), -1).reshape(-1, 2)
  patch = jnp.full((window, window, 3), fill, dtype)

  def logits(positions):  # (P, 2) -> (P, classes), one forward pass
    occluded = jax.vmap(lambda rc: jax.lax.dynamic_update_slice(
        image, patch, (rc[0], rc[1], jnp.zeros((), rc.dtype))))(positions)
    return apply_fn(params, occluded)

  occluded = parallel.map_chunks(logits, jnp.asarray(starts, jnp.int32), window_chunk)
  clean = apply_fn(params, image[None])[0, label]
  drop = (clean - occluded[:, label]).reshape(len(rows), len(cols))
  r = jnp.asarray(_coverage(h, window, stride), dtype)
  c = jnp.asarray(_coverage(w, window, stride), dtype)
  total, count = r @ drop @ c.T, r @ jnp.ones_like(drop) @ c.T
  return Occlusion(
      probability=jax.nn.softmax(occluded)[:, label].reshape(drop.shape),
      score_drop=drop,
      predicted=jnp.argmax(occluded, -1).astype(jnp.int32).reshape(drop.shape),
      attribution=jnp.where(count > 0, total / jnp.where(count > 0, count, 1), 0))


@attribution('occlusion')
def occlusion_attribution(apply_fn, params, image, label, key=None, *, window: int = 16,
                          stride: int = 8, fill: float = 0.0,
                          window_chunk: int | None = 32):
  """The per-pixel attribution of `occlusion_one`, (H, W)."""
  return occlusion_one(apply_fn, params, image, label, key, window=window, stride=stride,
                       fill=fill, window_chunk=window_chunk).attribution


def _occlusion(apply_fn, params, image, label, *, window, stride, fill, window_chunk):
  return occlusion_one(apply_fn, params, image, label, window=window, stride=stride,
                       fill=fill, window_chunk=window_chunk)


_batched = BatchedMethod(_occlusion, batched=('image', 'label'))


def occlusion(apply_fn, params, images, labels, *, window: int = 16, stride: int = 8,
              fill: float = 0.0, window_chunk: int | None = 32,
              chunk_size: int | None = None, devices: parallel.Devices = None,
              cpu_kernels: str | None = None) -> Occlusion:
  """`occlusion_one` over a batch: (N, H, W, 3) images, (N,) labels -> `Occlusion`.
  One image with (T,) labels gives T results from one pass over the occluded images (the
  labels share every forward pass).

  Compiled once per (apply_fn, shapes, window, stride, fill, chunking, devices,
  kernels). `window_chunk` bounds one image's occluded batch, `chunk_size` how many
  images run at once (see `jaxviz.attribute`); memory grows with their product.
  """
  images = validation.check_batch(images)
  n, h, w = images.shape[:3]
  labels, broadcast = validation.check_labels(labels, n, validation.num_classes(
      apply_fn, params, images.shape[1:]))
  window, stride = check_options(window, stride, window_chunk)
  window_starts(min(h, w), window, stride)
  if not np.isfinite(float(fill)):
    raise InputError(f'fill must be a finite number, got {fill!r}')
  return _batched(apply_fn, params, image=images, label=labels, chunk_size=chunk_size,
                  devices=devices, cpu_kernels=cpu_kernels,
                  options=dict(window=window, stride=stride, fill=float(fill),
                               window_chunk=window_chunk),
                  broadcast=('image',) if broadcast else ())
