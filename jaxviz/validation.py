"""Eager input checks shared by the methods and the metrics, run before anything is
compiled: each raises a one-line `InputError` that says what to pass instead."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz.errors import InputError
from jaxviz.preprocess import check_images


def num_classes(apply_fn, params, image_shape) -> int:
  """The logit count: a `jaxviz.Model`'s class count, or an abstract evaluation of
  apply_fn (no compute)."""
  if params is getattr(apply_fn, 'params', None) and hasattr(apply_fn, 'class_names'):
    return len(apply_fn.class_names)
  spec = jax.ShapeDtypeStruct((1, *image_shape), np.float32)
  return int(jax.eval_shape(apply_fn, params, spec).shape[-1])


def check_classes(classes, n: int, count: int, what: str) -> np.ndarray | jax.Array:
  """`classes` must be n integers in [0, count); returns them (as given when traced)."""
  if isinstance(classes, jax.core.Tracer):
    return classes
  arr = np.asarray(classes)
  if arr.size == 0:
    raise InputError(f'{what} is empty: give one class per image')
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


def check_labels(labels, n: int, count: int, what: str = 'labels'):
  """Labels for n images: n classes in [0, count), or, for one image, any number of them
  (one image explained for many classes). Returns (labels, broadcast), broadcast True
  when one image serves several labels."""
  if n == 1 and not isinstance(labels, jax.core.Tracer) and np.ndim(labels) == 1:
    labels = check_classes(labels, max(len(labels), 1), count, what)
    return labels, len(labels) > 1
  return check_classes(labels, n, count, what), False


def check_batch(images):
  """(N, H, W, 3) normalised float images, N >= 1."""
  images = check_images(images, allow_single=False)
  if isinstance(images, jax.core.Tracer):
    return images
  # A device array is checked where it lives: only one flag per image comes back.
  xp = jnp if isinstance(images, jax.Array) else np
  images = images if isinstance(images, jax.Array) else np.asarray(images)
  if not jnp.issubdtype(images.dtype, jnp.floating):
    raise InputError(f'images must be normalised floats (use model.preprocess), '
                     f'got {images.dtype}')
  # Eagerly, even when called inside the caller's jit with a concrete array from outside.
  with jax.ensure_compile_time_eval():
    finite = np.asarray(xp.isfinite(images).reshape(len(images), -1).all(axis=1))
  if not finite.all():
    raise InputError(f'image(s) {np.flatnonzero(~finite).tolist()} contain NaN or inf')
  return images


def check_chunk_size(chunk_size) -> int | None:
  """None, or a positive integer (numpy integers included, bools not)."""
  if chunk_size is None:
    return None
  if (isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer))
      or chunk_size < 1):
    raise InputError(f'chunk_size must be a positive integer or None, got {chunk_size!r}')
  return int(chunk_size)


def check_choice(value, choices, name: str):
  """`value` if it is one of `choices`; else a one-line InputError naming them."""
  if not isinstance(value, str) or value not in choices:
    raise InputError(f'{name} must be one of {", ".join(map(repr, choices))}, got {value!r}')
  return value


def check_positive(value, name: str, *, integer: bool = False, zero: bool = False):
  """`value` if it is finite and > 0 (>= 0 with zero=True), and whole with integer=True,
  elementwise for arrays; traced values pass unchecked."""
  if isinstance(value, jax.core.Tracer):
    return value
  arr = np.asarray(value)
  ok = arr.dtype != bool and (np.issubdtype(arr.dtype, np.integer)
                              or np.issubdtype(arr.dtype, np.floating))
  ok = ok and bool(np.all(np.isfinite(arr))) and bool(np.all(arr >= 0))
  ok = ok and (zero or bool(np.all(arr > 0))) and (not integer or bool(np.all(arr == np.round(arr))))
  if not ok:
    kind = ('non-negative' if zero else 'positive') + (' integer' if integer else ' finite number')
    raise InputError(f'{name} must be a {kind}, got {value!r}')
  return value


def split_keys(key, n: int, name: str = 'key'):
  """One PRNG key per example: `key` split n ways, or `key` itself if it is n keys.

  Accepts typed keys (jax.random.key) and raw uint32 ones (jax.random.PRNGKey).
  """
  key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
  typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
  if not typed and key.dtype != jnp.uint32:
    raise InputError(f'{name} must be a PRNG key (jax.random.key(seed)), got dtype {key.dtype}')
  if key.ndim == (0 if typed else 1):
    return jax.random.split(key, n)
  if key.ndim == (1 if typed else 2) and key.shape[0] == n:
    return key
  raise InputError(f'{name} must be one PRNG key or one per example ({n}), '
                   f'got shape {key.shape}')


def check_image(image, name: str = 'image'):
  """One (H, W, 3) float image, finite when its values are known (not traced)."""
  shape = tuple(np.shape(image))
  if len(shape) != 3 or shape[-1] != 3 or 0 in shape:
    raise InputError(f'{name} has shape {shape}: expected one (H, W, 3) RGB image')
  if not isinstance(image, jax.core.Tracer):
    arr = np.asarray(image)
    if not np.issubdtype(arr.dtype, np.floating):
      raise InputError(f'{name} must be normalised floats (use model.preprocess), '
                       f'got {arr.dtype}')
    if not np.isfinite(arr).all():
      raise InputError(f'{name} contains NaN or inf')
  return image


def check_class(label, apply_fn, params, image_shape, name: str = 'label'):
  """One class index in range for the model, when its value is known (not traced)."""
  if isinstance(label, jax.core.Tracer):
    return label
  check_classes(label, 1, num_classes(apply_fn, params, image_shape), name)
  return label
