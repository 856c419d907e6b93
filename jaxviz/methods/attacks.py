"""Gradient attacks with an epsilon budget in pixel units: the fast gradient sign method
(Goodfellow et al. 2015), the basic iterative method (Kurakin et al. 2017) and projected
gradient descent (Madry et al. 2018), L-infinity or L2.

The images come in and go out normalised, as every method's; the attack itself runs on
pixels in [0, 1], p = x * std + mean, so that epsilon and the step size mean the same
thing whatever the model's normalisation (8/255 is 8 grey levels). Taking epsilon in the
normalised space instead, where one unit is about 0.23 of the pixel range for ImageNet's
std, is the classic slip this design rules out.

One step, from pixels p (the input-optimisation driver `_ascent.ascend`, with the clean
pixels p0 as the ball's centre):

    g  = d loss(p) / dp,  loss = CE(f((p - mean) / std), y)  (untargeted: ascend it)
                          loss = -CE(f(...), t)               (targeted: descend to t)
    p <- p + step_size * sign(g)          ('linf')  or  + step_size * g / ||g||_2  ('l2')
    p <- p0 + project(p - p0)             onto the eps-ball: clip to [-eps, eps] ('linf'),
                                          or scale down to length eps ('l2')
    p <- clip(p, 0, 1)                    the pixel box

Clipping to the box after the ball keeps the ball: p0 lies in the box, so clipping moves
every coordinate towards p0's side. For 'linf' the two clips are the exact projection onto
the intersection; for 'l2' this is the usual (not the exact) one.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz import parallel, validation
from jaxviz.errors import InputError
from jaxviz.methods import _ascent
from jaxviz.methods._batched import BatchedMethod
from jaxviz.preprocess import IMAGENET_MEAN, IMAGENET_STD

NORMS = ('linf', 'l2')


class AttackResult(NamedTuple):
  """Per image: the adversarial image and how it got there.

  Attributes:
    images: (N, H, W, 3) adversarial images, normalised like the inputs (model input).
    pixels: (N, H, W, 3) the same in [0, 1] pixel units, where the budget holds:
      ||pixels - clean pixels|| <= epsilon in the attack's norm, up to the rounding of
      one addition (float32: 6e-8 per pixel).
    steps: (N,) gradient steps taken: `steps` without early stop (fewer only if the
      gradient was exactly zero), else until the goal was met (0: it already was).
    success: (N,) the final image is misclassified (untargeted: predicted != label) or
      classified as the target (targeted).
    stalled: (N,) the gradient was exactly zero when a step was due, so the attack
      stopped there (the image is left as it was; never a NaN).
    predicted: (N,) argmax class of the final image.
    linf, l2: (N,) norms of the perturbation in pixel units.
  """
  images: jax.Array
  pixels: jax.Array
  steps: jax.Array
  success: jax.Array
  stalled: jax.Array
  predicted: jax.Array
  linf: jax.Array
  l2: jax.Array


def normalization(apply_fn, mean=None, std=None):
  """(mean, std) for an attack: those given; else a loaded Model's own (apply_fn is one);
  else ImageNet's."""
  if mean is None:
    mean = getattr(apply_fn, 'mean', IMAGENET_MEAN)
  if std is None:
    std = getattr(apply_fn, 'std', IMAGENET_STD)
  for name, value in (('mean', mean), ('std', std)):
    if jnp.shape(value) not in ((), (3,)):
      raise InputError(f'{name} must be 3 per-channel values, got shape {jnp.shape(value)}')
  if not isinstance(mean, jax.core.Tracer) and not np.isfinite(np.asarray(mean)).all():
    raise InputError(f'mean must be finite, got {mean!r}')
  validation.check_positive(std, 'std')
  return mean, std


def start_point(key, pixels, epsilon, norm: str):
  """A uniform random point of the eps-ball around `pixels`, clipped to [0, 1].

  'linf': pixels + U(-eps, eps) per pixel. 'l2': pixels + eps * u^(1/d) * z / ||z||_2 with
  z ~ N(0, I_d) (a uniform direction), u ~ U(0, 1) (a radius uniform in volume), d the
  pixel count times 3; `jax.random.split(key)` gives (z's key, u's key).
  """
  dtype = pixels.dtype
  if norm == 'linf':
    delta = jax.random.uniform(key, pixels.shape, dtype, -1, 1) * epsilon
  else:
    direction_key, radius_key = jax.random.split(key)
    z = jax.random.normal(direction_key, pixels.shape, dtype)
    radius = jax.random.uniform(radius_key, (), dtype) ** (1 / z.size)
    delta = z * (epsilon * radius / jnp.sqrt(jnp.sum(z * z)))
  return jnp.clip(pixels + delta.astype(dtype), 0, 1)


def _loss(apply_fn, targeted: bool):
  """The objective the driver ascends, of the pixels, with the logits as auxiliary output."""

  def value(params, pixels, label, mean, std):
    logits = apply_fn(params, ((pixels - mean) / std)[None])[0]
    log_probability = jax.nn.log_softmax(logits)[label]
    return (log_probability if targeted else -log_probability), logits

  return value


def _goal(label, targeted: bool):
  return lambda value, logits: (jnp.argmax(logits) == label) == targeted


def attack_one(apply_fn, params, image, label, key, epsilon, step_size, steps, mean, std, *,
               norm: str = 'linf', random_start: bool = False, targeted: bool = False,
               early_stop: bool = False, on_step=None) -> AttackResult:
  """`steps` projected steps on one normalised image (`AttackResult` fields unbatched).

  FGSM is steps=1, step_size=epsilon; BIM has no random start; PGD starts at
  `start_point(key, ...)`. epsilon, step_size, steps, mean and std may be traced (vmap
  over them); with early_stop the loop stops at the first image that meets the goal.
  """
  dtype = image.dtype
  mean, std = jnp.asarray(mean, dtype), jnp.asarray(std, dtype)
  epsilon, step_size = jnp.asarray(epsilon, dtype), jnp.asarray(step_size, dtype)
  clean = jnp.clip(image * std + mean, 0, 1)
  start = start_point(key, clean, epsilon, norm) if random_start else clean
  step = _ascent.sign_sgd(step_size) if norm == 'linf' else _ascent.normalized_sgd(step_size)
  goal = _goal(label, targeted)
  result = _ascent.ascend(
      _loss(apply_fn, targeted), params, start, (label, mean, std), optimizer=step,
      num_steps=steps, on_step=on_step,
      transforms=(_ascent.ProjectBall(norm, epsilon, clean), _ascent.Clamp(0, 1)),
      stop=goal if early_stop else (lambda value, logits: jnp.bool_(False)))
  pixels = result.x
  adversarial = (pixels - mean) / std
  predicted = jnp.argmax(apply_fn(params, adversarial[None])[0])
  delta = (pixels - clean).ravel()
  return AttackResult(adversarial, pixels, result.steps, (predicted == label) == targeted,
                      result.stalled, predicted, jnp.abs(delta).max(),
                      jnp.sqrt(jnp.sum(delta * delta)))


_batched = BatchedMethod(attack_one, batched=('image', 'label', 'key'),
                         replicated=('epsilon', 'step_size', 'steps', 'mean', 'std'),
                         iterative=True)


def _check(norm, epsilon, steps, step_size):
  """One-line InputErrors for the hyperparameters (traced values pass); the step size,
  None: 2.5 * epsilon / steps."""
  validation.check_choice(norm, NORMS, 'norm')
  validation.check_positive(epsilon, 'epsilon', zero=True)
  validation.check_positive(steps, 'steps', integer=True, zero=True)
  if step_size is None:
    return 2.5 * jnp.asarray(epsilon) / jnp.maximum(jnp.asarray(steps), 1)
  return validation.check_positive(step_size, 'step_size', zero=True)


def attack(apply_fn, params, images, labels, *, epsilon, steps: int = 10, step_size=None,
           norm: str = 'linf', random_start: bool = True, targeted: bool = False,
           early_stop: bool = False, key=None, mean=None, std=None,
           chunk_size: int | None = None, devices: parallel.Devices = None,
           cpu_kernels: str | None = None, progress=None) -> AttackResult:
  """Projected gradient attacks on a batch; see `pgd` (and `fgsm`, `bim`) for the
  arguments. `progress(t)`, if given, is called on the host as the steps advance (t in
  [0, steps))."""
  images = validation.check_batch(images)
  labels = validation.check_classes(
      labels, images.shape[0], validation.num_classes(apply_fn, params, images.shape[1:]),
      'targets' if targeted else 'labels')
  step_size = _check(norm, epsilon, steps, step_size)
  mean, std = normalization(apply_fn, mean, std)
  keys = validation.split_keys(jax.random.key(0) if key is None else key, images.shape[0])
  dtype = images.dtype
  if progress is not None and isinstance(steps, jax.core.Tracer):
    raise InputError('progress needs a concrete step count')
  return _batched(apply_fn, params, image=images, label=labels, key=keys,
                  epsilon=jnp.asarray(epsilon, dtype), step_size=jnp.asarray(step_size, dtype),
                  steps=jnp.asarray(steps, jnp.int32), mean=jnp.asarray(mean, dtype),
                  std=jnp.asarray(std, dtype), chunk_size=chunk_size, devices=devices,
                  cpu_kernels=cpu_kernels, progress=progress,
                  num_steps=None if progress is None else int(steps),
                  options=dict(norm=norm, random_start=bool(random_start),
                               targeted=bool(targeted), early_stop=bool(early_stop)))


def fgsm(apply_fn, params, images, labels, *, epsilon, norm: str = 'linf',
         targeted: bool = False, mean=None, std=None, chunk_size: int | None = None,
         devices: parallel.Devices = None, cpu_kernels: str | None = None) -> AttackResult:
  """The fast gradient sign method: one step, p' = clip(p + eps * sign(grad_p CE), 0, 1).

  Untargeted (away from `labels`, up their cross-entropy) or targeted (towards `labels`,
  down theirs: p - eps * sign(grad_p CE(target))). norm='l2' is the fast gradient method,
  p + eps * g / ||g||_2. Arguments as `pgd`'s.

  References:
    Goodfellow, Shlens & Szegedy, Explaining and harnessing adversarial examples, ICLR
    2015, eq. 3; the targeted form: Kurakin, Goodfellow & Bengio, Adversarial machine
    learning at scale, ICLR 2017, sec. 2 (one-step target class method).
  """
  return attack(apply_fn, params, images, labels, epsilon=epsilon, steps=1,
                step_size=epsilon, norm=norm, random_start=False, targeted=targeted,
                mean=mean, std=std, chunk_size=chunk_size, devices=devices,
                cpu_kernels=cpu_kernels)


def pgd(apply_fn, params, images, labels, *, epsilon, steps: int = 10, step_size=None,
        norm: str = 'linf', random_start: bool = True, targeted: bool = False,
        early_stop: bool = False, key=None, mean=None, std=None,
        chunk_size: int | None = None, devices: parallel.Devices = None,
        cpu_kernels: str | None = None, progress=None) -> AttackResult:
  """Projected gradient descent: `steps` steps of `step_size` from a random point of the
  eps-ball, each projected onto the ball and the pixel box (the module docstring).

  Args:
    apply_fn, params: the model (a loaded `Model` also gives its mean and std).
    images: (N, H, W, 3) normalised images.
    labels: (N,) true classes to move away from, or with targeted=True the classes to
      reach (one for all allowed).
    epsilon: the budget in pixel units ([0, 1] scale: 8/255 for 'linf'; an L2 length
      over all H * W * 3 values for 'l2'), >= 0. May be traced (vmap over it).
    steps: gradient steps (static or traced), >= 0.
    step_size: pixel units per step; None: 2.5 * epsilon / steps (enough to cross the
      ball and come back; Madry et al.'s step-size rule).
    norm: 'linf' (sign steps) or 'l2' (steps along the normalised gradient).
    random_start: start at `start_point(key_i, ...)` (uniform in the ball) rather than
      at the image.
    targeted: reach `labels` (descend their cross-entropy) instead of leaving them.
    early_stop: stop each image once it meets the goal (the step count says when);
      else run every step, as the papers do.
    key: PRNG key split into one per image (or N keys); None: jax.random.key(0).
    mean, std: the model's per-channel normalisation; None: a loaded Model's own, else
      ImageNet's.
    chunk_size, devices, cpu_kernels: as `fooling_images`'.
    progress: called on the host with the step index as the run advances.

  Returns:
    An `AttackResult`.

  References:
    Madry, Makelov, Schmidt, Tsipras & Vladu, Towards deep learning models resistant to
    adversarial attacks, ICLR 2018, eq. 2 and sec. 3 (random start in the ball).
  """
  return attack(apply_fn, params, images, labels, epsilon=epsilon, steps=steps,
                step_size=step_size, norm=norm, random_start=random_start,
                targeted=targeted, early_stop=early_stop, key=key, mean=mean, std=std,
                chunk_size=chunk_size, devices=devices, cpu_kernels=cpu_kernels,
                progress=progress)


def bim(apply_fn, params, images, labels, *, epsilon, steps: int = 10, step_size=None,
        norm: str = 'linf', targeted: bool = False, early_stop: bool = False, mean=None,
        std=None, chunk_size: int | None = None, devices: parallel.Devices = None,
        cpu_kernels: str | None = None, progress=None) -> AttackResult:
  """The basic iterative method: `pgd` from the image itself (no random start),
  p_{n+1} = clip_{p0, eps}(p_n + step_size * sign(grad)). Kurakin et al.'s own schedule
  is step_size=1/255 and steps=min(255 * eps + 4, 1.25 * 255 * eps); the default here is
  `pgd`'s (10 steps of 2.5 * eps / 10). Targeted: their iterative least-likely class
  method with `labels` the least-likely classes.

  References:
    Kurakin, Goodfellow & Bengio, Adversarial examples in the physical world, ICLR 2017
    workshop, sec. 2.2 (eq. for X^adv_{N+1}) and 2.3.
  """
  return attack(apply_fn, params, images, labels, epsilon=epsilon, steps=steps,
                step_size=step_size, norm=norm, random_start=False, targeted=targeted,
                early_stop=early_stop, mean=mean, std=std, chunk_size=chunk_size,
                devices=devices, cpu_kernels=cpu_kernels, progress=progress)
