"""Faithfulness: deletion and insertion curves (Petsiuk et al. 2018, RISE).

A map is faithful when the pixels it ranks highest are the ones the model needs: deleting
them first makes the label's probability fall fast (low deletion AUC), and inserting them
first into an uninformative image makes it rise fast (high insertion AUC).
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz.errors import InputError
from jaxviz import validation
from jaxviz.ops import gaussian_blur
from jaxviz.metrics import _checks

# RISE's insertion baseline: a Gaussian blur with an 11-tap kernel of sigma 5 (their
# `gkern(klen=11, nsig=5)`): radius int(truncate * sigma + 0.5) = 5.
BLUR_SIGMA, BLUR_TRUNCATE = 5.0, 1.0
BASELINES = ('zeros', 'blur')


class DeletionInsertion(NamedTuple):
  """Attributes:
    deletion_auc: (N,) area under the deletion curve (lower = more faithful).
    insertion_auc: (N,) area under the insertion curve (higher = more faithful).
    deletion_curve: (N, steps + 1) softmax probability of the label after deleting the
      first `fractions[k]` of the pixels (point 0 is the intact image).
    insertion_curve: (N, steps + 1) the same after inserting them into the baseline
      (point 0 is the baseline, the last point the intact image).
    fractions: (steps + 1,) fraction of pixels deleted / inserted at each point, 0 to 1.
  """
  deletion_auc: jax.Array
  insertion_auc: jax.Array
  deletion_curve: jax.Array
  insertion_curve: jax.Array
  fractions: jax.Array


def blur_baseline(images):
  """RISE's insertion start: each image blurred (sigma 5, 11 taps, reflected borders).

  Args:
    images: (N, H, W, C).

  Returns:
    (N, H, W, C).
  """
  return jax.vmap(lambda x: gaussian_blur(x, BLUR_SIGMA, BLUR_TRUNCATE))(images)


def saliency_ranks(saliency):
  """Position of each pixel in the deletion order: 0 for the most salient.

  Pixels are sorted by saliency, descending; equal values keep row-major order (a stable
  sort), so the order is deterministic and ties do not depend on the backend.

  Args:
    saliency: (N, H, W).

  Returns:
    (N, H * W) int32 ranks.
  """
  saliency = jnp.asarray(_checks.check_maps(saliency))
  flat = saliency.reshape(saliency.shape[0], -1)
  order = jnp.argsort(flat, axis=1, descending=True, stable=True)
  positions = jnp.broadcast_to(jnp.arange(flat.shape[1], dtype=jnp.int32), flat.shape)
  return jnp.zeros_like(positions).at[jnp.arange(flat.shape[0])[:, None], order].set(
      positions)


def pixel_counts(num_pixels: int, steps: int) -> np.ndarray:
  """Pixels removed after each of the steps + 1 points: k * P // steps, 0 to P."""
  return (np.arange(steps + 1) * num_pixels) // steps


def _trapezoid(curves, fractions):
  dx = fractions[1:] - fractions[:-1]
  return jnp.sum(dx * (curves[:, 1:] + curves[:, :-1]) / 2, axis=1)


@functools.partial(jax.jit, static_argnames=('apply_fn', 'steps', 'chunk_size'))
def _deletion_insertion(apply_fn, params, images, saliency, labels, deletion_baseline,
                        insertion_baseline, steps, chunk_size):
  n, h, w, _ = images.shape
  ranks = saliency_ranks(saliency).reshape(n, h, w, 1)
  counts = jnp.asarray(pixel_counts(h * w, steps), jnp.int32)
  which = jnp.repeat(jnp.arange(n), steps + 1)
  removed = jnp.tile(counts, n)

  def probabilities(args):
    i, k = args
    kept = ranks[i] >= k  # the k most salient pixels are gone / already inserted
    deleted = jnp.where(kept, images[i], deletion_baseline[i])
    inserted = jnp.where(kept, insertion_baseline[i], images[i])
    logits = apply_fn(params, jnp.stack([deleted, inserted]))
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)[:, labels[i]]

  # N (steps + 1) pairs of forward passes: map over chunks so that memory holds only
  # 2 * chunk_size images at a time, whatever N and steps are.
  probs = jax.lax.map(probabilities, (which, removed), batch_size=chunk_size)
  probs = probs.reshape(n, steps + 1, 2)
  fractions = counts.astype(jnp.float32) / (h * w)
  deletion, insertion = probs[..., 0], probs[..., 1]
  return DeletionInsertion(_trapezoid(deletion, fractions), _trapezoid(insertion, fractions),
                           deletion, insertion, fractions)


def _baseline(baseline, images, name):
  if isinstance(baseline, str):
    if baseline == 'zeros':
      return jnp.zeros_like(images)
    if baseline == 'blur':
      return blur_baseline(images)
    raise InputError(f'{name} must be one of {BASELINES} or an array, got {baseline!r}')
  try:
    baseline = jnp.broadcast_to(jnp.asarray(baseline, images.dtype), images.shape)
  except (ValueError, TypeError):
    raise InputError(f'{name} has shape {np.shape(baseline)}, which does not broadcast to '
                     f'the images {tuple(images.shape)}') from None
  return _checks.check_finite(baseline, name)


def deletion_insertion(apply_fn, params, images, saliency, labels, *, steps: int = 100,
                       deletion_baseline='zeros', insertion_baseline='blur',
                       chunk_size: int = 32) -> DeletionInsertion:
  """Deletion and insertion curves of each map, and the areas under them.

  Pixels are ordered by saliency (descending; ties in row-major order) and taken in
  `steps` equal chunks (k * H * W // steps pixels after step k). Deletion replaces them,
  all channels, by `deletion_baseline` in the intact image; insertion copies them from
  the image into `insertion_baseline`. Each curve is the softmax probability of `labels`
  at the steps + 1 points, the AUC its trapezoid integral over the fraction of pixels.

  Args:
    apply_fn: pure (params, (B, H, W, 3) images) -> (B, classes) logits.
    params: its parameters.
    images: (N, H, W, 3) normalised images.
    saliency: (N, H, W) maps (only their order matters).
    labels: (N,) class whose probability is tracked (or one for all).
    steps: number of chunks (RISE removes 224 pixels a step at 224x224; 100 steps keep
      the trapezoid error well below the differences between methods).
    deletion_baseline: what deleted pixels become: 'zeros' (default; zero in the
      normalised space is the dataset's mean colour), 'blur' (a blurred copy of the
      image), or an array broadcastable to the images.
    insertion_baseline: where insertion starts: 'blur' (default, as in RISE: the
      probability then starts near the chance level without the out-of-distribution
      edges of a grey image), 'zeros', or an array.
    chunk_size: (image, step) pairs per forward pass, each pair two images; bounds
      memory. There are N (steps + 1) pairs in all.

  Returns:
    A `DeletionInsertion`.

  References:
    Petsiuk, Das & Saenko, RISE: Randomized Input Sampling for Explanation of Black-box
    Models, BMVC 2018.
  """
  images = validation.check_batch(images)
  n = images.shape[0]
  saliency = _checks.check_maps(saliency)
  if tuple(np.shape(saliency)) != tuple(images.shape[:3]):
    raise InputError(f'saliency has shape {tuple(np.shape(saliency))}, expected one map '
                     f'per image, {tuple(images.shape[:3])}')
  labels = validation.check_classes(
      labels, n, validation.num_classes(apply_fn, params, images.shape[1:]), 'labels')
  steps = _checks.check_count(steps, 'steps')
  chunk_size = _checks.check_count(chunk_size, 'chunk_size')
  images = jnp.asarray(images)
  return _deletion_insertion(
      apply_fn, params, images, jnp.asarray(saliency), jnp.asarray(labels),
      _baseline(deletion_baseline, images, 'deletion_baseline'),
      _baseline(insertion_baseline, images, 'insertion_baseline'), steps, chunk_size)
