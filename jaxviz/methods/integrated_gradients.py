"""Integrated gradients (Sundararajan et al. 2017)."""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz import parallel, validation
from jaxviz.errors import InputError
from jaxviz.methods._batched import BatchedMethod
from jaxviz.methods.attribution import attribution

RULES = ('riemann_left', 'riemann_right', 'riemann_middle', 'riemann_trapezoid',
         'gausslegendre')


class IntegratedGradients(NamedTuple):
  """attributions: (N, H, W, 3); gap: (N,) sum(attributions) - (f(x) - f(baseline)),
  the completeness error of the quadrature (0 for the exact integral, eq. 3)."""
  attributions: jax.Array
  gap: jax.Array


@functools.lru_cache(maxsize=None)
def path_rule(steps: int, rule: str) -> tuple[np.ndarray, np.ndarray]:
  """(alphas, weights) of the quadrature of the path integral over alpha in [0, 1].

  riemann_left/right/middle: the n left ends, right ends or midpoints of n equal
  intervals, weight 1/n; riemann_trapezoid: the n points k/(n-1), weights 1/(n-1)
  halved at both ends; gausslegendre: the n-point Gauss-Legendre rule mapped to [0, 1]
  (exact for polynomials of degree 2n - 1). The names are captum's.
  """
  validation.check_choice(rule, RULES, 'rule')
  validation.check_positive(steps, 'steps', integer=True)
  n = int(steps)
  if rule == 'gausslegendre':
    nodes, weights = np.polynomial.legendre.leggauss(n)
    return (nodes + 1) / 2, weights / 2
  if rule == 'riemann_trapezoid':
    if n < 2:
      raise InputError('riemann_trapezoid needs steps >= 2')
    weights = np.full(n, 1.0 / (n - 1))
    weights[[0, -1]] /= 2
    return np.arange(n) / (n - 1), weights
  offset = {'riemann_left': 0.0, 'riemann_right': 1.0, 'riemann_middle': 0.5}[rule]
  return (np.arange(n) + offset) / n, np.full(n, 1.0 / n)


def integrated_gradients_one(apply_fn, params, image, label, key=None, *, baseline=None,
                             steps: int = 50, rule: str = 'gausslegendre',
                             step_chunk: int | None = 32) -> IntegratedGradients:
  """Integrated gradients of the class score for one image (eq. 3):

      (x - x') * sum_k w_k d f_label / dx (x' + alpha_k (x - x'))

  Args:
    apply_fn, params, image, label, key: the attribution protocol's (key unused).
    baseline: x', an (H, W, 3) image (may be traced); None: zeros, the dataset's mean
      colour in normalised space.
    steps, rule: the quadrature (`path_rule`); 'gausslegendre' is the most accurate.
    step_chunk: at most this many path points per backward pass (bounds memory;
      None: all).

  Returns:
    `IntegratedGradients` of one image: attributions (H, W, 3) and the scalar gap.

  References:
    Sundararajan, Taly & Yan, Axiomatic Attribution for Deep Networks, ICML 2017,
    eqs. 1 and 3, and Proposition 1 (completeness).
  """
  del key
  validation.check_image(image)
  validation.check_class(label, apply_fn, params, image.shape)
  validation.check_chunk_size(step_chunk)
  baseline = jnp.zeros_like(image) if baseline is None else jnp.asarray(baseline, image.dtype)
  if baseline.shape != image.shape:
    raise InputError(f'baseline has shape {baseline.shape}, the image {image.shape}')
  alphas, weights = (jnp.asarray(a, image.dtype) for a in path_rule(steps, rule))
  delta = image - baseline

  def path_grads(xs):  # (c,) alphas and weights -> (c, H, W, 3) weighted gradients
    alpha, weight = xs
    points = baseline + alpha[:, None, None, None] * delta
    # Each point's score depends on that point alone: one backward pass for the chunk.
    grads = jax.grad(lambda p: apply_fn(params, p)[:, label].sum())(points)
    return weight[:, None, None, None] * grads

  total = parallel.map_chunks(path_grads, (alphas, weights), step_chunk).sum(axis=0)
  attributions = delta * total
  ends = apply_fn(params, jnp.stack([image, baseline]))[:, label]
  return IntegratedGradients(attributions, attributions.sum() - (ends[0] - ends[1]))


@attribution('integrated_gradients')
def integrated_gradients_attribution(apply_fn, params, image, label, key=None, *,
                                     steps: int = 50, rule: str = 'gausslegendre',
                                     step_chunk: int | None = 32):
  """The attributions of `integrated_gradients_one` from the zero baseline, (H, W, 3)."""
  return integrated_gradients_one(apply_fn, params, image, label, steps=steps, rule=rule,
                                  step_chunk=step_chunk).attributions


def _integrated_gradients(apply_fn, params, image, label, baseline, **options):
  return integrated_gradients_one(apply_fn, params, image, label, baseline=baseline,
                                  **options)


_batched = BatchedMethod(_integrated_gradients, batched=('image', 'label', 'baseline'))


def integrated_gradients(apply_fn, params, images, labels, *, baseline=None,
                         steps: int = 50, rule: str = 'gausslegendre',
                         step_chunk: int | None = 32, chunk_size: int | None = None,
                         devices: parallel.Devices = None,
                         cpu_kernels: str | None = None) -> IntegratedGradients:
  """`integrated_gradients_one` over a batch: (N, H, W, 3) images, (N,) labels ->
  `IntegratedGradients` (attributions (N, H, W, 3), gap (N,)). One image with (T,)
  labels gives T results, the forward passes along the path shared by the labels; then
  `step_chunk` bounds path points times labels per pass (the labels in flight, T or
  `chunk_size`, share step_chunk // labels points), so memory stays one label's.

  baseline: None (zeros), one (H, W, 3) image for all, or (N, H, W, 3), one per image
  (traced: a new baseline does not recompile). Compiled once per (apply_fn, shapes,
  steps, rule, chunking, devices, kernels); see `jaxviz.attribute`.
  """
  images = validation.check_batch(images)
  n = images.shape[0]
  labels, broadcast = validation.check_labels(labels, n, validation.num_classes(
      apply_fn, params, images.shape[1:]))
  path_rule(steps, rule)
  validation.check_chunk_size(step_chunk)
  if broadcast and step_chunk is not None:
    # The labels in flight share each path point's forward pass, and each carries its own
    # backward pass through it: step_chunk bounds the backward passes in flight, so that
    # memory stays what it is for one label (16 labels, step_chunk 32: 2 points a pass).
    in_flight = len(labels) if chunk_size is None else min(
        validation.check_chunk_size(chunk_size), len(labels))
    step_chunk = max(1, step_chunk // in_flight)
  if baseline is None:
    baseline = jnp.zeros_like(images)
  else:
    shape = tuple(np.shape(baseline))
    if shape not in (images.shape, images.shape[1:]):
      raise InputError(f'baseline has shape {shape}: expected one image '
                       f'{images.shape[1:]} or one per image {images.shape}')
    baseline = validation.check_batch(
        jnp.broadcast_to(jnp.asarray(baseline, images.dtype), images.shape))
  return _batched(apply_fn, params, image=images, label=labels, baseline=baseline,
                  chunk_size=chunk_size, devices=devices, cpu_kernels=cpu_kernels,
                  options=dict(steps=int(steps), rule=rule, step_chunk=step_chunk),
                  broadcast=('image', 'baseline') if broadcast else ())
