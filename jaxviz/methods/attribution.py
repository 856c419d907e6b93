"""The attribution protocol, its reductions, and the batched `attribute`.

An attribution method is a per-example function

    method(apply_fn, params, image, label, key, **options) -> attribution

that returns a signed attribution of the (H, W, 3) normalised `image` to class `label`:
an (H, W, 3) array for pixel methods, a map at a layer's resolution for layer methods.
`key` is a PRNG key, used by stochastic methods and ignored by the others. Because
every method has that signature, wrappers compose over any of them (SmoothGrad,
integrated gradients: a function of a method that returns a method), and one driver
runs them all over batches (`attribute`).

Reductions to a 2-D map are separate: `max_abs` (max over channels of |a|: Simonyan et
al. 2014 and the course), `sum_abs` (the sum over channels of |a|: the convention of
PAIR's saliency library and of captum's visualisation), `l2` (the channels' Euclidean
norm), or None for the signed attribution itself.

A new method is one file: its per-example mathematics under `@attribution('name')`
(see `gradient_x_input.py`).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz import ops, parallel, validation
from jaxviz.errors import InputError
from jaxviz.methods._batched import BatchedMethod
from jaxviz.methods.objectives import check_objective, objective_grad


def max_abs(attribution):
  """Max over the channel (last) axis of |attribution| (Simonyan et al. 2014)."""
  return jnp.abs(attribution).max(axis=-1)


def sum_abs(attribution):
  """Sum over the channel (last) axis of |attribution| (PAIR saliency, captum)."""
  return jnp.abs(attribution).sum(axis=-1)


def l2(attribution):
  """Euclidean norm over the channel (last) axis."""
  return jnp.sqrt(jnp.sum(attribution * attribution, axis=-1))


REDUCTIONS = {'max_abs': max_abs, 'sum_abs': sum_abs, 'l2': l2}

_METHODS: dict[str, Callable] = {}


def attribution(name: str):
  """Registers a per-example attribution method under `name` (a decorator)."""

  def register(method: Callable) -> Callable:
    if name in _METHODS:
      raise ValueError(f'an attribution method named {name!r} is registered already')
    _METHODS[name] = method
    return method

  return register


def methods() -> tuple[str, ...]:
  """The names of the registered attribution methods."""
  return tuple(_METHODS)


@attribution('gradient')
def gradient(apply_fn, params, image, label, key=None, *, objective: str = 'score'):
  """The input gradient d objective / d image, signed, (H, W, 3).

  Args:
    apply_fn: pure (params, (N, H, W, 3) images) -> (N, classes) logits.
    params: its parameters.
    image: (H, W, 3) normalised image.
    label: the class.
    key: unused (the gradient is deterministic).
    objective: 'score' (the class score f_label(x)) or 'cross_entropy'
      (-log softmax(f(x))_label, the reports' variant).

  References:
    Simonyan, Vedaldi & Zisserman, Deep Inside Convolutional Networks, ICLR-W 2014, eq. 2.
  """
  del key
  validation.check_image(image)
  validation.check_class(label, apply_fn, params, np.shape(image))
  return objective_grad(apply_fn, params, image, label, check_objective(objective))[0]


def resolve(method) -> Callable:
  """A registered method by name, or a per-example function as it is."""
  if isinstance(method, str):
    if method not in _METHODS:
      raise InputError(f'unknown attribution method {method!r}; registered: '
                       f'{", ".join(_METHODS)}')
    return _METHODS[method]
  if not callable(method):
    raise InputError(f'method must be a registered name or a per-example function, '
                     f'got {method!r}')
  return method


def _attribute_one(apply_fn, params, image, label, key, *, method, reduce, method_options):
  attributed = method(apply_fn, params, image, label, key, **dict(method_options))
  # A layer method's map (Grad-CAM, occlusion) is 2-D already: nothing to reduce.
  return attributed if reduce is None or attributed.ndim == 2 else REDUCTIONS[reduce](attributed)


_batched = BatchedMethod(_attribute_one, batched=('image', 'label', 'key'))


def attribute(method, apply_fn, params, images, labels, *, key=None,
              reduce: str | None = 'max_abs', chunk_size: int | None = None,
              devices: parallel.Devices = None, cpu_kernels: str | None = None, **options):
  """An attribution method over a batch: (N, H, W, 3) images, (N,) labels -> maps.

  Compiled once per (method, apply_fn, shapes, options, reduce, chunk_size, devices,
  cpu_kernels). Inputs are checked first: a label out of range, an image of the wrong
  rank or channel count, a NaN pixel or an unknown option value is a one-line InputError.

  Args:
    method: a registered name (`methods()`: 'gradient', 'gradient_x_input', ...) or a
      per-example function with the protocol's signature (see the module docstring).
    apply_fn, params: the model, as from `jaxviz.load_model`.
    images: (N, H, W, 3) normalised images.
    labels: (N,) classes to attribute (or one for all); for one image (N = 1), any number
      T of classes: (T,) maps of that image, its forward pass computed once for all of
      them (`vmap` leaves what depends on the image alone unbatched).
    key: a PRNG key, split into one per image (or N keys); None: jax.random.key(0).
      Only stochastic methods use it; the same key gives the same maps.
    reduce: 'max_abs', 'sum_abs' or 'l2' for (N, H, W) maps, None for the signed
      attributions themselves. Methods whose attribution is a 2-D map already
      (Grad-CAM at its layer's resolution, occlusion) return it as it is.
    chunk_size: attribute at most this many images at a time per device (bounds memory;
      None: all at once). See `jaxviz.parallel.map_chunks`.
    devices: split the batch over these devices: None for every local device, a list of
      devices, or a Mesh with a 'data' axis. See `jaxviz.parallel`.
    cpu_kernels: XLA:CPU's convolution kernels: None or 'xla' (XLA's default), or
      'eigen'; `model.cpu_kernels` is the one measured fastest for a loaded model.
      Ignored off CPU.
    **options: the method's own keyword arguments (e.g. objective='cross_entropy').
  """
  fn = resolve(method)
  images = validation.check_batch(images)
  n = images.shape[0]
  labels, broadcast = validation.check_labels(
      labels, n, validation.num_classes(apply_fn, params, images.shape[1:]))
  if reduce is not None:
    validation.check_choice(reduce, tuple(REDUCTIONS), 'reduce')
  keys = validation.split_keys(jax.random.key(0) if key is None else key, len(labels))
  method_options = tuple(sorted(options.items()))
  try:
    hash(method_options)
  except TypeError:
    raise InputError(f'options of {getattr(fn, "__name__", fn)} must be hashable Python '
                     f'values (they are compiled in), got {dict(options)!r}') from None
  return _batched(apply_fn, params, image=images, label=labels, key=keys,
                  chunk_size=chunk_size, devices=devices, cpu_kernels=cpu_kernels,
                  options={'method': fn, 'reduce': reduce,
                           'method_options': method_options},
                  broadcast=('image',) if broadcast else ())


def attribution_maps(model, method, images, labels, *, params=None, key=None,
                     reduce: str = 'max_abs', chunk_size: int | None = None,
                     devices: parallel.Devices = None, **options):
  """Any method's (N, H, W) maps at the images' resolution, for figures and metrics.

  `attribute` with the model's own kernels, pixel attributions reduced by `reduce`, and
  layer maps (Grad-CAM) upsampled bilinearly to the image (`jaxviz.upsample`). The maps
  are non-negative except occlusion's, a signed score drop (clip it at 0 for metrics
  that need a distribution, as `jaxviz.evaluation` does).

  Args:
    model: a `jaxviz.Model`.
    method, images, labels, key, reduce, chunk_size, devices, **options: as `attribute`.
    params: parameters to use instead of `model.params` (e.g. randomised layers).
  """
  maps = attribute(method, model, model.params if params is None else params, images,
                   labels, key=key, reduce=validation.check_choice(
                       reduce, tuple(REDUCTIONS), 'reduce'), chunk_size=chunk_size,
                   devices=devices, cpu_kernels=model.cpu_kernels, **options)
  return ops.upsample(maps, np.shape(images)[1:3])
