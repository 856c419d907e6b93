"""One unit's or one channel's activation back-projected to the image (seed 002's "one
neuron" procedure; with the DeconvNet rule, Zeiler & Fergus's projection)."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz import parallel, validation
from jaxviz.errors import InputError
from jaxviz.methods._batched import BatchedMethod
from jaxviz.methods.layers import layer_activation, resolve_layer
from jaxviz.methods.relu_rules import RULES, with_relu_rule


def layer_gradient_one(model, params, image, channel, unit=None, *, layer: str,
                       rule: str = 'gradient'):
  """The vector-Jacobian product of image -> A (the layer's activation) with A kept at
  one channel (or one unit of it) and zero elsewhere, (H, W, 3).

  With rule='gradient' it is the gradient of sum_u A_u^2 / 2 over the kept units;
  'guided' and 'deconvnet' replace every ReLU's backward rule up to the layer
  (`relu_rules`): 'deconvnet' is Zeiler & Fergus's projection of a feature map down to
  pixel space (sec. 2.1: the other activations of the layer set to zero).

  Args:
    model: a `jaxviz.Model`.
    params: its parameters.
    image: (H, W, 3) normalised image.
    channel: the channel (last axis of the activation); may be traced.
    unit: None for the whole channel, or (row, column) of one unit in it.
    layer: a name of `model.layer_names` with an (h, w, C) activation.
    rule: 'gradient', 'guided' or 'deconvnet'.

  References:
    Zeiler & Fergus, Visualizing and Understanding Convolutional Networks, ECCV 2014,
    sec. 2.1; Springenberg et al. 2015 (guided), sec. 3.4.
  """
  layer = resolve_layer(model, layer, 'layer_gradient')
  validation.check_choice(rule, RULES, 'rule')
  validation.check_image(image)
  to_layer = with_relu_rule(lambda p, x: layer_activation(model, p, x, layer)[1], rule)
  activation, vjp = jax.vjp(lambda x: to_layer(params, x[None])[0], image)
  if activation.ndim != 3:
    raise InputError(f'layer_gradient needs an (h, w, channels) layer; {layer!r} has '
                     f'shape {activation.shape}')
  keep = jnp.arange(activation.shape[-1]) == channel
  if unit is not None:
    rows, cols = jnp.arange(activation.shape[0]), jnp.arange(activation.shape[1])
    keep = keep & (rows[:, None, None] == unit[0]) & (cols[None, :, None] == unit[1])
  return vjp(jnp.where(keep, activation, 0))[0]


def _layer_gradient(model, params, image, channel, unit, *, layer, rule, whole_channel):
  return layer_gradient_one(model, params, image, channel, None if whole_channel else unit,
                            layer=layer, rule=rule)


_batched = BatchedMethod(_layer_gradient, batched=('image', 'channel', 'unit'))


def layer_gradient(model, params, images, *, layer: str, channels, units=None,
                   rule: str = 'gradient', chunk_size: int | None = None,
                   devices: parallel.Devices = None, cpu_kernels: str | None = None):
  """`layer_gradient_one` over a batch: (N, H, W, 3) images -> (N, H, W, 3).

  Args:
    model, params, layer, rule: as `layer_gradient_one`.
    images: (N, H, W, 3) normalised images.
    channels: (N,) channel indices (or one for all).
    units: None (whole channels) or (N, 2) rows and columns (or one (2,) for all).
    chunk_size, devices, cpu_kernels: see `jaxviz.attribute`.
  """
  layer = resolve_layer(model, layer, 'layer_gradient')
  validation.check_choice(rule, RULES, 'rule')
  images = validation.check_batch(images)
  n = images.shape[0]
  _, act = jax.eval_shape(lambda x: layer_activation(model, params, x, layer), images[:1])
  if len(act.shape) != 4:
    raise InputError(f'layer_gradient needs an (h, w, channels) layer; {layer!r} has '
                     f'shape {act.shape[1:]}')
  h, w, c = act.shape[1:]
  channels = validation.check_classes(channels, n, c, f'channels of {layer}')
  if units is None:
    unit_array = np.zeros((n, 2), np.int32)
  else:
    unit_array = np.asarray(units)
    if unit_array.shape == (2,):
      unit_array = np.broadcast_to(unit_array, (n, 2))
    if unit_array.shape != (n, 2) or not np.issubdtype(unit_array.dtype, np.integer):
      raise InputError(f'units must be (N, 2) integer rows and columns, got '
                       f'{unit_array.dtype} {unit_array.shape}')
    bad = ~((unit_array >= 0) & (unit_array < (h, w))).all(axis=1)
    if bad.any():
      raise InputError(f'units of image(s) {np.flatnonzero(bad).tolist()} lie outside '
                       f'the {h}x{w} map of {layer}')
  return _batched(model, params, image=images, channel=channels,
                  unit=jnp.asarray(unit_array, jnp.int32), chunk_size=chunk_size,
                  devices=devices, cpu_kernels=cpu_kernels,
                  options=dict(layer=layer, rule=rule, whole_channel=units is None))
