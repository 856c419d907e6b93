"""How a network's features and prediction change as an image is rotated, translated or
scaled: Zeiler & Fergus's invariance study (their Fig. 5; the course's Fig. 6).

Every transformed copy of an image is an affine resampling of it: for each output pixel p
(row, column), the source point is c + M (p - c) - t, with c the image centre, read with
bilinear interpolation (`jax.scipy.ndimage.map_coordinates`, order 1) and a fill value
outside the image. All the copies, and the untransformed image beside them, go through
the network in one vmapped, jitted call.

References:
  Zeiler & Fergus, Visualizing and Understanding Convolutional Networks, ECCV 2014,
  sec. 4.4 and Fig. 5 ("feature invariance": vertical translation, scale and rotation;
  Euclidean distance between the feature vectors of the original and transformed images
  in layers 1 and 7, and the probability of the true label).
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy import ndimage

from jaxviz import inspection, validation
from jaxviz.errors import InputError
from jaxviz.methods.layers import check_model

TRANSFORMS = ('rotate', 'translate', 'scale')
# The invariance study's top layer per model: the penultimate feature vector where the
# model has one (VGG16's fc7 after its ReLU, AlexNet's fc7, the ResNets' pooled features;
# Zeiler & Fergus's "layer 7"), else the last convolutional feature map (SqueezeNet and
# the shapes model have no fully connected layer).
TOP_LAYERS = {
    'squeezenet1_0': 'features.12', 'squeezenet1_1': 'features.12',
    'vgg16': 'classifier.4', 'vgg16_bn': 'classifier.4', 'vgg19': 'classifier.4',
    'alexnet': 'classifier.5', 'resnet18': 'avgpool', 'resnet50': 'avgpool',
    'shapes': 'features.8',
}


class InvarianceStudy(NamedTuple):
  """One image under one family of transforms (T values).

  Attributes:
    transform: 'rotate', 'translate' or 'scale'.
    values: (T,) degrees, (T,) or (T, 2) pixels, or (T,) factors.
    images: (T, H, W, 3) the transformed images, normalised.
    probability: (T,) softmax probability of `label` for each transformed image.
    predicted: (T,) the most probable class of each.
    distances: {layer: (T,)} Euclidean distance between the layer's flattened output for
      each transformed image and for the untransformed one.
    relative: {layer: (T,)} the same divided by the untransformed output's norm (inf
      where that norm is 0 and the distance is not; 0 where both are).
    label: the class whose probability is reported.
    original_probability: its probability for the untransformed image.
    original_predicted: the untransformed image's most probable class.
  """
  transform: str
  values: np.ndarray
  images: jax.Array
  probability: jax.Array
  predicted: jax.Array
  distances: dict
  relative: dict
  label: int
  original_probability: jax.Array
  original_predicted: jax.Array


def default_layers(model) -> tuple[str, str]:
  """(first layer, top layer): the first convolution after its ReLU and TOP_LAYERS'."""
  if model.name not in TOP_LAYERS or model.name not in inspection.FIRST_ACTIVATIONS:
    raise InputError(f'no default invariance layers for {model.name!r}: pass layers= '
                     '(names of model.layer_names)')
  return inspection.FIRST_ACTIVATIONS[model.name], TOP_LAYERS[model.name]


def default_values(transform: str, size: int) -> np.ndarray:
  """The values a study uses when given none; each holds the identity.

  rotate: 0 to 360 degrees in steps of 15 (25 values); translate: 17 whole-pixel
  vertical shifts spanning a quarter of the image's side either way; scale: 13 factors
  from 1/2 to 2, evenly spaced in log scale (2 ** linspace(-1, 1, 13), so 1 exactly).
  """
  validation.check_choice(transform, TRANSFORMS, 'transform')
  if transform == 'rotate':
    return np.arange(0.0, 361.0, 15.0)
  if transform == 'translate':
    return np.unique(np.linspace(-size / 4, size / 4, 17).round())
  return 2.0 ** np.linspace(-1.0, 1.0, 13)


def _affine(transform: str, values, dtype):
  """(M (T, 2, 2), t (T, 2)) such that the source of output pixel p is c + M (p - c) - t,
  in (row, column) coordinates."""
  values = jnp.asarray(values, dtype)
  n = values.shape[0]
  eye = jnp.broadcast_to(jnp.eye(2, dtype=dtype), (n, 2, 2))
  zero = jnp.zeros((n, 2), dtype)
  if transform == 'rotate':
    # Counter-clockwise on screen by `values` degrees (rows grow downwards): the source
    # of p is p rotated clockwise about the centre. Whole multiples of 90 degrees get
    # exact cosines and sines (cos(pi / 2) is 6e-17 in floating point), so that they are
    # exact permutations of the pixels (np.rot90) and 0 and 360 the identity.
    rad = jnp.deg2rad(values)
    cos, sin = jnp.cos(rad), jnp.sin(rad)
    right = jnp.mod(values, 90) == 0
    cos, sin = jnp.where(right, jnp.round(cos), cos), jnp.where(right, jnp.round(sin), sin)
    m = jnp.stack([jnp.stack([cos, sin], -1), jnp.stack([-sin, cos], -1)], -2)
    return m, zero
  if transform == 'translate':  # content moves down (and right) by the shift
    shift = values[:, None] * jnp.array([1, 0], dtype) if values.ndim == 1 else values
    return eye, shift
  return eye / values[:, None, None], zero  # scale: magnified by the factor about c


def _warp(image, m, t, fill):
  """One affine resampling of an (H, W, C) image; `fill` (C,) outside it."""
  h, w = image.shape[:2]
  dtype = image.dtype
  centre_r, centre_c = (h - 1) / 2, (w - 1) / 2
  rows, cols = jnp.meshgrid(jnp.arange(h, dtype=dtype), jnp.arange(w, dtype=dtype),
                            indexing='ij')
  dr, dc = rows - centre_r, cols - centre_c
  # Written out rather than an einsum so that the identity is exact: centre + 1 * d + 0.
  src_r = centre_r + m[0, 0] * dr + m[0, 1] * dc - t[0]
  src_c = centre_c + m[1, 0] * dr + m[1, 1] * dc - t[1]
  # map_coordinates takes its fill (cval) as a static number, so sample with 0 and add
  # `fill` times the share of each output pixel's interpolation weight that fell outside
  # the image, read off a channel of ones sampled the same way. Inside the image, at a
  # whole-pixel source point, that share is exactly 0 and the pixel is copied exactly.
  sample = lambda channel: ndimage.map_coordinates(channel, [src_r, src_c], order=1,
                                                   mode='constant', cval=0.0)
  stacked = jnp.concatenate([image, jnp.ones((h, w, 1), dtype)], axis=-1)
  sampled = jax.vmap(sample, in_axes=-1, out_axes=-1)(stacked)
  return sampled[..., :-1] + fill * (1 - sampled[..., -1:])


@functools.partial(jax.jit, static_argnames=('transform',))
def _transform_images(image, values, fill, transform):
  m, t = _affine(transform, values, image.dtype)
  return jax.vmap(_warp, in_axes=(None, 0, 0, None))(image, m, t, fill)


def _check_values(transform: str, values, size: int) -> np.ndarray:
  if values is None:
    return default_values(transform, size)
  arr = np.asarray(values)
  translate_pairs = transform == 'translate' and arr.ndim == 2 and arr.shape[1] == 2
  if arr.ndim != 1 and not translate_pairs:
    raise InputError(f'values has shape {arr.shape}: expected (T,)'
                     + (' or (T, 2) (down, right) shifts' if transform == 'translate' else ''))
  if arr.shape[0] == 0:
    raise InputError('values is empty: give at least one transform value')
  if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer)
                               or np.issubdtype(arr.dtype, np.floating)):
    raise InputError(f'values must be numbers, got {arr.dtype}')
  if not np.isfinite(arr).all():
    raise InputError(f'values must be finite, got {arr.tolist()}')
  if transform == 'scale' and not (arr > 0).all():
    raise InputError(f'scale factors must be positive, got {arr.tolist()}')
  return arr.astype(np.float64)


def _check_fill(fill, dtype):
  arr = np.asarray(fill)
  if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer)
                               or np.issubdtype(arr.dtype, np.floating)):
    raise InputError(f'fill must be a number or one per channel (3,), got {fill!r}')
  if arr.shape not in ((), (3,)) or not np.isfinite(arr).all():
    raise InputError(f'fill must be a finite number or 3 finite numbers (normalised '
                     f'space), got {fill!r}')
  return jnp.asarray(np.broadcast_to(arr, (3,)), dtype)


def transform_images(image, transform: str, values=None, fill=0.0):
  """The transformed copies of one image: (T, H, W, 3), in one vmapped, jitted call.

  Args:
    image: (H, W, 3) normalised image.
    transform: 'rotate' (degrees, counter-clockwise about the centre),
      'translate' (pixels: (T,) moves the content down, (T, 2) down and right) or
      'scale' (factors > 0, magnifying about the centre).
    values: (T,) (or (T, 2) shifts); None: `default_values`.
    fill: the value outside the image, in the normalised space, a number or one per
      channel; 0 is the dataset's mean colour (preprocess maps the mean to 0).

  Returns:
    (T, H, W, 3) in the image's dtype. The identity (0 degrees, shift 0, factor 1)
    returns the image exactly, a multiple of 90 degrees on a square image is exactly
    np.rot90, and a whole-pixel shift is exactly a shifted copy with `fill` let in.
  """
  validation.check_choice(transform, TRANSFORMS, 'transform')
  image = validation.check_image(image)
  image = jnp.asarray(image)
  values = _check_values(transform, values, min(image.shape[:2]))
  return _transform_images(image, values, _check_fill(fill, image.dtype), transform)


@functools.partial(jax.jit, static_argnames=('model', 'transform', 'layers'))
def _study(model, params, image, label, values, fill, transform, layers):
  warped = _transform_images(image, values, fill, transform)
  # The untransformed image rides in the same batch as its copies: one call, and its
  # features go through exactly the computation theirs do.
  batch = jnp.concatenate([image[None], warped])
  logits, acts = model.intermediates(params, batch, layers)
  probability = jax.nn.softmax(logits, axis=-1)[:, label]
  predicted = jnp.argmax(logits, axis=-1)
  distances, relative = {}, {}
  for name in layers:
    flat = acts[name].reshape(batch.shape[0], -1)
    d = jnp.linalg.norm(flat[1:] - flat[:1], axis=-1)
    norm = jnp.linalg.norm(flat[0])
    distances[name] = d
    relative[name] = jnp.where(d == 0, 0.0, d / norm)
  return warped, probability, predicted, distances, relative


def invariance_study(model, params, image, label=None, *, transform: str = 'rotate',
                     values=None, layers: tuple[str, ...] | None = None,
                     fill=0.0) -> InvarianceStudy:
  """Zeiler & Fergus's invariance study of one image under one family of transforms.

  Each value's transformed image (`transform_images`) and the untransformed image go
  through the network in one jitted call (compiled once per model, transform, layers,
  image shape and number of values). For each value: the probability of `label`, the
  predicted class, and, per layer, the Euclidean distance between the layer's flattened
  output for the transformed and the untransformed image.

  Args:
    model: a `jaxviz.Model`.
    params: its parameters.
    image: (H, W, 3) normalised image.
    label: the true class (index or name); None: the untransformed image's prediction.
    transform: 'rotate', 'translate' or 'scale' (see `transform_images`).
    values: the transform values; None: `default_values` (each includes the identity).
    layers: layer names to measure; None: `default_layers(model)`, the first
      convolution after its ReLU and the top feature layer (TOP_LAYERS).
    fill: the value outside the image, normalised; 0 (default) is the mean colour.

  Returns:
    An `InvarianceStudy`. At the identity the image is unchanged bit for bit, so its
    distances are exactly 0 and its probability the untransformed image's.

  Raises:
    InputError: an unknown transform, layer or class, values of the wrong shape,
      non-finite or (scale) non-positive, a bad fill or image.

  References:
    Zeiler & Fergus 2014, sec. 4.4, Fig. 5.
  """
  check_model(model, 'invariance_study')
  validation.check_choice(transform, TRANSFORMS, 'transform')
  image = validation.check_image(image)
  layers = default_layers(model) if layers is None else layers
  if isinstance(layers, str):
    layers = (layers,)
  layers = tuple(layers)
  if not layers:
    raise InputError('layers is empty: give at least one layer name')
  for name in layers:
    if not isinstance(name, str) or name not in model.layer_names:
      raise InputError(f'unknown layer {name!r} for {model.name}; see Model.layer_names')
  image = jnp.asarray(image)
  values = _check_values(transform, values, min(image.shape[:2]))
  fill = _check_fill(fill, image.dtype)
  if label is None:
    label = int(jnp.argmax(model.apply(params, image[None])[0]))
  label = model.class_index(label)
  warped, probability, predicted, distances, relative = _study(
      model, params, image, jnp.int32(label), values, fill, transform, layers)
  return InvarianceStudy(
      transform=transform, values=values, images=warped[:], probability=probability[1:],
      predicted=predicted[1:], distances=distances, relative=relative, label=label,
      original_probability=probability[0], original_predicted=predicted[0])
