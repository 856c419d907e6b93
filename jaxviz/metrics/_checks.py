"""Eager input checks for the metrics, run before anything is traced.

Each check returns its input unchanged when it is a tracer (a metric called inside the
caller's own jit): values cannot be inspected then, only shapes.
"""

import jax
import numpy as np

from jaxviz.errors import InputError


def is_traced(x) -> bool:
  return isinstance(x, jax.core.Tracer)


def check_maps(maps, name: str = 'saliency', *, nonnegative: bool = False):
  """(N, H, W) finite float maps; returns them as an array."""
  shape = tuple(np.shape(maps))
  if len(shape) != 3:
    raise InputError(f'{name} has shape {shape}: expected (N, H, W) maps, one per image')
  if 0 in shape:
    raise InputError(f'{name} has shape {shape}: an empty batch or map')
  if is_traced(maps):
    return maps
  arr = np.asarray(maps)
  if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
    raise InputError(f'{name} must be numbers, got {arr.dtype}')
  bad = np.flatnonzero(~np.isfinite(arr).reshape(len(arr), -1).all(axis=1))
  if bad.size:
    raise InputError(f'{name} of image(s) {bad.tolist()} contain NaN or inf')
  if nonnegative and (arr < 0).any():
    raise InputError(f'{name} has negative values: pass non-negative maps (e.g. abs(map))')
  return maps


def check_masks(masks, shape: tuple, name: str = 'masks'):
  """Masks of `shape`, bool or numbers that are all 0 or 1; returns a bool array."""
  if tuple(np.shape(masks)) != tuple(shape):
    raise InputError(f'{name} has shape {tuple(np.shape(masks))}, expected {tuple(shape)} '
                     '(one mask per saliency map)')
  if is_traced(masks):
    return masks.astype(bool)
  arr = np.asarray(masks)
  if arr.dtype != bool:
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
      raise InputError(f'{name} must be boolean, got {arr.dtype}')
    if not np.isin(arr, (0, 1)).all():
      raise InputError(f'{name} must be boolean or 0/1, got values in '
                       f'[{np.nanmin(arr):g}, {np.nanmax(arr):g}]')
  return arr.astype(bool)


def check_count(value, name: str, minimum: int = 1) -> int:
  """A whole number >= minimum (an int, or a float like 4.0; not NaN, inf or a bool)."""
  try:
    ok = (not isinstance(value, bool) and np.isfinite(value) and int(value) == value
          and value >= minimum)
  except (TypeError, ValueError):
    ok = False
  if not ok:
    raise InputError(f'{name} must be a whole number >= {minimum}, got {value!r}')
  return int(value)


def check_finite(x, name: str):
  """A concrete array with NaN or inf fails in one line; tracers pass unchecked."""
  if not is_traced(x) and not np.isfinite(np.asarray(x)).all():
    raise InputError(f'{name} contains NaN or inf')
  return x


def check_same_shape(a, b, names: tuple[str, str]):
  if tuple(np.shape(a)) != tuple(np.shape(b)):
    raise InputError(f'{names[0]} {tuple(np.shape(a))} and {names[1]} '
                     f'{tuple(np.shape(b))} differ in shape')
