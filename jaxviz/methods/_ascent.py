"""The input-optimisation driver: gradient ascent on an image, for one example.

Fooling images, class visualisation (and attacks, neuron maximisation, DeepDream) are the
same loop with different parts: an objective of the image to maximise, an optax
transformation that turns its gradient into a step, transforms applied around each step
(jitter and roll back, blur every k steps, clamp to the pixel box, projection onto an
epsilon-ball), and either a fixed step count (a `scan`, with per-step records and
snapshots) or a per-example stop condition (a `while_loop`; under `vmap` an example that
has stopped is masked while the others step).

One step, from image x at step t:

  1. each transform's `shift(x, t)` (jitter rolls the image), in order;
  2. (value, aux), g = value_and_grad(objective)(params, shifted, *args);
  3. with `stop`: if stop(value, aux), x is final (tested before stepping, so the step
     count is the number of steps taken); if g is exactly zero, no step is possible
     (`stalled`), and x is final too, never a NaN;
  4. each transform's `unshift(g)`, in reverse order (jitter rolls the gradient back);
  5. updates, state = optimizer.update(-g, state, x); x = x + updates (optax minimises,
     so it is given the negated gradient of the objective we maximise);
  6. each transform's `after(x, t, x0)`, in order (clamp, blur, projection).
"""

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxviz import _xla_cpu
from jaxviz.ops import gaussian_blur


class Transform:
  """A transform applied around each step; every hook defaults to the identity."""

  def shift(self, x, t):
    """The image the gradient is taken at, and what `unshift` needs to undo it."""
    return x, None

  def unshift(self, grad, state):
    """The gradient mapped back to the unshifted image."""
    return grad

  def after(self, x, t, origin):
    """The image after the step (origin: the starting image)."""
    return x


class Jitter(Transform):
  """Roll by random (oy, ox) in [0, max_jitter]^2 before the gradient, roll it back after.

  Rolling the gradient back equals the course's roll / step / roll back bit for bit (a
  roll is a permutation), and keeps an optimizer's state aligned with the image.

  References:
    Yosinski et al., Understanding Neural Networks Through Deep Visualization, 2015.
  """

  def __init__(self, max_jitter: int, key):
    self.max_jitter, self.key = max_jitter, key

  def shift(self, x, t):
    ox, oy = jax.random.randint(jax.random.fold_in(self.key, t), (2,), 0, self.max_jitter + 1)
    return roll(x, oy, ox), (oy, ox)

  def unshift(self, grad, state):
    oy, ox = state
    return roll(grad, -oy, -ox)


class Clamp(Transform):
  """Clamp each channel to [low, high] (the valid normalised pixel box)."""

  def __init__(self, low, high):
    self.low, self.high = low, high

  def after(self, x, t, origin):
    return jnp.clip(x, self.low, self.high)


class BlurEvery(Transform):
  """Gaussian blur (sigma pixels) when t % every == 0 (Yosinski et al. 2015)."""

  def __init__(self, every: int, sigma: float):
    self.every, self.sigma = every, sigma

  def after(self, x, t, origin):
    return jax.lax.cond(t % self.every == 0, lambda x: gaussian_blur(x, self.sigma),
                        lambda x: x, x)


class ProjectBall(Transform):
  """Project onto the ball ||x - center|| <= epsilon, 'linf' (clip the difference) or
  'l2' (scale it down to length epsilon); center: None for the starting image."""

  def __init__(self, norm: str, epsilon, center=None):
    if norm not in ('linf', 'l2'):
      raise ValueError(f"norm must be 'linf' or 'l2', not {norm!r}")
    self.norm, self.epsilon, self.center = norm, epsilon, center

  def after(self, x, t, origin):
    center = origin if self.center is None else self.center
    delta = x - center
    if self.norm == 'linf':
      return center + jnp.clip(delta, -self.epsilon, self.epsilon)
    length = jnp.sqrt(jnp.sum(delta * delta))
    scale = jnp.where(length > self.epsilon, self.epsilon / jnp.where(length > 0, length, 1), 1)
    return center + delta * scale.astype(delta.dtype)


def roll(image, oy, ox):
  """jnp.roll(image, (oy, ox), axis=(0, 1)) for traced shifts, as one slice of a 2x2 tiling.

  jnp.roll slices and concatenates once per axis, and under vmap (batched shifts) each
  becomes a gather, several times slower on XLA:CPU than this single dynamic slice. Bit
  for bit the same (only data moves).
  """
  h, w = image.shape[:2]
  tiled = jnp.tile(image, (2, 2, 1))
  return jax.lax.dynamic_slice(tiled, (jnp.mod(-oy, h), jnp.mod(-ox, w), 0), image.shape)


def normalized_sgd(learning_rate) -> optax.GradientTransformation:
  """Steps of length `learning_rate` along the gradient's direction: -lr * g / ||g||_2.

  A zero gradient gives a zero step. The step takes the gradient's dtype, so that a
  float64 learning rate vmapped over float32 images keeps the loop carry's type.

  References:
    Szegedy et al., Intriguing properties of neural networks, ICLR 2014 (the course's step).
  """

  def update(updates, state, params=None):
    del params
    norm = jnp.sqrt(sum(jnp.sum(g * g) for g in jax.tree.leaves(updates)))
    safe = jnp.where(norm > 0, norm, 1.0)
    return jax.tree.map(lambda g: (-(learning_rate * g) / safe).astype(g.dtype), updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def sign_sgd(learning_rate) -> optax.GradientTransformation:
  """Steps of `learning_rate` along the gradient's sign: -lr * sign(g) (a zero component
  does not move). The step takes the gradient's dtype, as `normalized_sgd`'s.

  References:
    Goodfellow, Shlens & Szegedy, Explaining and harnessing adversarial examples, ICLR
    2015, eq. 3 (the fast gradient sign method's step).
  """

  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda g: (-learning_rate * jnp.sign(g)).astype(g.dtype),
                        updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


class Ascent(NamedTuple):
  """Attributes:
    x: the final image.
    steps: steps taken (int32).
    stalled: the gradient was exactly zero when a step was due (stop mode), else False.
    records: what `record(value, aux)` returned at each step, stacked (T, ...) (scan
      mode), or None.
    snapshots: (T // snapshot_every, *x.shape) images after every snapshot_every steps,
      or None.
  """
  x: jax.Array
  steps: jax.Array
  stalled: jax.Array
  records: Any
  snapshots: jax.Array | None


def ascend(objective: Callable, params, x0, args: Sequence = (), *,
           optimizer: optax.GradientTransformation, num_steps,
           transforms: Sequence[Transform] = (), stop: Callable | None = None,
           record: Callable | None = None, snapshot_every: int = 0,
           on_step: Callable | None = None) -> Ascent:
  """Maximises `objective(params, x, *args) -> (value, aux)` over x, from x0.

  Args:
    objective: the scalar to maximise, and an auxiliary output (logits, say).
    params: the model's parameters (fixed during the loop: on CPU the kernels that
      depend on them alone are laid out once, ahead of it).
    x0: the starting image.
    args: further arguments of the objective (traced, fixed during the loop).
    optimizer: the optax transformation (it is given -gradient).
    num_steps: without `stop`, the (static) step count; with `stop`, the cap (may be
      traced).
    transforms: applied around each step, in order (see the module docstring).
    stop: `stop(value, aux) -> bool`, tested at the current image before each step.
    record: `record(value, aux) -> pytree` kept for every step (scan mode only).
    snapshot_every: also keep the image after every this many steps (scan mode only).
    on_step: called (traced) with t at every step, for progress.

  Returns:
    An `Ascent`.
  """
  gradient = _xla_cpu.loop_gradient(
      lambda params, x, *args: jax.value_and_grad(objective, argnums=1, has_aux=True)(
          params, x, *args), params, x0, *args)

  def grad_at(x, t):
    shifted, undo = x, []
    for transform in transforms:
      shifted, state = transform.shift(shifted, t)
      undo.append(state)
    (value, aux), grad = gradient(shifted, *args)
    return value, aux, grad, undo

  def move(x, opt_state, grad, undo, t):
    for transform, state in zip(reversed(transforms), reversed(undo)):
      grad = transform.unshift(grad, state)
    updates, opt_state = optimizer.update(-grad, opt_state, x)
    x = optax.apply_updates(x, updates)
    for transform in transforms:
      x = transform.after(x, t, x0)
    return x, opt_state

  if stop is not None:
    return _until(grad_at, move, stop, x0, optimizer.init(x0), num_steps, on_step)

  def step(carry, t):
    x, opt_state = carry
    value, aux, grad, undo = grad_at(x, t)
    x, opt_state = move(x, opt_state, grad, undo, t)
    if on_step is not None:
      on_step(t)
    return (x, opt_state), (None if record is None else record(value, aux))

  every = snapshot_every or num_steps
  chunks, rest = divmod(num_steps, every)
  steps = jnp.arange(num_steps)

  def chunk(carry, ts):
    carry, records = jax.lax.scan(step, carry, ts)
    return carry, (records, carry[0])

  carry = (x0, optimizer.init(x0))
  carry, (records, snapshots) = jax.lax.scan(
      chunk, carry, steps[:chunks * every].reshape(chunks, every))
  records = jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:]), records)
  if rest:
    carry, more = jax.lax.scan(step, carry, steps[chunks * every:])
    records = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), records, more)
  return Ascent(carry[0], jnp.int32(num_steps), jnp.bool_(False), records,
                snapshots if snapshot_every else None)


def _until(grad_at, move, stop, x0, opt_state0, max_steps, on_step):
  """The stop-mode loop of `ascend`: a while_loop that tests `stop` before each step."""

  def cond(state):
    _, _, i, stopped, stalled = state
    return ~stopped & ~stalled & (i < max_steps)

  def body(state):
    x, opt_state, i, _, _ = state
    value, aux, grad, undo = grad_at(x, i)
    stopped = stop(value, aux)
    stalled = ~stopped & jnp.all(grad == 0)
    going = ~stopped & ~stalled
    new_x, new_state = move(x, opt_state, grad, undo, i)
    if on_step is not None:
      on_step(i)
    keep = lambda new, old: jnp.where(going, new, old)
    return (keep(new_x, x), jax.tree.map(keep, new_state, opt_state),
            i + going.astype(jnp.int32), stopped, stalled)

  x, _, steps, _, stalled = jax.lax.while_loop(
      cond, body, (x0, opt_state0, jnp.int32(0), jnp.bool_(False), jnp.bool_(False)))
  return Ascent(x, steps, stalled, None, None)
