"""Localisation: does a saliency map point at the object? (pointing game, mask mass)

Both compare (N, H, W) maps with (N, H, W) ground-truth object masks and are
jit-compiled; inputs are checked first (one-line `InputError`).
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz.errors import InputError
from jaxviz.metrics import _checks

TIES = ('all', 'any', 'first')


def _disk(radius: int) -> np.ndarray:
  """(2r + 1, 2r + 1) offsets within Euclidean distance r of the centre."""
  d = np.arange(-radius, radius + 1)
  return (d[:, None] ** 2 + d[None, :] ** 2 <= radius ** 2).astype(np.float32)


def dilate(masks, tolerance: int):
  """Pixels within Euclidean distance `tolerance` of a mask pixel. (N, H, W) bool."""
  if tolerance == 0:
    return masks
  # A 0/1 convolution counts mask pixels under the disk: small integers, exact in float32.
  kernel = jnp.asarray(_disk(tolerance)[:, :, None, None])
  counts = jax.lax.conv_general_dilated(
      masks.astype(jnp.float32)[..., None], kernel, (1, 1), 'SAME',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), precision=jax.lax.Precision.HIGHEST)
  return counts[..., 0] > 0.5


@functools.partial(jax.jit, static_argnames=('tolerance', 'ties'))
def _pointing_game(saliency, masks, tolerance, ties):
  n = saliency.shape[0]
  near = dilate(masks, tolerance).reshape(n, -1)
  flat = saliency.reshape(n, -1)
  is_max = flat == flat.max(axis=1, keepdims=True)
  if ties == 'all':
    return ~jnp.any(is_max & ~near, axis=1)
  if ties == 'any':
    return jnp.any(is_max & near, axis=1)
  return near[jnp.arange(n), jnp.argmax(flat, axis=1)]


def _checked_masks(saliency, masks):
  saliency = _checks.check_maps(saliency)
  masks = _checks.check_masks(masks, np.shape(saliency))
  if not _checks.is_traced(masks):
    empty = np.flatnonzero(~masks.reshape(len(masks), -1).any(axis=1))
    if empty.size:
      raise InputError(f'masks of image(s) {empty.tolist()} are empty: the pointing game '
                       'needs an object in every image; leave those images out')
  return saliency, masks


def _check_game_args(tolerance, ties) -> int:
  if ties not in TIES:
    raise InputError(f'ties must be one of {TIES}, got {ties!r}')
  return _checks.check_count(tolerance, 'tolerance (pixels)', 0)


def pointing_game(saliency, masks, tolerance: int = 0, ties: str = 'all'):
  """Whether each map's maximum lies on (or within `tolerance` pixels of) the object.

  Zhang et al. count a hit when the map's maximum falls within 15 pixels of the
  annotated object. Their single maximum is ambiguous when the maximum is tied (an
  all-zero map, a plateau of an upsampled coarse map), so the rule is explicit:
  'all' (default) - a hit only if every maximal pixel is near the object. Ties never
    help: a constant map hits only if the object (dilated) covers the whole image, so a
    degenerate method cannot score by chance.
  'any' - a hit if some maximal pixel is near the object (lenient; a constant map hits
    on every image with an object).
  'first' - the first maximum in row-major order, as `argmax` (and Zhang et al.'s
    MATLAB `max`, column-major) picks it: biased towards the top (left) on ties.
  Without ties the three agree.

  Args:
    saliency: (N, H, W) maps (larger = more salient; sign is not taken off).
    masks: (N, H, W) object masks, bool or 0/1 numbers; none may be empty.
    tolerance: distance in pixels (Euclidean) from the mask that still counts; Zhang et
      al. use 15 at ImageNet / COCO resolution.
    ties: 'all', 'any' or 'first' (above).

  Returns:
    (N,) bool hits; their mean is the pointing accuracy. Compare with
    `center_baseline(masks, tolerance)`.

  References:
    Zhang et al., Top-down Neural Attention by Excitation Backprop, ECCV 2016.
  """
  tolerance = _check_game_args(tolerance, ties)
  saliency, masks = _checked_masks(saliency, masks)
  return _pointing_game(jnp.asarray(saliency), jnp.asarray(masks), tolerance, ties)


def center_map(height: int, width: int):
  """An (H, W) map peaking at the image centre: minus the squared distance to it.

  For an even side the centre falls between two pixels, and the two (or four) central
  pixels tie exactly (distances of 0.5 are exact in float).
  """
  i = jnp.arange(height, dtype=jnp.float32) - (height - 1) / 2
  j = jnp.arange(width, dtype=jnp.float32) - (width - 1) / 2
  return -(i[:, None] ** 2 + j[None, :] ** 2)


def center_baseline(masks, tolerance: int = 0, ties: str = 'all'):
  """The pointing game of a map that always points at the image centre.

  The baseline that Zhang et al. report next to each method: objects tend to sit in the
  middle of a photo (and of a synthetic image), so a method must beat this, not 0.

  Args:
    masks: (N, H, W) object masks, as for `pointing_game`.
    tolerance, ties: as for `pointing_game` (with 'all', an even-sized image's central
      2x2 block must lie near the object).

  Returns:
    (N,) bool hits.

  References:
    Zhang et al., Top-down Neural Attention by Excitation Backprop, ECCV 2016.
  """
  shape = tuple(np.shape(masks))
  if len(shape) != 3:
    raise InputError(f'masks has shape {shape}: expected (N, H, W)')
  centre = jnp.broadcast_to(center_map(shape[1], shape[2]), shape)
  return pointing_game(centre, masks, tolerance, ties)


class MaskMass(NamedTuple):
  """Attributes:
    inside: (N,) fraction of the map's total mass that lies inside the mask.
    area: (N,) fraction of the image the mask covers: what a uniform map scores, so
      `inside / area` > 1 means better than chance.
  """
  inside: jax.Array
  area: jax.Array


@jax.jit
def _mask_mass(saliency, masks):
  n = saliency.shape[0]
  s = saliency.reshape(n, -1).astype(jnp.result_type(saliency.dtype, jnp.float32))
  m = masks.reshape(n, -1)
  total = s.sum(axis=1)
  area = m.mean(axis=1, dtype=s.dtype)
  inside = jnp.where(m, s, 0).sum(axis=1) / jnp.where(total > 0, total, 1.0)
  return MaskMass(jnp.where(total > 0, inside, area), area)


def mask_mass(saliency, masks) -> MaskMass:
  """The share of saliency mass inside the object mask ("energy-based pointing game").

  Saliency must be non-negative (a negative value is an InputError: take abs() or
  clip first, whichever the method means), so that mass is a distribution over pixels.
  An all-zero map says nothing about where the object is and is scored as a uniform map:
  `inside = area`, never 0/0. An empty mask scores inside = area = 0.

  Args:
    saliency: (N, H, W) non-negative maps.
    masks: (N, H, W) object masks, bool or 0/1 numbers.

  Returns:
    `MaskMass(inside, area)`, each (N,).

  References:
    Wang et al., Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural
    Networks, CVPR-W 2020 (the energy-based pointing game).
  """
  saliency = _checks.check_maps(saliency, nonnegative=True)
  masks = _checks.check_masks(masks, np.shape(saliency))
  return _mask_mass(jnp.asarray(saliency), jnp.asarray(masks))
