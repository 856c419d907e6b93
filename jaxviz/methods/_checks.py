"""Eager input checks run by the public method wrappers, before anything is traced."""

import jax
import numpy as np

from jaxviz.errors import InputError
from jaxviz.preprocess import check_images


def num_classes(apply_fn, params, image_shape) -> int:
  """The logit count, from an abstract evaluation (no compute)."""
  spec = jax.ShapeDtypeStruct((1, *image_shape), np.float32)
  return int(jax.eval_shape(apply_fn, params, spec).shape[-1])


def check_classes(classes, n: int, count: int, what: str) -> np.ndarray | jax.Array:
  """`classes` must be n integers in [0, count); returns them (as given when traced)."""
  if isinstance(classes, jax.core.Tracer):
    return classes
  arr = np.asarray(classes)
  if arr.ndim == 0:
    arr = np.full((n,), arr)
  if arr.shape != (n,):
    raise InputError(f'{what} has shape {arr.shape}: expected one per image, ({n},)')
  if not np.issubdtype(arr.dtype, np.integer):
    raise InputError(f'{what} must be integer class indices, got {arr.dtype} '
                     '(look names up with model.class_index)')
  bad = arr[(arr < 0) | (arr >= count)]
  if bad.size:
    raise InputError(f'{what} {bad.tolist()} out of range [0, {count})')
  return arr.astype(np.int32)


def check_batch(images):
  images = check_images(images, allow_single=False)
  if not isinstance(images, jax.core.Tracer) and not np.issubdtype(
      np.asarray(images).dtype, np.floating):
    raise InputError(f'images must be normalised floats (use model.preprocess), '
                     f'got {np.asarray(images).dtype}')
  return images


def check_objective(objective: str) -> str:
  if objective not in ('score', 'cross_entropy'):
    raise InputError(f"objective must be 'score' or 'cross_entropy', got {objective!r}")
  return objective


def check_chunk_size(chunk_size) -> int | None:
  """None, or a positive integer (numpy integers included, bools not)."""
  if chunk_size is None:
    return None
  if (isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer))
      or chunk_size < 1):
    raise InputError(f'chunk_size must be a positive integer or None, got {chunk_size!r}')
  return int(chunk_size)
