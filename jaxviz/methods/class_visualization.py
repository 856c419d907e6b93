"""Class visualisation (Simonyan et al. 2014; Yosinski et al. 2015), as in the course."""

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
from jaxviz.preprocess import valid_range


class ClassVisualization(NamedTuple):
  """Attributes:
    images: (N, H, W, 3) final images (normalised space).
    target_probability: (N,) softmax probability of the target for the final image.
    predicted: (N,) argmax class of the final image.
    probability_trace: (N, T) target probability at each step (of the jittered image the
      gradient was taken at).
    objective_trace: (N, T) the ascended objective f_target(x) - l2_reg * ||x||_2 there.
    snapshots: (N, T // snapshot_every, H, W, 3) images after every snapshot_every steps,
      or None.
  """
  images: jax.Array
  target_probability: jax.Array
  predicted: jax.Array
  probability_trace: jax.Array
  objective_trace: jax.Array
  snapshots: jax.Array | None


def _norm(x):
  """||x||_2 with gradient 0 (not NaN) at x = 0."""
  sq = jnp.sum(x * x)
  positive = sq > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def _check_options(image_shape, num_iterations, blur_every, blur_sigma, max_jitter,
                   snapshot_every, learning_rate, l2_reg):
  """One-line InputErrors for the loop's hyperparameters (traced values pass)."""
  validation.check_positive(num_iterations, 'num_iterations', integer=True)
  for name, value in (('blur_every', blur_every), ('max_jitter', max_jitter),
                      ('snapshot_every', snapshot_every)):
    validation.check_positive(value, name, integer=True, zero=True)
  if blur_every:
    validation.check_positive(blur_sigma, 'blur_sigma')
  if snapshot_every > num_iterations:
    raise InputError(f'snapshot_every {snapshot_every} is more than num_iterations '
                     f'{num_iterations}: no snapshot would be taken')
  if max_jitter >= min(image_shape[:2]):
    raise InputError(f'max_jitter {max_jitter} must be smaller than the image '
                     f'({image_shape[0]}x{image_shape[1]})')
  validation.check_positive(learning_rate, 'learning_rate')
  validation.check_positive(l2_reg, 'l2_reg', zero=True)


def class_visualization_one(apply_fn, params, target, key, init, learning_rate, l2_reg,
                            low, high, *, num_iterations: int, blur_every: int,
                            blur_sigma: float, max_jitter: int, clamp: bool,
                            optimizer: optax.GradientTransformation | None,
                            snapshot_every: int, on_step: Callable | None = None):
  """Ascends f_target(x) - l2_reg * ||x||_2 for one image from `init` (see
  `class_visualization`); `key` drives the jitter, `on_step(t)` is traced into each step.

  Returns:
    (final image, (probability, objective) traces, each (T,), snapshots (S, H, W, 3) or
    None).
  """
  validation.check_image(init, 'init')
  _check_options(init.shape, num_iterations, blur_every, blur_sigma, max_jitter,
                 snapshot_every, learning_rate, l2_reg)
  validation.check_class(target, apply_fn, params, init.shape, 'target')

  def objective(params, x, target, l2_reg):
    logits = apply_fn(params, x[None])[0]
    return logits[target] - l2_reg * _norm(x), logits

  transforms = [_ascent.Jitter(max_jitter, key)] if max_jitter > 0 else []
  if clamp:
    transforms.append(_ascent.Clamp(low, high))
  if blur_every > 0:
    transforms.append(_ascent.BlurEvery(blur_every, blur_sigma))
  result = _ascent.ascend(
      objective, params, init, (target, l2_reg),
      optimizer=optimizer if optimizer is not None else optax.sgd(learning_rate),
      num_steps=num_iterations, transforms=transforms,
      record=lambda value, logits: (jax.nn.softmax(logits)[target], value),
      snapshot_every=snapshot_every, on_step=on_step)
  return result.x, result.records, result.snapshots


def _class_visualization_one(apply_fn, params, target, key, init, learning_rate, l2_reg,
                             low, high, *, image_shape, random_init, on_step=None, **options):
  init_key, steps_key = jax.random.split(key)
  if random_init:
    init = jax.random.normal(init_key, image_shape, low.dtype)
  image, (prob_trace, objective_trace), snapshots = class_visualization_one(
      apply_fn, params, target, steps_key, init, learning_rate, l2_reg, low, high,
      on_step=on_step, **options)
  probs = jax.nn.softmax(apply_fn(params, image[None])[0])
  return ClassVisualization(image, probs[target], jnp.argmax(probs), prob_trace,
                            objective_trace, snapshots)


_batched = BatchedMethod(
    _class_visualization_one, batched=('target', 'key', 'init', 'learning_rate', 'l2_reg'),
    replicated=('low', 'high'), iterative=True)


def _float_dtype(tree):
  """The dtype of the first floating leaf of `tree` (float32 if none)."""
  for leaf in jax.tree.leaves(tree):
    if jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.floating):
      return jnp.asarray(leaf).dtype
  return jnp.dtype(jnp.float32)


def class_visualization(apply_fn, params, targets, key, *, init=None,
                        image_shape=(224, 224, 3), num_iterations: int = 200,
                        learning_rate=5.0, l2_reg=1e-3, blur_every: int = 10,
                        blur_sigma: float = 0.5, max_jitter: int = 16, clamp=True,
                        optimizer: optax.GradientTransformation | None = None,
                        snapshot_every: int = 0, progress: Callable | None = None,
                        dtype=None, chunk_size: int | None = None,
                        devices: parallel.Devices = None,
                        cpu_kernels: str | None = None) -> ClassVisualization:
  """Images that the model scores highly as each target class.

  Each step (the course's algorithm, eq. 3-4): roll the image by random (ox, oy) in
  [0, max_jitter]; take the gradient of f_target(x) - l2_reg * ||x||_2; step along it
  (plain SGD, x <- x + lr * g, unless `optimizer` is given); roll back; clamp each channel
  to the valid normalised range; and when t % blur_every == 0, blur with sigma blur_sigma
  exactly like scipy's gaussian_filter1d along H then W.

  Args:
    apply_fn, params: the model.
    targets: (N,) class indices, one image per target.
    key: a PRNG key (split per image), or one key per image (N keys): drives the noise
      init and the jitter, so the same key gives the same image bit for bit.
    init: (N, H, W, 3) or (H, W, 3) normalised images to start from instead of N(0, 1)
      noise (the course's init_img).
    image_shape: (H, W, 3) of the noise init.
    num_iterations, learning_rate, l2_reg, blur_every, blur_sigma, max_jitter: as the
      course (defaults 200, 5, 1e-3, 10, 0.5, 16). blur_every=0 or max_jitter=0 turn those
      regularisers off. learning_rate and l2_reg may be (N,) arrays: one per image.
    clamp: True clamps to the ImageNet-normalised pixel box, False does not, a
      (low, high) pair of per-channel arrays gives another box (model.valid_range()).
    optimizer: any optax transformation (e.g. optax.adam(0.05)) in place of SGD; it
      then sets the step size and `learning_rate` is unused. Create it once: a new
      optimizer object compiles anew.
    snapshot_every: also return the image after every this many steps (0: none).
    progress: called on the host with a step index in [0, num_iterations) as the run
      advances, for progress bars: the step t itself when the images run in one chunk;
      with several chunks, the index whose share of the whole run is done (it reaches
      num_iterations - 1 once, at the end). It may come once per image and out of order
      (jax.debug.callback): follow its maximum.
    dtype: the images' dtype; None follows the inputs: init's dtype when given, else
      the params' (float64 with jax_enable_x64 and float64 params).
    chunk_size: images per scan on each device. None: 1 on CPU (about as fast as one
      batched scan at 112-224 px, and each image's result is then independent of the
      batch), the whole batch on GPU/TPU.
    devices: split the images over these devices: None for every local device, a list
      of devices, or a Mesh with a 'data' axis. See `jaxviz.parallel`.
    cpu_kernels: XLA:CPU's convolution kernels: None or 'xla' (XLA's default), or
      'eigen'; `model.cpu_kernels` is the one measured fastest for a loaded model.

  Returns:
    A `ClassVisualization`.

  References:
    Simonyan, Vedaldi & Zisserman, Deep Inside Convolutional Networks, ICLR-W 2014.
    Yosinski et al., Understanding Neural Networks Through Deep Visualization, ICML
      Deep Learning Workshop 2015, sec. 3.
  """
  targets_arr = np.asarray(targets) if not isinstance(targets, jax.core.Tracer) else targets
  n = targets_arr.shape[0] if targets_arr.ndim else 1
  if dtype is None:
    dtype = _float_dtype(init if init is not None else params)
  if init is not None:
    init = jnp.asarray(init, dtype)
    init = validation.check_batch(init[None] if init.ndim == 3 else init)
    if init.shape[0] == 1 and n > 1:
      init = jnp.broadcast_to(init, (n, *init.shape[1:]))
    if init.shape[0] != n:
      raise InputError(f'init has {init.shape[0]} images for {n} targets')
    image_shape = tuple(init.shape[1:])
  if len(image_shape) != 3 or image_shape[-1] != 3 or min(image_shape) < 1:
    raise InputError(f'image_shape must be (H, W, 3), got {image_shape}')
  targets = validation.check_classes(
      targets, n, validation.num_classes(apply_fn, params, image_shape), 'targets')
  _check_options(image_shape, num_iterations, blur_every, blur_sigma, max_jitter,
                 snapshot_every, learning_rate, l2_reg)
  if clamp is True:
    low, high = valid_range()
  elif clamp is False or clamp is None:
    low, high = np.full(3, -np.inf), np.full(3, np.inf)
  else:
    low, high = clamp
    if np.shape(low) not in ((), (3,)) or np.shape(high) not in ((), (3,)):
      raise InputError('clamp must be True, False or a (low, high) pair of per-channel '
                       f'bounds, got shapes {np.shape(low)} and {np.shape(high)}')
    if np.isnan(low).any() or np.isnan(high).any() or np.any(np.asarray(low) > high):
      raise InputError(f'clamp bounds must be numbers with low <= high, got {low}, {high}')
  per_image = lambda v: jnp.broadcast_to(jnp.asarray(v, dtype), (n,))
  return _batched(
      apply_fn, params, target=targets, key=validation.split_keys(key, n, 'key'), init=init,
      learning_rate=per_image(learning_rate), l2_reg=per_image(l2_reg),
      low=jnp.asarray(low, dtype), high=jnp.asarray(high, dtype),
      chunk_size=chunk_size, devices=devices, cpu_kernels=cpu_kernels, progress=progress,
      num_steps=int(num_iterations),
      options=dict(image_shape=tuple(image_shape), random_init=init is None,
                   num_iterations=int(num_iterations), blur_every=int(blur_every),
                   blur_sigma=float(blur_sigma), max_jitter=int(max_jitter),
                   clamp=clamp is not False and clamp is not None, optimizer=optimizer,
                   snapshot_every=int(snapshot_every)))
