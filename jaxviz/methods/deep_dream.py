"""DeepDream (Mordvintsev, Olah & Tyka 2015): amplify whatever a layer already sees in an
image, over octaves, as the original notebook does."""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxviz import parallel, validation
from jaxviz.errors import InputError
from jaxviz.methods import _ascent
from jaxviz.methods._batched import BatchedMethod
from jaxviz.methods.class_visualization import _float_dtype
from jaxviz.methods.feature_visualization import layer_shape
from jaxviz.methods.layers import check_model, layer_activation, resolve_layer

# The notebook's step_size, 1.5 on Caffe's 0-255 pixel scale, in ImageNet-normalised units:
# 1.5 / 255 / 0.226 (the mean of ImageNet's std).
DEFAULT_LEARNING_RATE = 0.026


class DeepDream(NamedTuple):
  """Attributes:
    images: (N, H, W, 3) the dreamed images (normalised space).
    objective_original: (N,) mean(a^2) of the layer at the original image, and
    objective_final: (N,) at the dream (both at full size, no jitter).
    objective_before: (N, octaves) mean(a^2) of the layer at each octave's start image
      (its downscaled base plus the upscaled detail of the octaves before), smallest
      octave first.
    objective_after: (N, octaves) the same at the octave's last image.
    objective_trace: (N, octaves, steps_per_octave) mean(a^2) at each step (at the
      jittered image the gradient was taken at).
  """
  images: jax.Array
  objective_original: jax.Array
  objective_final: jax.Array
  objective_before: jax.Array
  objective_after: jax.Array
  objective_trace: jax.Array


def mean_abs_normalized_sgd(learning_rate) -> optax.GradientTransformation:
  """Steps of -lr * g / mean(|g|) (given the gradient g of a loss; zero where g is): the
  notebook's `src.data += step_size / np.abs(g).mean() * g` for the ascent's -g. The
  normalisation makes the step independent of the objective's scale: any positive
  multiple of the objective takes the same steps.

  References:
    Mordvintsev, Olah & Tyka, DeepDream notebook (github.com/google/deepdream,
      dream.ipynb, `make_step`), 2015.
  """

  def update(updates, state, params=None):
    del params
    leaves = jax.tree.leaves(updates)
    mean = sum(jnp.sum(jnp.abs(g)) for g in leaves) / sum(g.size for g in leaves)
    safe = jnp.where(mean > 0, mean, 1.0)
    return jax.tree.map(lambda g: (-(learning_rate * g) / safe).astype(g.dtype), updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def octave_sizes(height: int, width: int, octaves: int, octave_scale: float):
  """((h, w), ...) of the octaves, smallest first: round(side / octave_scale^k) for
  k = octaves - 1, ..., 0 (the last is the image itself)."""
  return tuple((max(1, int(round(height / octave_scale ** k))),
                max(1, int(round(width / octave_scale ** k))))
               for k in range(octaves - 1, -1, -1))


def resize(image, size):
  """Bilinear resize of (H, W, C) to `size` (jax.image.resize 'linear': half-pixel
  centres, a triangle filter widened by the scale when shrinking, i.e. antialiased)."""
  if tuple(image.shape[:2]) == tuple(size):
    return image
  return jax.image.resize(image, (*size, image.shape[-1]), 'linear')


def dream_objective(model, params, x, layer: str):
  """mean(a^2) of `layer`'s activation a for one image x (H, W, 3).

  The notebook's `objective_L2` sets the layer's gradient to a, the gradient of
  0.5 ||a||^2; mean(a^2) is that times 2 / a.size, so its normalised steps are the
  same, and its value compares across layers and image sizes.
  """
  a = layer_activation(model, params, x[None], layer)[1]
  return jnp.mean(a * a)


def _deep_dream_one(model, params, image, key, learning_rate, low, high, *, layer: str,
                    sizes, steps_per_octave: int, max_jitter: int, clamp: bool,
                    on_step=None):
  """One image's dream (see `deep_dream`)."""

  def objective(params, x):
    value = dream_objective(model, params, x, layer)
    return value, value

  optimizer = mean_abs_normalized_sgd(learning_rate)
  bases = [resize(image, size) for size in sizes]
  detail = jnp.zeros_like(bases[0])
  before, after, traces = [], [], []
  for octave, base in enumerate(bases):
    if octave > 0:  # the detail the smaller octaves made, brought up to this size
      detail = resize(detail, base.shape[:2])
    x0 = base + detail  # not clamped: the notebook clips after each step only
    transforms = []
    if max_jitter > 0:
      transforms.append(_ascent.Jitter(max_jitter, jax.random.fold_in(key, octave)))
    if clamp:
      transforms.append(_ascent.Clamp(low, high))
    step = None
    if on_step is not None:
      step = lambda t, octave=octave: on_step(octave * steps_per_octave + t)
    result = _ascent.ascend(objective, params, x0, optimizer=optimizer,
                            num_steps=steps_per_octave, transforms=transforms,
                            record=lambda value, aux: value, on_step=step)
    before.append(dream_objective(model, params, x0, layer))
    after.append(dream_objective(model, params, result.x, layer))
    traces.append(result.records)
    detail = result.x - base
  return DeepDream(result.x, dream_objective(model, params, image, layer), after[-1],
                   jnp.stack(before), jnp.stack(after), jnp.stack(traces))


_batched = BatchedMethod(_deep_dream_one, batched=('image', 'key', 'learning_rate'),
                         replicated=('low', 'high'), iterative=True)


def deep_dream(model, params, images, layer: str | None = None, *, key=None,
               octaves: int = 4, octave_scale: float = 1.4, steps_per_octave: int = 10,
               learning_rate=DEFAULT_LEARNING_RATE, max_jitter: int = 16, clamp: bool = True,
               chunk_size: int | None = None, devices: parallel.Devices = None,
               cpu_kernels: str | None = None,
               progress: Callable | None = None) -> DeepDream:
  """DeepDream: ascend the layer's mean(a^2) from each image, octave by octave.

  The notebook's algorithm: the octave bases are the image downscaled by octave_scale^k
  (k = octaves - 1, ..., 0); from the smallest, each octave starts at its base plus the
  detail (image minus base) of the octave below, upscaled, and takes steps_per_octave
  steps: roll by random (ox, oy) in [0, max_jitter], x <- x + lr g / mean(|g|) with g the
  gradient of the objective (`mean_abs_normalized_sgd`), roll back, clamp to the pixel
  box. The notebook rolls by [-jitter, jitter]; a roll is circular, so [0, 2 jitter] is
  the same set of shifts, relabelled.

  Args:
    model: a `jaxviz.Model` (its hooks read the layer).
    params: its parameters.
    images: (N, H, W, 3) normalised images, or one (H, W, 3).
    layer: a name of `model.layer_names`; None: the model's default layer
      (`jaxviz.methods.layers.DEFAULT_LAYERS`).
    key: PRNG key of the jitter (split per image; None: jax.random.key(0)).
    octaves, octave_scale: the number of scales and the ratio between them.
    steps_per_octave: ascent steps at each scale.
    learning_rate: the step in normalised units per mean |g| (or one per image);
      default: the notebook's 1.5 on the 0-255 scale.
    max_jitter: the largest roll, in pixels (0: none); smaller than the smallest octave.
    clamp: clamp to the model's pixel box after each step (the notebook's clip=True).
    chunk_size, devices, cpu_kernels, progress: as `class_visualization`'s (progress
      counts octaves * steps_per_octave steps).

  Returns:
    A `DeepDream`.

  References:
    Mordvintsev, Olah & Tyka, Inceptionism: Going Deeper into Neural Networks, Google
      Research blog, 2015, and its notebook (github.com/google/deepdream, dream.ipynb:
      `make_step`, `deepdream`).
  """
  check_model(model, 'deep_dream')
  layer = resolve_layer(model, layer, 'deep_dream')
  images = jnp.asarray(images) if isinstance(images, jax.Array) else np.asarray(images)
  images = validation.check_batch(images[None] if images.ndim == 3 else images)
  validation.check_positive(octaves, 'octaves', integer=True)
  validation.check_positive(steps_per_octave, 'steps_per_octave', integer=True)
  validation.check_positive(learning_rate, 'learning_rate')
  validation.check_positive(max_jitter, 'max_jitter', integer=True, zero=True)
  validation.check_positive(octave_scale, 'octave_scale')
  if octave_scale <= 1 and octaves > 1:
    raise InputError(f'octave_scale must be more than 1, got {octave_scale:g}')
  n, h, w, _ = images.shape
  sizes = octave_sizes(h, w, int(octaves), float(octave_scale))
  smallest = min(sizes[0])
  if max_jitter >= smallest:
    raise InputError(f'max_jitter {max_jitter} must be smaller than the smallest octave '
                     f'({sizes[0][0]}x{sizes[0][1]}): use fewer octaves or less jitter')
  try:
    lh, lw, _ = layer_shape(model, params, layer, (*sizes[0], 3))
  except (TypeError, ValueError) as e:  # a pooling with nothing left to pool
    raise InputError(f'the smallest octave ({sizes[0][0]}x{sizes[0][1]}) is too small '
                     f'for layer {layer!r}: use fewer octaves or larger images') from e
  if lh * lw == 0:
    raise InputError(f'layer {layer!r} has an empty map at the smallest octave '
                     f'({sizes[0][0]}x{sizes[0][1]}): use fewer octaves or larger images')
  dtype = _float_dtype(params)
  low, high = model.valid_range()
  return _batched(
      model, params, image=jnp.asarray(images, dtype),
      key=validation.split_keys(jax.random.key(0) if key is None else key, n, 'key'),
      learning_rate=jnp.broadcast_to(jnp.asarray(learning_rate, dtype), (n,)),
      low=jnp.asarray(low, dtype), high=jnp.asarray(high, dtype), chunk_size=chunk_size,
      devices=devices, cpu_kernels=cpu_kernels, progress=progress,
      num_steps=int(octaves) * int(steps_per_octave),
      options=dict(layer=layer, sizes=sizes, steps_per_octave=int(steps_per_octave),
                   max_jitter=int(max_jitter), clamp=bool(clamp)))
