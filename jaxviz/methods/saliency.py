"""Saliency maps (Simonyan et al. 2014): the gradient attribution, reduced by max |.|."""

from jaxviz import parallel
from jaxviz.methods.attribution import attribute, gradient, max_abs
from jaxviz.methods.objectives import check_objective


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
    Simonyan, Vedaldi & Zisserman, Deep Inside Convolutional Networks, ICLR-W 2014, sec. 3.1.
  """
  return max_abs(gradient(apply_fn, params, image, label, objective=objective))


def saliency_maps(apply_fn, params, images, labels, objective: str = 'score', *,
                  chunk_size: int | None = None, devices: parallel.Devices = None,
                  cpu_kernels: str | None = None):
  """`saliency_map` over a batch: (N, H, W, 3) images, (N,) labels -> (N, H, W).

  `attribute('gradient', ..., reduce='max_abs')`: compiled once per (apply_fn, shape,
  objective, chunk_size, devices, cpu_kernels), inputs checked first (one-line
  InputError). See `jaxviz.attribute` for chunk_size, devices and cpu_kernels.
  """
  return attribute(gradient, apply_fn, params, images, labels, reduce='max_abs',
                   chunk_size=chunk_size, devices=devices, cpu_kernels=cpu_kernels,
                   objective=check_objective(objective))
