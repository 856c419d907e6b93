"""Fooling images (Szegedy et al. 2014), the course's normalised gradient steps."""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxviz.methods import _checks
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

  def cond(state):
    _, i, done, stalled = state
    return ~done & ~stalled & (i < max_iterations)

  def body(state):
    x, i, _, _ = state
    grad, logits = objective_grad(apply_fn, params, x, target, objective)
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


@functools.partial(jax.jit, static_argnames=('apply_fn', 'objective'))
def _fooling_images(apply_fn, params, images, targets, learning_rate, max_iterations,
                    objective):
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


def fooling_images(apply_fn, params, images, targets, learning_rate=1.0,
                   max_iterations=100, objective: str = 'score') -> FoolingResult:
  """`fooling_image` over a batch; each image stops on its own (a masked while_loop).

  Args:
    apply_fn, params: the model, as from `jaxviz.load_model`.
    images: (N, H, W, 3) normalised images.
    targets: (N,) classes to reach (or one for all).
    learning_rate: step length in the normalised space (course: 1).
    max_iterations: cap on steps per image (course: 100).
    objective: 'score' (the course) or 'cross_entropy' (the reports' variant).

  Returns:
    A `FoolingResult`.
  """
  images = _checks.check_batch(images)
  targets = _checks.check_classes(
      targets, images.shape[0], _checks.num_classes(apply_fn, params, images.shape[1:]),
      'targets')
  return _fooling_images(apply_fn, params, images, targets,
                         jnp.asarray(learning_rate, images.dtype),
                         jnp.asarray(max_iterations, jnp.int32),
                         _checks.check_objective(objective))
