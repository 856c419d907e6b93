"""Saliency maps (Simonyan et al. 2014)."""

import jax
import jax.numpy as jnp

from jaxviz import kernels, parallel
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


def _saliency_maps(apply_fn, params, images, labels, objective, chunk_size=None, mesh=None):

  def local(params, images, labels):  # one device's slice of the batch
    batched = lambda xs: jax.vmap(saliency_map, in_axes=(None, None, 0, 0, None))(
        apply_fn, params, *xs, objective)
    return parallel.map_chunks(batched, (images, labels), chunk_size)

  return parallel.data_parallel(local, mesh, (False, True, True))(params, images, labels)


_compiled_saliency_maps = kernels.jit(
    _saliency_maps, static_argnames=('apply_fn', 'objective', 'chunk_size', 'mesh'))


def saliency_maps(apply_fn, params, images, labels, objective: str = 'score', *,
                  chunk_size: int | None = None, devices: parallel.Devices = None,
                  cpu_kernels: str = 'auto'):
  """`saliency_map` over a batch: (N, H, W, 3) images, (N,) labels -> (N, H, W).

  Compiled once per (apply_fn, shape, objective, chunk_size, devices). Inputs are checked
  first: a label out of range or an image of the wrong rank or channel count is a one-line
  InputError.

  Args:
    apply_fn, params, images, labels, objective: as `saliency_map`, batched.
    chunk_size: differentiate at most this many images at a time per device (bounds
      memory; None: all at once). See `jaxviz.parallel.map_chunks`.
    devices: split the batch over these devices: None for every local device, a list of
      devices, or a Mesh with a 'data' axis. See `jaxviz.parallel`.
    cpu_kernels: XLA:CPU's convolution kernels: 'auto' (those measured fastest for the
      model), 'xla' or 'eigen'. See `jaxviz.kernels`.
  """
  images = _checks.check_batch(images)
  labels = _checks.check_classes(
      labels, images.shape[0], _checks.num_classes(apply_fn, params, images.shape[1:]),
      'labels')
  objective = _checks.check_objective(objective)
  chunk_size = _checks.check_chunk_size(chunk_size)
  mesh = parallel.resolve_mesh(devices)
  run = _compiled_saliency_maps(kernels.resolve(cpu_kernels, apply_fn, images.dtype))
  if mesh is None:
    return run(apply_fn, params, images, labels, objective, chunk_size)
  (images, labels), n = parallel.shard_batch((images, labels), mesh)
  return parallel.unpad(run(apply_fn, parallel.replicate(params, mesh), images, labels,
                            objective, chunk_size, mesh), n)
