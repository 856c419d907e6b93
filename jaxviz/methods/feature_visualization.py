"""Neuron and channel maximisation (Erhan et al. 2009; Yosinski et al. 2015; the course's
"fabriquer une image qui activera maximalement un neurone"), in the pixel basis or in
lucid's decorrelated Fourier basis (Olah et al. 2017)."""

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxviz import parallel, validation
from jaxviz.errors import InputError
from jaxviz.methods import _ascent, _param
from jaxviz.methods._batched import BatchedMethod
from jaxviz.methods.class_visualization import _float_dtype
from jaxviz.methods.layers import check_model, layer_activation, resolve_layer

OBJECTIVES = ('mean', 'centre', 'unit')
INITS = ('zeros', 'black', 'noise')


class FeatureVisualization(NamedTuple):
  """Attributes:
    images: (N, H, W, 3) final images (normalised space), one per channel.
    activation: (N,) the maximised activation f(x) of the final image (no jitter).
    objective_trace: (N, T) f(x) - l2_reg * ||x||_2^2 at each step (at the jittered
      image the gradient was taken at).
    activation_trace: (N, T) f(x) there.
    variables: (N, *shape) the optimised variables z (the images themselves for
      parameterization='pixel' without decorrelation; see `jaxviz.methods._param`).
  """
  images: jax.Array
  activation: jax.Array
  objective_trace: jax.Array
  activation_trace: jax.Array
  variables: jax.Array


def _as_map(a):
  """A layer's output for one image as (h, w, C): a vector (C,) is a 1 x 1 map."""
  return a.reshape(1, 1, -1) if a.ndim == 1 else a


def unit_activation(model, params, x, layer: str, channel, unit, objective: str):
  """f(x): channel `channel` of `layer` for the image x (H, W, 3): its spatial mean
  (objective 'mean'), or the unit at `unit` = (i, j) (objective 'unit')."""
  a = _as_map(layer_activation(model, params, x[None], layer)[1][0])
  if objective == 'mean':
    return jnp.mean(a[..., channel])
  return a[unit[0], unit[1], channel]


def _feature_visualization_one(model, params, channel, key, learning_rate, l2_reg, unit,
                               low, high, *, layer: str, objective: str, image_shape,
                               num_iterations: int, blur_every: int, blur_sigma: float,
                               max_jitter: int, clamp: bool, parameterization: str,
                               decorrelate: bool, optimizer, init: str, on_step=None):
  """One channel's ascent (see `channel_visualization`)."""
  init_key, steps_key = jax.random.split(key)
  shape = _param.param_shape(parameterization, image_shape)
  z0 = jnp.zeros(shape, low.dtype)
  if init == 'noise':
    z0 = _param.INIT_SD * jax.random.normal(init_key, shape, low.dtype)
  elif init == 'black':
    z0 = jnp.broadcast_to(low, shape)
  to_image = lambda z: _param.to_image(z, parameterization, decorrelate, low, high,
                                       image_shape)

  def objective_fn(params, z, channel, unit, l2_reg):
    x = to_image(z)
    act = unit_activation(model, params, x, layer, channel, unit, objective)
    return act - l2_reg * jnp.sum(x * x), act

  transforms = []
  if max_jitter > 0:
    transforms.append(
        _param.SpectrumJitter(max_jitter, steps_key, *image_shape[:2])
        if parameterization == 'fourier' else _ascent.Jitter(max_jitter, steps_key))
  if clamp and not _param.uses_sigmoid(parameterization, decorrelate):
    transforms.append(_ascent.Clamp(low, high))
  if blur_every > 0:
    transforms.append(_ascent.BlurEvery(blur_every, blur_sigma))
  result = _ascent.ascend(
      objective_fn, params, z0, (channel, unit, l2_reg),
      optimizer=optimizer if optimizer is not None else optax.sgd(learning_rate),
      num_steps=num_iterations, transforms=transforms,
      record=lambda value, act: (value, act), on_step=on_step)
  image = to_image(result.x)
  final = unit_activation(model, params, image, layer, channel, unit, objective)
  return FeatureVisualization(image, final, *result.records, result.x)


_batched = BatchedMethod(
    _feature_visualization_one,
    batched=('channel', 'key', 'learning_rate', 'l2_reg'),
    replicated=('unit', 'low', 'high'), iterative=True)


def layer_shape(model, params, layer: str, image_shape) -> tuple[int, int, int]:
  """(h, w, C) of `layer`'s output for one (H, W, 3) image: an abstract evaluation, done
  once per model, layer, size and parameter shapes (the shape does not depend on values)."""
  leaves, treedef = jax.tree.flatten(params)
  return _layer_shape(model, layer, tuple(image_shape), jnp.dtype(_float_dtype(params)).name,
                      treedef, tuple((np.shape(p), jnp.result_type(p).name) for p in leaves))


@functools.lru_cache(maxsize=256)
def _layer_shape(model, layer, image_shape, dtype, treedef, leaves):
  spec = jax.tree.unflatten(treedef, [jax.ShapeDtypeStruct(s, d) for s, d in leaves])
  x = jax.ShapeDtypeStruct((1, *image_shape), jnp.dtype(dtype))
  shape = jax.eval_shape(lambda p, x: layer_activation(model, p, x, layer)[1], spec, x).shape
  if len(shape) not in (2, 4):
    raise InputError(f'layer {layer!r} has shape {shape[1:]}: expected a feature map '
                     '(h, w, C) or a vector (C,)')
  return (1, 1, shape[1]) if len(shape) == 2 else tuple(shape[1:])


def check_channels(channels, count: int, layer: str) -> np.ndarray:
  """`channels` (an int or a sequence of ints) as int32 (N,), each in [0, count)."""
  arr = np.atleast_1d(np.asarray(channels))
  if arr.size == 0:
    raise InputError('channels is empty: give at least one channel index')
  if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
    raise InputError(f'channels must be integer indices, got {np.asarray(channels).dtype} '
                     f'of shape {np.shape(channels)}')
  bad = arr[(arr < 0) | (arr >= count)]
  if bad.size:
    raise InputError(f'channel(s) {bad.tolist()} out of range [0, {count}) of layer {layer!r}')
  return arr.astype(np.int32)


def _check_image_shape(image_shape) -> tuple[int, int, int]:
  if (not isinstance(image_shape, (tuple, list)) or len(image_shape) != 3
      or image_shape[-1] != 3 or min(image_shape) < 1):
    raise InputError(f'image_shape must be (H, W, 3), got {image_shape}')
  return tuple(int(s) for s in image_shape)


def _check_options(image_shape, num_iterations, learning_rate, l2_reg, blur_every,
                   blur_sigma, max_jitter, parameterization, decorrelate, init):
  validation.check_positive(num_iterations, 'num_iterations', integer=True)
  validation.check_positive(learning_rate, 'learning_rate')
  validation.check_positive(l2_reg, 'l2_reg', zero=True)
  validation.check_positive(blur_every, 'blur_every', integer=True, zero=True)
  validation.check_positive(max_jitter, 'max_jitter', integer=True, zero=True)
  if blur_every:
    validation.check_positive(blur_sigma, 'blur_sigma')
  if max_jitter >= min(image_shape[:2]):
    raise InputError(f'max_jitter {max_jitter} must be smaller than the image '
                     f'({image_shape[0]}x{image_shape[1]})')
  validation.check_choice(parameterization, _param.PARAMETERIZATIONS, 'parameterization')
  validation.check_choice(init, INITS, 'init')
  if not isinstance(decorrelate, (bool, np.bool_)):
    raise InputError(f'decorrelate must be True or False, got {decorrelate!r}')
  if init == 'black' and _param.uses_sigmoid(parameterization, decorrelate):
    raise InputError("init='black' starts the plain pixel parameterisation at pixel 0; a "
                     "sigmoid parameterisation never reaches it: use 'zeros' or 'noise'")
  if blur_every and parameterization == 'fourier':
    raise InputError("blur_every blurs the optimised variable, a spectrum under "
                     "parameterization='fourier': use blur_every=0 (the 1/f scaling is "
                     "that basis's smoothness prior)")


def channel_visualization(model, params, layer: str, channels, key, *,
                          objective: str = 'mean', unit: Sequence[int] | None = None,
                          image_shape=None, num_iterations: int = 100,
                          learning_rate=1.0, l2_reg=1e-3, blur_every: int = 0,
                          blur_sigma: float = 0.5, max_jitter: int = 0, clamp: bool = True,
                          parameterization: str = 'pixel', decorrelate: bool = False,
                          optimizer: optax.GradientTransformation | None = None,
                          init: str = 'zeros', chunk_size: int | None = None,
                          devices: parallel.Devices = None, cpu_kernels: str | None = None,
                          progress: Callable | None = None) -> FeatureVisualization:
  """Images that maximally excite one neuron, or one channel, of `layer` each.

  The course's neuron maximisation, with the weights frozen: start from an image of
  zeros (the normalised space's zero: the dataset's mean colour), and ascend

      I* = argmax_I f(I) - lambda ||I||_2^2

  by gradient steps I <- I + lr * grad (plain SGD unless `optimizer` is given), where f
  is the activation of the chosen neuron ('unit': a_{i,j,c}; 'centre': the channel's
  centre unit a_{h//2, w//2, c}) or the channel's spatial mean ('mean': mean_{i,j}
  a_{i,j,c}), and I the normalised image. Each step optionally rolls the image by random
  (ox, oy) in [0, max_jitter] and back, clamps it to the pixel box and blurs it every
  blur_every steps (Yosinski et al. 2015's regularisers, as `class_visualization`).

  With parameterization='fourier' or decorrelate=True the ascent runs on a variable z
  of which the image is a function I = image(z) (lucid's preconditioning, see
  `jaxviz.methods._param`): the gradient flows through the parameterisation, the l2 term
  still penalises the image, and the image lies in the pixel box by construction (a
  sigmoid), so `clamp` does not apply; jitter rolls the image (as a phase ramp on the
  spectrum for 'fourier').

  All channels run in one compiled program (a vmap over the channel index, chunked and
  spread over devices as `class_visualization`'s targets).

  Args:
    model: a `jaxviz.Model` (its hooks read the layer).
    params: its parameters.
    layer: a name of `model.layer_names` (e.g. 'features.5' for SqueezeNet 1.1).
    channels: an int or a sequence of ints, the channels of `layer`, one image each.
    key: a PRNG key (split per channel) or one key per channel: drives the jitter and
      the noise init; the same key gives the same images bit for bit.
    objective: 'mean', 'centre' or 'unit' (see above).
    unit: (i, j), the neuron's position in the layer's map, for objective='unit'.
    image_shape: (H, W, 3); None: the model's (model.image_size square).
    num_iterations: gradient steps.
    learning_rate: SGD's step size (or an (N,) array, one per channel); unused when
      `optimizer` is given.
    l2_reg: lambda (>= 0; or an (N,) array).
    blur_every, blur_sigma: blur the optimised variable with sigma blur_sigma pixels when
      t % blur_every == 0 (0: never; 'pixel' parameterisation only).
    max_jitter: roll by up to this many pixels before each gradient (0: none).
    clamp: clamp the image to the model's pixel box after each step ('pixel' without
      decorrelation).
    parameterization: 'pixel' (the course's) or 'fourier' (lucid's fft_image).
    decorrelate: mix colours through lucid's ImageNet colour-correlation square root.
    optimizer: an optax transformation in place of SGD (e.g. optax.adam(0.05), lucid's
      default); create it once, a new object compiles anew.
    init: 'zeros' (z = 0: the course's start; the mean colour for 'pixel', mid-grey
      for the sigmoid parameterisations), 'black' (pixels 0, 'pixel' without
      decorrelation only) or 'noise' (z ~ N(0, 0.01^2), lucid's). A network whose
      biases are all zero (random-init torchvision SqueezeNet) maps the zero image to
      zero activations with zero ReLU gradients: from 'zeros' it cannot move, and
      'black' or 'noise' start it.
    chunk_size, devices, cpu_kernels, progress: as `class_visualization`'s.

  Returns:
    A `FeatureVisualization`.

  References:
    Erhan, Bengio, Courville & Vincent, Visualizing Higher-Layer Features of a Deep
      Network, Tech. report 1341, U. Montreal, 2009, sec. 3.1 (activation maximisation).
    Yosinski, Clune, Nguyen, Fuchs & Lipson, Understanding Neural Networks Through Deep
      Visualization, ICML Deep Learning Workshop 2015, sec. 3 (regularisers).
    Olah, Mordvintsev & Schubert, Feature Visualization, Distill 2017 (the Fourier and
      decorrelated parameterisation).
  """
  check_model(model, 'channel_visualization')
  layer = resolve_layer(model, layer, 'channel_visualization')
  image_shape = _check_image_shape(
      (model.image_size, model.image_size, 3) if image_shape is None else image_shape)
  validation.check_choice(objective, OBJECTIVES, 'objective')
  _check_options(image_shape, num_iterations, learning_rate, l2_reg, blur_every, blur_sigma,
                 max_jitter, parameterization, decorrelate, init)
  h, w, count = layer_shape(model, params, layer, image_shape)
  if h * w == 0:
    raise InputError(f'layer {layer!r} has an empty map for {image_shape[0]}x'
                     f'{image_shape[1]} images: use larger images')
  channels = check_channels(channels, count, layer)
  if objective == 'unit':
    if unit is None or np.shape(unit) != (2,):
      raise InputError(f"objective='unit' needs unit=(i, j), got {unit!r}")
    i, j = (int(u) for u in unit)
    if not (0 <= i < h and 0 <= j < w):
      raise InputError(f'unit {(i, j)} is outside the {h}x{w} map of layer {layer!r}')
  elif unit is not None:
    raise InputError(f"unit is only for objective='unit', not {objective!r}")
  else:
    i, j = h // 2, w // 2
  n = len(channels)
  dtype = _float_dtype(params)
  low, high = model.valid_range()
  per_channel = lambda v: jnp.broadcast_to(jnp.asarray(v, dtype), (n,))
  return _batched(
      model, params, channel=channels, key=validation.split_keys(key, n, 'key'),
      learning_rate=per_channel(learning_rate), l2_reg=per_channel(l2_reg),
      unit=jnp.asarray([i, j], jnp.int32), low=jnp.asarray(low, dtype),
      high=jnp.asarray(high, dtype), chunk_size=chunk_size, devices=devices,
      cpu_kernels=cpu_kernels, progress=progress, num_steps=int(num_iterations),
      options=dict(layer=layer, objective='mean' if objective == 'mean' else 'unit',
                   image_shape=image_shape, num_iterations=int(num_iterations),
                   blur_every=int(blur_every), blur_sigma=float(blur_sigma),
                   max_jitter=int(max_jitter), clamp=bool(clamp),
                   parameterization=parameterization, decorrelate=bool(decorrelate),
                   optimizer=optimizer, init=init))
