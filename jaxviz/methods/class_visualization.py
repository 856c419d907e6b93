"""Class visualisation (Simonyan et al. 2014; Yosinski et al. 2015), as in the course."""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxviz import kernels, parallel
from jaxviz.errors import InputError
from jaxviz.methods import _checks
from jaxviz.methods._canonical import canonical_convs_ahead
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


def gaussian_blur(image, sigma: float, truncate: float = 4.0):
  """scipy.ndimage.gaussian_filter1d along H, then along W (mode 'reflect').

  The course's `blur_image`. Same kernel (radius int(truncate * sigma + 0.5)) and the same
  half-sample-symmetric boundary (scipy's 'reflect' is numpy's 'symmetric').

  Args:
    image: (H, W, C).
  """
  radius = int(truncate * float(sigma) + 0.5)
  taps = np.arange(-radius, radius + 1)
  kernel = np.exp(-0.5 / (float(sigma) ** 2) * taps ** 2)
  kernel = kernel / kernel.sum()
  for axis in (0, 1):
    size = image.shape[axis]
    pad = [(0, 0)] * image.ndim
    pad[axis] = (radius, radius)
    padded = jnp.pad(image, pad, mode='symmetric')
    image = sum(jnp.asarray(w, image.dtype) * jax.lax.slice_in_dim(padded, j, j + size, axis=axis)
                for j, w in enumerate(kernel))
  return image


def _roll(image, oy, ox):
  """jnp.roll(image, (oy, ox), axis=(0, 1)) for traced shifts, as one slice of a 2x2 tiling.

  jnp.roll slices and concatenates once per axis, and under vmap (batched shifts) each
  becomes a gather: 3-5x slower on XLA:CPU than this single dynamic slice (measured on a
  224x224 image, alone and in batches of 5). Bit for bit the same (only data moves).
  """
  h, w = image.shape[:2]
  tiled = jnp.tile(image, (2, 2, 1))
  return jax.lax.dynamic_slice(tiled, (jnp.mod(-oy, h), jnp.mod(-ox, w), 0), image.shape)


def _norm(x):
  """||x||_2 with gradient 0 (not NaN) at x = 0."""
  sq = jnp.sum(x * x)
  positive = sq > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def class_visualization_one(apply_fn, params, target, key, init, learning_rate, l2_reg,
                            low, high, *, num_iterations: int, blur_every: int,
                            blur_sigma: float, max_jitter: int, clamp: bool,
                            optimizer: optax.GradientTransformation | None,
                            snapshot_every: int, progress: Callable | None = None):
  """Ascends f_target(x) - l2_reg * ||x||_2 for one image (see `class_visualization`).

  Returns:
    (final image, (probability, objective) traces, each (T,), snapshots (S, H, W, 3) or
    None).
  """
  on_step = None if progress is None else (lambda t: jax.debug.callback(progress, t))
  return _ascend(apply_fn, params, target, key, init, learning_rate, l2_reg, low, high,
                 num_iterations=num_iterations, blur_every=blur_every,
                 blur_sigma=blur_sigma, max_jitter=max_jitter, clamp=clamp,
                 optimizer=optimizer, snapshot_every=snapshot_every, on_step=on_step)


def _ascend(apply_fn, params, target, key, init, learning_rate, l2_reg, low, high, *,
            num_iterations: int, blur_every: int, blur_sigma: float, max_jitter: int,
            clamp: bool, optimizer: optax.GradientTransformation | None,
            snapshot_every: int, on_step: Callable | None):
  """`class_visualization_one`, with `on_step(t)` traced into every step (progress)."""
  opt = optimizer if optimizer is not None else optax.sgd(learning_rate)
  jitter_key = key

  def objective(x, params, target, l2_reg):
    logits = apply_fn(params, x[None])[0]
    return logits[target] - l2_reg * _norm(x), logits

  # Inside the scan XLA:CPU leaves the backward convolutions on a slow path: see
  # `_canonical`. The kernels are laid out for the fast path once, before the scan.
  gradient = canonical_convs_ahead(
      lambda params, x, target, l2_reg: jax.value_and_grad(objective, has_aux=True)(
          x, params, target, l2_reg),
      params, init, target, l2_reg)

  def step(carry, t):
    x, opt_state = carry
    if max_jitter > 0:
      ox, oy = jax.random.randint(jax.random.fold_in(jitter_key, t), (2,), 0, max_jitter + 1)
      shifted = _roll(x, oy, ox)
    else:
      shifted = x
    (value, logits), grad = gradient(shifted, target, l2_reg)
    if max_jitter > 0:
      # Rolling the gradient back equals the course's roll / step / roll back bit for bit
      # (a roll is a permutation), and keeps an optimizer's state aligned with the image.
      grad = _roll(grad, -oy, -ox)
    updates, opt_state = opt.update(-grad, opt_state, x)  # optax minimises: ascend on -(-g)
    x = optax.apply_updates(x, updates)
    if clamp:
      x = jnp.clip(x, low, high)
    if blur_every > 0:
      x = jax.lax.cond(t % blur_every == 0,
                       lambda x: gaussian_blur(x, blur_sigma), lambda x: x, x)
    if on_step is not None:
      on_step(t)
    return (x, opt_state), (jax.nn.softmax(logits)[target], value)

  every = snapshot_every or num_iterations
  chunks, rest = divmod(num_iterations, every)
  steps = jnp.arange(num_iterations)

  def chunk(carry, ts):
    carry, probs = jax.lax.scan(step, carry, ts)
    return carry, (probs, carry[0])

  carry = (init, opt.init(init))
  carry, (traces, snaps) = jax.lax.scan(chunk, carry,
                                        steps[:chunks * every].reshape(chunks, every))
  traces = jax.tree.map(lambda a: a.reshape(-1), traces)
  if rest:
    carry, more = jax.lax.scan(step, carry, steps[chunks * every:])
    traces = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), traces, more)
  return carry[0], traces, (snaps if snapshot_every else None)


_STATIC = ('apply_fn', 'image_shape', 'num_iterations', 'blur_every', 'blur_sigma',
           'max_jitter', 'clamp', 'optimizer', 'snapshot_every', 'progress', 'random_init',
           'chunk_size', 'mesh')


def _class_visualization(apply_fn, params, targets, keys, init, learning_rate, l2_reg, low,
                         high, *, image_shape, random_init, num_iterations, progress,
                         chunk_size=None, mesh=None, **static):

  def local(params, targets, keys, init, learning_rate, l2_reg, low, high):
    size = targets.shape[0]  # this device's slice of the batch

    def chunk(xs):  # a vmapped scan over at most chunk_size images
      targets, keys, init, learning_rate, l2_reg, position = xs
      on_step = None
      if progress is not None:
        # The step index of this device's whole run that step t of this chunk completes,
        # so that a bar over num_iterations fills once, at the very end, however the
        # images are chunked (with one chunk it is t itself).
        first, count = position[0], jnp.minimum(targets.shape[0], size - position[0])
        on_step = lambda t: jax.debug.callback(progress, jnp.maximum(
            (first * num_iterations + count * (t + 1)) // size - 1, 0))

      def one(target, key, init, learning_rate, l2_reg):
        init_key, steps_key = jax.random.split(key)
        if random_init:
          init = jax.random.normal(init_key, image_shape, low.dtype)
        return _ascend(apply_fn, params, target, steps_key, init, learning_rate, l2_reg,
                       low, high, num_iterations=num_iterations, on_step=on_step, **static)

      images, (prob_trace, objective_trace), snaps = jax.vmap(
          one, in_axes=(0, 0, None if random_init else 0, 0, 0))(
              targets, keys, init, learning_rate, l2_reg)
      probs = jax.nn.softmax(apply_fn(params, images), axis=-1)
      target_p = jnp.take_along_axis(probs, targets[:, None], axis=1)[:, 0]
      return ClassVisualization(images, target_p, jnp.argmax(probs, -1), prob_trace,
                                objective_trace, snaps)

    return parallel.map_chunks(
        chunk, (targets, keys, init, learning_rate, l2_reg, jnp.arange(size)), chunk_size)

  return parallel.data_parallel(
      local, mesh, (False, True, True, True, True, True, False, False))(
          params, targets, keys, init, learning_rate, l2_reg, low, high)


_compiled_class_visualization = kernels.jit(_class_visualization, static_argnames=_STATIC)


def class_visualization(apply_fn, params, targets, key, *, init=None,
                        image_shape=(224, 224, 3), num_iterations: int = 200,
                        learning_rate=5.0, l2_reg=1e-3, blur_every: int = 10,
                        blur_sigma: float = 0.5, max_jitter: int = 16, clamp=True,
                        optimizer: optax.GradientTransformation | None = None,
                        snapshot_every: int = 0, progress: Callable | None = None,
                        dtype=jnp.float32, chunk_size: int | None = None,
                        devices: parallel.Devices = None,
                        cpu_kernels: str = 'auto') -> ClassVisualization:
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
    dtype: float32, or float64 with jax_enable_x64.
    chunk_size: images per scan on each device. None: 1 on CPU (about as fast as one
      batched scan at 112-224 px, and each image's result is then independent of the
      batch), the whole batch on GPU/TPU. See `jaxviz.parallel.loop_chunk_size`.
    devices: split the images over these devices: None for every local device, a list
      of devices, or a Mesh with a 'data' axis. See `jaxviz.parallel`.
    cpu_kernels: XLA:CPU's convolution kernels: 'auto' (those measured fastest for the
      model), 'xla' or 'eigen'. See `jaxviz.kernels`.

  Returns:
    A `ClassVisualization`.

  References:
    Simonyan, Vedaldi & Zisserman, Deep Inside Convolutional Networks, ICLR-W 2014.
    Yosinski et al., Understanding Neural Networks Through Deep Visualization, 2015.
  """
  targets_arr = np.asarray(targets) if not isinstance(targets, jax.core.Tracer) else targets
  n = targets_arr.shape[0] if targets_arr.ndim else 1
  if init is not None:
    init = jnp.asarray(init, dtype)
    init = _checks.check_batch(init[None] if init.ndim == 3 else init)
    if init.shape[0] == 1 and n > 1:
      init = jnp.broadcast_to(init, (n, *init.shape[1:]))
    if init.shape[0] != n:
      raise InputError(f'init has {init.shape[0]} images for {n} targets')
    image_shape = tuple(init.shape[1:])
  if len(image_shape) != 3 or image_shape[-1] != 3:
    raise InputError(f'image_shape must be (H, W, 3), got {image_shape}')
  targets = _checks.check_classes(targets, n, _checks.num_classes(apply_fn, params, image_shape),
                                  'targets')
  for name, value in (('num_iterations', num_iterations), ('blur_every', blur_every),
                      ('max_jitter', max_jitter), ('snapshot_every', snapshot_every)):
    if int(value) != value or value < 0:
      raise InputError(f'{name} must be a non-negative integer, got {value}')
  if num_iterations < 1:
    raise InputError('num_iterations must be at least 1')
  if blur_every and blur_sigma <= 0:
    raise InputError(f'blur_sigma must be positive, got {blur_sigma}')
  if clamp is True:
    low, high = valid_range()
  elif clamp is False or clamp is None:
    low, high = np.full(3, -np.inf), np.full(3, np.inf)
  else:
    low, high = clamp
  key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
  typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
  if key.ndim == (0 if typed else 1):
    keys = jax.random.split(key, n)
  elif key.shape[0] == n:
    keys = key
  else:
    raise InputError(f'key must be one PRNG key or one per target ({n}), got shape {key.shape}')
  mesh = parallel.resolve_mesh(devices)
  chunk_size = _checks.check_chunk_size(chunk_size)
  if chunk_size is None:
    chunk_size = parallel.loop_chunk_size(mesh)
  run = _compiled_class_visualization(kernels.resolve(cpu_kernels, apply_fn, dtype))
  per_image = lambda v: jnp.broadcast_to(jnp.asarray(v, dtype), (n,))
  batch = (targets, keys, init, per_image(learning_rate), per_image(l2_reg))
  if mesh is not None:
    batch, n = parallel.shard_batch(batch, mesh)
    params = parallel.replicate(params, mesh)
  result = run(
      apply_fn, params, *batch, jnp.asarray(low, dtype), jnp.asarray(high, dtype),
      image_shape=tuple(image_shape), random_init=init is None,
      num_iterations=int(num_iterations), blur_every=int(blur_every),
      blur_sigma=float(blur_sigma), max_jitter=int(max_jitter),
      clamp=clamp is not False and clamp is not None, optimizer=optimizer,
      snapshot_every=int(snapshot_every), progress=progress, chunk_size=chunk_size,
      mesh=mesh)
  return result if mesh is None else parallel.unpad(result, n)
