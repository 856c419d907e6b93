"""Saliency maps (Simonyan et al. 2014)."""

import functools

import jax
import jax.numpy as jnp

from jaxviz.methods import _checks
from jaxviz.methods.objectives import objective_grad


def saliency_map(apply_fn, params, image, label, objective: str = 'score'):
  """Max over RGB of |d objective / d image| for one image.

  Args:
    apply_fn: pure (params, (N, H, W, 3) images) -> (N, classes) logits.
    params: its parameters.
    image: (H, W, 3) normalised image.
    label: the class whose score (or cross-entropy) is differentiated.
    objective: 'score' (the paper's raw class score) or 'cross_entropy' (the reports'
      variant).

  Returns:
    (H, W) non-negative map.

  References:
    Simonyan, Vedaldi & Zisserman, Deep Inside Convolutional Networks, ICLR-W 2014.
  """
  grad, _ = objective_grad(apply_fn, params, image, label, objective)
  return jnp.abs(grad).max(axis=-1)


@functools.partial(jax.jit, static_argnames=('apply_fn', 'objective'))
def _saliency_maps(apply_fn, params, images, labels, objective):
  return jax.vmap(saliency_map, in_axes=(None, None, 0, 0, None))(
      apply_fn, params, images, labels, objective)


def saliency_maps(apply_fn, params, images, labels, objective: str = 'score'):
  """`saliency_map` over a batch: (N, H, W, 3) images, (N,) labels -> (N, H, W).

  Compiled once per (apply_fn, shape, objective). Inputs are checked first: a label out
  of range or an image of the wrong rank or channel count is a one-line InputError.
  """
  images = _checks.check_batch(images)
  labels = _checks.check_classes(
      labels, images.shape[0], _checks.num_classes(apply_fn, params, images.shape[1:]),
      'labels')
  return _saliency_maps(apply_fn, params, images, labels, _checks.check_objective(objective))
