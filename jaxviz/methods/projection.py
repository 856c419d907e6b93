"""The Zeiler & Fergus projection of one unit's activation back to the input.

Zeiler & Fergus (2014, sec. 2.1) examine one activation of a convnet by setting every
other activation of its layer to zero and passing that map down a "deconvnet" attached to
the layers below: max-pools are undone with the switches recorded on the way up
("unpooling"), each ReLU is applied again to the reconstruction ("rectification"), and
each convolution is undone with its own filters transposed ("filtering"). That is the
backward pass of the network from a cotangent holding the unit's activation and zeros,
with every ReLU's backward rule replaced by g -> relu(g) (`relu_rules`, rule
'deconvnet'): a max-pool's backward pass routes to its argmax (the switch), a
convolution's is the transposed convolution, biases do not enter. The projection is zero
outside the unit's receptive field (`jaxviz.receptive_field`): `projection_crop` cuts that
field out of it, as `crop` does of the image.
"""

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz import parallel, validation
from jaxviz.errors import InputError
from jaxviz.methods._batched import BatchedMethod
from jaxviz.methods.layers import check_model, layer_activation, resolve_layer
from jaxviz.methods.relu_rules import with_relu_rule
from jaxviz.receptive_field import ReceptiveField, crop


def layer_output(model, params, images, layer: str):
  """The named layer's (N, h, w, C) output, as `Model.intermediates` reads it (the last
  value the hook sees). Later layers are traced, but nothing uses them, and jit drops
  them."""
  return layer_activation(model, params, images, layer)[1]


def unit_projection_one(apply_fn, params, image, channel, unit, *, layer: str):
  """The DeconvNet projection of unit (i, j) of `channel` at `layer`, (H, W, 3).

  Args:
    apply_fn: the `jaxviz.Model` (its `hooked_apply` reads the layer).
    params: its parameters.
    image: (H, W, 3) normalised image.
    channel: () int, the channel.
    unit: (2,) int (i, j); (-1, -1) picks the channel's most active unit (the first
      maximum in row-major order).
    layer: the layer's name.

  Returns:
    (H, W, 3): the projection of the feature map holding only that unit's activation.

  References:
    Zeiler & Fergus, Visualizing and Understanding Convolutional Networks, ECCV 2014,
    sec. 2.1 (unpooling, rectification, filtering) and Fig. 1.
  """
  fn = with_relu_rule(lambda p, x: layer_output(apply_fn, p, x[None], layer)[0], 'deconvnet')
  act, backward = jax.vjp(lambda x: fn(params, x), image)
  amap = act[..., channel]
  best = jnp.stack(jnp.unravel_index(jnp.argmax(amap), amap.shape)).astype(unit.dtype)
  unit = jnp.where(unit[0] < 0, best, unit)
  cot = jnp.zeros_like(act).at[unit[0], unit[1], channel].set(amap[unit[0], unit[1]])
  return backward(cot)[0]


_METHOD = BatchedMethod(unit_projection_one, batched=('image', 'channel', 'unit'))


def _check(model, params, images, layer, channel, unit, method: str):
  """(images, layer, (N,) channels, (N, 2) units with -1 for argmax, map shape)."""
  check_model(model, method)
  layer = resolve_layer(model, layer, method)
  images = validation.check_batch(images)
  n = len(images)
  spec = jax.eval_shape(lambda p, x: layer_output(model, p, x, layer), params,
                        jax.ShapeDtypeStruct((1, *images.shape[1:]), images.dtype))
  if len(spec.shape) != 4:
    raise InputError(f'{model.name} {layer} has output shape {spec.shape[1:]}, not a '
                     '(h, w, C) feature map: project a convolutional layer')
  h, w, c = spec.shape[1:]
  channels = validation.check_classes(channel, n, c, f'channel of {layer}')
  if unit is None:
    units = np.full((n, 2), -1, np.int32)
  else:
    units = np.asarray(unit)
    if units.shape == (2,):
      units = np.broadcast_to(units, (n, 2))
    if units.shape != (n, 2) or not np.issubdtype(units.dtype, np.integer):
      raise InputError(f'unit must be (i, j) integers or one pair per image ({n}, 2), '
                       f'got {units.dtype} of shape {units.shape}')
    pick = (units == -1).all(1)  # (-1, -1): that image's argmax unit
    bad = ~pick & ((units < 0).any(1) | (units[:, 0] >= h) | (units[:, 1] >= w))
    if bad.any():
      raise InputError(f'unit {units[bad][0].tolist()} is outside the {h}x{w} map of '
                       f'{model.name} {layer}')
    units = units.astype(np.int32)
  return images, layer, channels, units, (h, w, c)


def unit_projection(model, params, images, layer: str, channel, unit=None, *,
                    chunk_size: int | None = None, devices: parallel.Devices = None,
                    cpu_kernels: str | None = None):
  """Zeiler & Fergus's projection of one unit's activation per image to input space.

  Args:
    model: a `jaxviz.Model`.
    params: its parameters.
    images: (N, H, W, 3) normalised images.
    layer: a layer of `model.layer_names` with an (h, w, C) output (None: the model's
      default layer, `DEFAULT_LAYERS`).
    channel: the channel, one int or one per image (N,).
    unit: the unit (i, j), one pair or one per image (N, 2); None, or a (-1, -1) row:
      that image's most active unit of the channel (`max_units`).
    chunk_size, devices, cpu_kernels: as for every batched method (`jaxviz.attribute`).

  Returns:
    (N, H, W, 3) projections, in the images' dtype: zero outside the unit's receptive
    field; scaled by the unit's activation (a zero activation projects to zeros).

  Raises:
    InputError: an unknown or non-spatial layer, a channel out of range, a unit outside
      the map, bad images.

  References:
    Zeiler & Fergus, Visualizing and Understanding Convolutional Networks, ECCV 2014,
    sec. 2.1.
  """
  images, layer, channels, units, _ = _check(model, params, images, layer, channel, unit,
                                             'unit_projection')
  return _METHOD(model, params, image=images, channel=channels, unit=units,
                 options={'layer': layer}, chunk_size=chunk_size, devices=devices,
                 cpu_kernels=cpu_kernels)


def max_units(model, params, images, layer: str, channel) -> np.ndarray:
  """(N, 2) int: per image, the (i, j) of the channel's largest activation at `layer`
  (the first maximum in row-major order, as `unit_projection` with unit=None picks)."""
  images, layer, channels, _, (h, w, _) = _check(model, params, images, layer, channel,
                                                 None, 'max_units')

  @jax.jit
  def argmax(params, images, channels):
    act = layer_output(model, params, images, layer)
    amap = jnp.take_along_axis(act, channels[:, None, None, None], axis=-1)[..., 0]
    return jnp.argmax(amap.reshape(len(images), -1), axis=1)

  flat = np.asarray(argmax(params, images, jnp.asarray(channels)))
  return np.stack([flat // w, flat % w], axis=1).astype(np.int32)


def projection_crop(projection, field: ReceptiveField, unit, pad_value=0.0):
  """The unit's receptive field cut out of its projection, as `crop` cuts the image.

  Args:
    projection: (N, H, W, C) projections (or one (H, W, C)).
    field: the layer's `ReceptiveField` (`receptive_field(model, layer, channel=c)`).
    unit: (N, 2) units (or one (i, j) for all).
    pad_value: the value where the field runs past the image (the projection there is
      of padding, which has no pixels).

  Returns:
    (N, size, size, C) numpy array (or (size, size, C) for one projection).
  """
  projection = np.asarray(projection)
  single = projection.ndim == 3
  batch = projection[None] if single else projection
  if batch.ndim != 4:
    raise InputError(f'projection_crop expects (N, H, W, C) projections, got shape '
                     f'{projection.shape}')
  units = np.asarray(unit)
  units = np.broadcast_to(units, (len(batch), 2)) if units.shape == (2,) else units
  if units.shape != (len(batch), 2):
    raise InputError(f'unit must be (i, j) or one pair per projection ({len(batch)}, 2), '
                     f'got shape {units.shape}')
  out = np.stack([crop(p, field, i, j, pad_value) for p, (i, j) in zip(batch, units)])
  return out[0] if single else out
