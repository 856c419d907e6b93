"""Fooling images (Szegedy et al. 2014), the course's normalised gradient steps."""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxviz import parallel, validation
from jaxviz.methods import _ascent
from jaxviz.methods._batched import BatchedMethod
from jaxviz.methods.objectives import check_objective


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


def _objective(apply_fn, objective: str):
  """The objective the step ascends: the target's score, or its log-probability (that is,
  a descent on the cross-entropy to the target), with the logits as auxiliary output."""

  def value(params, x, target):
    logits = apply_fn(params, x[None])[0]
    if objective == 'score':
      return logits[target], logits
    return jax.nn.log_softmax(logits)[target], logits

  return value


def _check(learning_rate, max_iterations, objective):
  validation.check_positive(learning_rate, 'learning_rate')
  validation.check_positive(max_iterations, 'max_iterations', integer=True, zero=True)
  return check_objective(objective)


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
    (final image, iterations, stalled): (H, W, 3), int32, bool. `stalled`: the gradient
    was exactly zero, so no step was possible; the image is left as it was then.

  References:
    Szegedy et al., Intriguing properties of neural networks, ICLR 2014.
  """
  objective = _check(learning_rate, max_iterations, objective)
  validation.check_image(image)
  validation.check_class(target, apply_fn, params, image.shape, 'target')
  result = _ascent.ascend(
      _objective(apply_fn, objective), params, image, (target,),
      optimizer=_ascent.normalized_sgd(learning_rate), num_steps=max_iterations,
      stop=lambda value, logits: jnp.argmax(logits) == target)
  return result.x, result.steps, result.stalled


def _fooling_one(apply_fn, params, image, target, learning_rate, max_iterations, *,
                 objective):
  fooled, iterations, stalled = fooling_image(apply_fn, params, image, target,
                                              learning_rate, max_iterations, objective)
  predicted = jnp.argmax(apply_fn(params, fooled[None])[0])
  delta, flat = (fooled - image).ravel(), image.ravel()
  l2, linf = jnp.linalg.norm(delta), jnp.abs(delta).max()
  return FoolingResult(fooled, iterations, predicted == target, stalled, predicted, l2, linf,
                       l2 / jnp.linalg.norm(flat), linf / jnp.abs(flat).max())


_batched = BatchedMethod(_fooling_one, batched=('image', 'target'),
                         replicated=('learning_rate', 'max_iterations'), iterative=True)


def fooling_images(apply_fn, params, images, targets, learning_rate=1.0,
                   max_iterations=100, objective: str = 'score', *,
                   chunk_size: int | None = None, devices: parallel.Devices = None,
                   cpu_kernels: str | None = None) -> FoolingResult:
  """`fooling_image` over a batch; each image stops on its own.

  Images run in chunks of `chunk_size`, each chunk a vmapped while_loop in which an image
  that is done is masked (it keeps its state while the others step). With one image per
  chunk, the default on CPU, each image has its own loop: no masked steps, and its result
  is bit for bit what it would be alone.

  Args:
    apply_fn, params: the model, as from `jaxviz.load_model`.
    images: (N, H, W, 3) normalised images.
    targets: (N,) classes to reach (or one for all).
    learning_rate: step length in the normalised space (course: 1), > 0.
    max_iterations: cap on steps per image (course: 100), >= 0.
    objective: 'score' (the course) or 'cross_entropy' (the reports' variant).
    chunk_size: images per while_loop on each device. None: 1 on CPU (measured about
      as fast as one batched loop at 112-224 px; small images in large batches run
      faster with the whole batch), the whole batch on GPU/TPU.
    devices: split the batch over these devices: None for every local device, a list of
      devices, or a Mesh with a 'data' axis. See `jaxviz.parallel`.
    cpu_kernels: XLA:CPU's convolution kernels: None or 'xla' (XLA's default), or
      'eigen'; `model.cpu_kernels` is the one measured fastest for a loaded model.

  Returns:
    A `FoolingResult`.
  """
  images = validation.check_batch(images)
  targets = validation.check_classes(
      targets, images.shape[0], validation.num_classes(apply_fn, params, images.shape[1:]),
      'targets')
  objective = _check(learning_rate, max_iterations, objective)
  return _batched(apply_fn, params, image=images, target=targets,
                  learning_rate=jnp.asarray(learning_rate, images.dtype),
                  max_iterations=jnp.asarray(max_iterations, jnp.int32),
                  chunk_size=chunk_size, devices=devices, cpu_kernels=cpu_kernels,
                  options={'objective': objective})
