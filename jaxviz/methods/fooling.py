"""Fooling images (Szegedy et al. 2014), the course's normalised gradient steps."""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxviz import kernels, parallel
from jaxviz.methods import _checks
from jaxviz.methods._canonical import canonical_convs_ahead
from jaxviz.methods.objectives import objective_grad


class FoolingResult(NamedTuple):
  """Per image: the fooled image and how it got there.

  Attributes:
    images: (N, H, W, 3) final images, in the normalised space of the inputs.
    iterations: (N,) steps taken until argmax == target (0 if it already was); the cap if
      it never was.
    fooled: (N,) whether the final image is classified as the target.
    stalled: (N,) the gradient was exactly zero, so no step was possible (SqueezeNet: a
      target whose class map is negative everywhere scores 0 after the final ReLU). The
      image is left as it was then; never a NaN.
    predicted: (N,) argmax class of the final image.
    l2, linf: (N,) norms of the perturbation (final - original), normalised space.
    relative_l2, relative_linf: the same divided by the original image's norm.
  """
  images: jax.Array
  iterations: jax.Array
  fooled: jax.Array
  stalled: jax.Array
  predicted: jax.Array
  l2: jax.Array
  linf: jax.Array
  relative_l2: jax.Array
  relative_linf: jax.Array


def fooling_image(apply_fn, params, image, target, learning_rate=1.0, max_iterations=100,
                  objective: str = 'score'):
  """Moves one image until the model classifies it as `target`.

  Each step is x <- x + lr * g / ||g||_2 with g the gradient of the target's score
  ('score', ascent) or x <- x - lr * g / ||g||_2 with g that of the cross-entropy to the
  target ('cross_entropy', descent), until argmax f(x) == target or `max_iterations`
  steps. The test comes before each step, as in the course's loop, so the iteration
  count is the number of steps taken. learning_rate and max_iterations may be traced
  (vmap over them).

  Returns:
    (final image, iterations, stalled): (H, W, 3), int32, bool.

  References:
    Szegedy et al., Intriguing properties of neural networks, ICLR 2014.
  """
  sign = 1.0 if objective == 'score' else -1.0
  # Inside a loop body XLA:CPU leaves the backward convolutions on a slow path: see
  # `_canonical`. The kernels are laid out for the fast path once, before the loop.
  gradient = canonical_convs_ahead(
      lambda params, x, target: objective_grad(apply_fn, params, x, target, objective),
      params, image, target)

  def cond(state):
    _, i, done, stalled = state
    return ~done & ~stalled & (i < max_iterations)

  def body(state):
    x, i, _, _ = state
    grad, logits = gradient(x, target)
    done = jnp.argmax(logits) == target
    norm = jnp.linalg.norm(grad)
    stalled = ~done & (norm == 0)
    step = sign * learning_rate * grad / jnp.where(norm > 0, norm, 1.0)
    move = ~done & ~stalled
    # The step takes the image's dtype: a float64 learning rate vmapped over float32
    # images must not change the loop carry's type.
    return (jnp.where(move, x + step.astype(x.dtype), x), i + move.astype(jnp.int32),
            done, stalled)

  x, iterations, _, stalled = jax.lax.while_loop(
      cond, body, (image, jnp.int32(0), jnp.bool_(False), jnp.bool_(False)))
  return x, iterations, stalled


def _fooling_images(apply_fn, params, images, targets, learning_rate, max_iterations,
                    objective, chunk_size=None, mesh=None):

  def local(params, images, targets, learning_rate, max_iterations):  # one device's slice

    def chunk(xs):  # a vmapped while_loop over at most chunk_size images
      images, targets = xs
      fooled_images, iterations, stalled = jax.vmap(
          fooling_image, in_axes=(None, None, 0, 0, None, None, None))(
              apply_fn, params, images, targets, learning_rate, max_iterations, objective)
      predicted = jnp.argmax(apply_fn(params, fooled_images), axis=-1)
      delta = (fooled_images - images).reshape(images.shape[0], -1)
      flat = images.reshape(images.shape[0], -1)
      l2, linf = jnp.linalg.norm(delta, axis=-1), jnp.abs(delta).max(axis=-1)
      return FoolingResult(
          fooled_images, iterations, predicted == targets, stalled, predicted, l2, linf,
          l2 / jnp.linalg.norm(flat, axis=-1), linf / jnp.abs(flat).max(axis=-1))

    return parallel.map_chunks(chunk, (images, targets), chunk_size)

  return parallel.data_parallel(local, mesh, (False, True, True, False, False))(
      params, images, targets, learning_rate, max_iterations)


_compiled_fooling_images = kernels.jit(
    _fooling_images, static_argnames=('apply_fn', 'objective', 'chunk_size', 'mesh'))


def fooling_images(apply_fn, params, images, targets, learning_rate=1.0,
                   max_iterations=100, objective: str = 'score', *,
                   chunk_size: int | None = None, devices: parallel.Devices = None,
                   cpu_kernels: str = 'auto') -> FoolingResult:
  """`fooling_image` over a batch; each image stops on its own.

  Images run in chunks of `chunk_size`, each chunk a vmapped while_loop in which an image
  that is done is masked (it keeps its state while the others step). With one image per
  chunk, the default on CPU, each image has its own loop: no masked steps, and its result
  is bit for bit what it would be alone.

  Args:
    apply_fn, params: the model, as from `jaxviz.load_model`.
    images: (N, H, W, 3) normalised images.
    targets: (N,) classes to reach (or one for all).
    learning_rate: step length in the normalised space (course: 1).
    max_iterations: cap on steps per image (course: 100).
    objective: 'score' (the course) or 'cross_entropy' (the reports' variant).
    chunk_size: images per while_loop on each device. None: 1 on CPU (measured about
      as fast as one batched loop at 112-224 px; small images in large batches run
      faster with the whole batch), the whole batch on GPU/TPU. See
      `jaxviz.parallel.loop_chunk_size`.
    devices: split the batch over these devices: None for every local device, a list of
      devices, or a Mesh with a 'data' axis. See `jaxviz.parallel`.
    cpu_kernels: XLA:CPU's convolution kernels: 'auto' (those measured fastest for the
      model), 'xla' or 'eigen'. See `jaxviz.kernels`.

  Returns:
    A `FoolingResult`.
  """
  images = _checks.check_batch(images)
  targets = _checks.check_classes(
      targets, images.shape[0], _checks.num_classes(apply_fn, params, images.shape[1:]),
      'targets')
  objective = _checks.check_objective(objective)
  mesh = parallel.resolve_mesh(devices)
  chunk_size = _checks.check_chunk_size(chunk_size)
  if chunk_size is None:
    chunk_size = parallel.loop_chunk_size(mesh)
  learning_rate = jnp.asarray(learning_rate, images.dtype)
  max_iterations = jnp.asarray(max_iterations, jnp.int32)
  run = _compiled_fooling_images(kernels.resolve(cpu_kernels, apply_fn, images.dtype))
  if mesh is None:
    return run(apply_fn, params, images, targets, learning_rate, max_iterations, objective,
               chunk_size)
  (images, targets), n = parallel.shard_batch((images, targets), mesh)
  return parallel.unpad(run(
      apply_fn, parallel.replicate(params, mesh), images, targets, learning_rate,
      max_iterations, objective, chunk_size, mesh), n)
