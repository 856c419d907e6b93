"""Robust accuracy against the attack budget, and transfer of attacks between models: two
studies, each one call returning a JSON-ready dict. `scripts/robustness.py` and
`scripts/transfer.py` are their command lines; docs/attacks.md has the numbers.

`robust_accuracy` sweeps epsilon for each attack of `ATTACKS` (untargeted, away from the
true labels) and reports the model's accuracy on the adversarial images and the attack's
success rate on the images it classified correctly; epsilon 0 is the clean accuracy. It
also runs the course's fooling method (`jaxviz.fooling_images`: normalised-gradient
ascent on a target's score, learning rate 1, at most 100 steps, each image towards a
random other class) on the same images and converts its perturbations to pixel units, so
that the course's method and the literature's budgets stand on one scale.

`transfer_matrix` makes adversarial images on each model and classifies them with every
model: the black-box transfer of Szegedy et al. (2014, sec. 4.3) and Papernot et al.
(2016). The images travel as pixels in [0, 1]; each model normalises them with its own
mean and std.

Epsilons are in pixel units, as `jaxviz.pgd`'s: 8/255 is 8 grey levels for 'linf'; for
'l2' a length over all H * W * 3 values in [0, 1].
"""

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz import _xla_cpu, data, shapes, validation
from jaxviz import models as models_lib
from jaxviz.errors import InputError
from jaxviz.loading import Model
from jaxviz.methods import attacks as attack_lib
from jaxviz.methods import fooling_images
from jaxviz.preprocess import check_images


class AttackSpec(NamedTuple):
  """How a named attack calls `jaxviz.methods.attacks.attack`.

  Attributes:
    norm: 'linf' or 'l2'.
    one_step: a single step of length epsilon (FGSM, FGM); else `steps` steps of
      2.5 * epsilon / steps.
    random_start: start at a uniform point of the ball (PGD) rather than at the image.
  """
  norm: str
  one_step: bool
  random_start: bool


ATTACKS = {
    'fgsm': AttackSpec('linf', True, False),     # Goodfellow et al. 2015
    'bim': AttackSpec('linf', False, False),     # Kurakin et al. 2017
    'pgd': AttackSpec('linf', False, True),      # Madry et al. 2018
    'fgm_l2': AttackSpec('l2', True, False),     # the fast gradient method, L2
    'pgd_l2': AttackSpec('l2', False, True),
}
DEFAULT_ATTACKS = ('fgsm', 'pgd', 'pgd_l2')
# The usual CIFAR/ImageNet Linf ladder up to 16 grey levels, and an L2 ladder to 2 pixel
# units (on 64 x 64 x 3 values, 2 is 0.018 per value on average: 4.6 / 255).
DEFAULT_EPSILONS = {'linf': tuple(e / 255 for e in (0, 1, 2, 4, 8, 16)),
                    'l2': (0.0, 0.25, 0.5, 1.0, 2.0)}
EPSILON_BATCHING = ('loop', 'vmap')


def _pixels(images) -> np.ndarray:
  """uint8 or float [0, 1] RGB -> float32 pixels in [0, 1]; one-line InputErrors."""
  images = np.asarray(check_images(images, allow_single=False))
  if np.issubdtype(images.dtype, np.integer):
    if images.dtype != np.uint8:
      raise InputError(f'integer images must be uint8, got {images.dtype}')
    return images.astype(np.float32) / 255
  if not np.issubdtype(images.dtype, np.floating):
    raise InputError(f'images must be uint8 or float RGB in [0, 1], got {images.dtype}')
  if not np.isfinite(images).all() or images.min() < 0 or images.max() > 1:
    raise InputError('float images must be pixels in [0, 1] (not normalised model input)')
  return images.astype(np.float32)


def _labels(labels, n: int, model: Model) -> np.ndarray:
  return validation.check_classes(labels, n, model.num_classes, 'labels')


def check_attack(name: str) -> AttackSpec:
  """The `AttackSpec` of a name of `ATTACKS`; else a one-line InputError."""
  return ATTACKS[validation.check_choice(name, tuple(ATTACKS), 'attack')]


def resolve_epsilons(attack_names: Sequence[str],
                     epsilons: Mapping[str, Sequence[float]] | None) -> dict[str, list[float]]:
  """{attack: sorted distinct epsilons}: an attack's own entry of `epsilons`, else its
  norm's ('linf' or 'l2'), else `DEFAULT_EPSILONS` of its norm."""
  epsilons = dict(epsilons or {})
  unknown = set(epsilons) - set(ATTACKS) - set(DEFAULT_EPSILONS)
  if unknown:
    raise InputError(f'epsilons has keys {sorted(unknown)}: use attack names '
                     f'({", ".join(ATTACKS)}) or norms (linf, l2)')
  resolved = {}
  for name in attack_names:
    spec = check_attack(name)
    values = epsilons.get(name, epsilons.get(spec.norm, DEFAULT_EPSILONS[spec.norm]))
    values = np.asarray(values, np.float64).reshape(-1)
    if values.size == 0:
      raise InputError(f'no epsilons for {name}')
    validation.check_positive(values, f'{name} epsilons', zero=True)
    resolved[name] = sorted({float(v) for v in values})
  if len(set(attack_names)) != len(attack_names):
    raise InputError(f'attacks {list(attack_names)} name one twice')
  return resolved


def _step_size(spec: AttackSpec, epsilon, steps: int):
  return epsilon if spec.one_step else 2.5 * epsilon / max(steps, 1)


def _num_steps(spec: AttackSpec, steps: int) -> int:
  return 1 if spec.one_step else steps


# --- Evaluation of pixels on a model -------------------------------------------------------

@functools.partial(jax.jit, static_argnames='apply_fn')
def _predict(apply_fn, params, pixels, mean, std):
  return jnp.argmax(apply_fn(params, (pixels - mean) / std), axis=-1)


def predict_pixels(model: Model, pixels, batch_size: int = 64) -> np.ndarray:
  """Argmax classes of pixel images in [0, 1], normalised with the model's own mean and
  std (one compiled program per model and batch shape: the last batch is padded)."""
  pixels = np.asarray(pixels, np.float32)
  mean, std = (jnp.asarray(v, jnp.float32) for v in attack_lib.normalization(model))
  out = []
  for start in range(0, len(pixels), batch_size):
    chunk = pixels[start:start + batch_size]
    pad = batch_size - len(chunk) if len(pixels) > batch_size else 0
    padded = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
    out.append(np.asarray(_predict(model.apply, model.params, padded, mean, std))[:len(chunk)])
  return np.concatenate(out)


def _rate(hits: np.ndarray, over: np.ndarray):
  """mean(hits[over]) as a float, None when nothing is counted (JSON null, not NaN)."""
  count = int(over.sum())
  return float(hits[over].mean()) if count else None


def _stats(values: np.ndarray) -> dict:
  """median / mean / max of a 1-D array (None for empty: JSON null)."""
  values = np.asarray(values, np.float64)
  if values.size == 0:
    return {'median': None, 'mean': None, 'max': None, 'count': 0}
  return {'median': float(np.median(values)), 'mean': float(values.mean()),
          'max': float(values.max()), 'count': int(values.size)}


# --- One attack over many epsilons ---------------------------------------------------------

def _sweep_program(apply_fn, params, images, labels, epsilons, step_sizes, steps, key, mean,
                   std, *, norm, random_start, chunk_size):
  """The attack vmapped over (epsilon, step size): one program for the whole sweep."""

  def one(epsilon, step_size):
    result = attack_lib.attack(apply_fn, params, images, labels, epsilon=epsilon,
                               steps=steps, step_size=step_size, norm=norm,
                               random_start=random_start, key=key, mean=mean, std=std,
                               chunk_size=chunk_size)
    return result.pixels, result.predicted, result.linf, result.l2

  return jax.vmap(one)(epsilons, step_sizes)


_sweep = _xla_cpu.jit_variants(_sweep_program,
                               static_argnames=('apply_fn', 'norm', 'random_start',
                                                'chunk_size'))


class Sweep(NamedTuple):
  """An attack at each epsilon, as numpy arrays with a leading (E,) epsilon axis.

  Attributes:
    pixels: (E, N, H, W, 3) adversarial images in [0, 1].
    predicted: (E, N) the model's class of each.
    linf, l2: (E, N) perturbation norms in pixel units.
    seconds: (E,) wall time of each epsilon ('loop': the first includes compiling), or
      one entry for the whole sweep ('vmap').
  """
  pixels: np.ndarray
  predicted: np.ndarray
  linf: np.ndarray
  l2: np.ndarray
  seconds: list


def sweep(model: Model, pixels, labels, attack: str, epsilons: Sequence[float], *,
          steps: int = 10, key=None, batching: str = 'loop', chunk_size: int | None = None,
          progress: Callable[[str], None] | None = None) -> Sweep:
  """Runs `attack` (a name of `ATTACKS`, untargeted) at every epsilon on one batch.

  Epsilon and the step size are traced in `jaxviz.pgd`, so the attack compiles once for
  the sweep either way: batching='loop' runs the compiled program once per epsilon,
  'vmap' runs one program vmapped over the epsilons. Every epsilon uses the same random
  start directions (one `key`), so the curve's steps are the budget's, not the draw's.

  Args:
    model: a loaded `Model` (its mean and std normalise the pixels).
    pixels: (N, H, W, 3) uint8, or float pixels in [0, 1].
    labels: (N,) true classes.
    attack: 'fgsm', 'bim', 'pgd', 'fgm_l2' or 'pgd_l2'.
    epsilons: budgets in pixel units.
    steps: gradient steps of the iterative attacks (one-step attacks take 1).
    key: PRNG key of the random starts; None: jax.random.key(0).
    batching: 'loop' or 'vmap' (docs/attacks.md has the timings).
    chunk_size: images per attack loop (None: the method's default).
    progress: called with a line of text per epsilon.

  Returns:
    A `Sweep`.
  """
  spec = check_attack(attack)
  validation.check_choice(batching, EPSILON_BATCHING, 'batching')
  validation.check_positive(steps, 'steps', integer=True)
  key = jax.random.key(0) if key is None else key
  n_steps = _num_steps(spec, steps)
  pixels = _pixels(pixels)
  labels = jnp.asarray(_labels(labels, len(pixels), model))
  validation.check_positive(np.asarray(epsilons, np.float64), 'epsilons', zero=True)
  mean, std = (jnp.asarray(v, jnp.float32) for v in attack_lib.normalization(model))
  x = (jnp.asarray(pixels) - mean) / std
  say = progress or (lambda text: None)
  if batching == 'vmap':
    start = time.perf_counter()
    eps = jnp.asarray(epsilons, jnp.float32)
    out = _sweep(model.cpu_kernels)(
        model.apply, model.params, x, labels, eps, _step_size(spec, eps, n_steps),
        jnp.asarray(n_steps, jnp.int32), key, mean, std, norm=spec.norm,
        random_start=spec.random_start, chunk_size=chunk_size)
    out = [np.asarray(a) for a in jax.block_until_ready(out)]
    seconds = [time.perf_counter() - start]
    say(f'{attack}: {len(eps)} epsilons at once in {seconds[0]:.1f} s')
    return Sweep(*out, seconds)
  results, seconds = [], []
  for epsilon in epsilons:
    start = time.perf_counter()
    r = attack_lib.attack(model.apply, model.params, x, labels, epsilon=epsilon,
                          steps=n_steps, step_size=_step_size(spec, epsilon, n_steps),
                          norm=spec.norm, random_start=spec.random_start, key=key, mean=mean,
                          std=std, chunk_size=chunk_size, cpu_kernels=model.cpu_kernels)
    results.append([np.asarray(a) for a in jax.block_until_ready(
        (r.pixels, r.predicted, r.linf, r.l2))])
    seconds.append(time.perf_counter() - start)
    say(f'{attack} epsilon {_epsilon_text(spec.norm, epsilon)}: accuracy '
        f'{np.mean(results[-1][1] == np.asarray(labels)):.3f} ({seconds[-1]:.1f} s)')
  return Sweep(*(np.stack(a) for a in zip(*results)), seconds)


def _epsilon_text(norm: str, epsilon: float) -> str:
  return f'{epsilon * 255:.4g}/255' if norm == 'linf' else f'{epsilon:.4g}'


# --- Robust accuracy --------------------------------------------------------------------

def naive_fooling(model: Model, pixels, labels, *, learning_rate: float = 1.0,
                  iterations: int = 100, seed: int = 0, chunk_size: int | None = None) -> dict:
  """The course's fooling method on `pixels`, each towards a uniformly drawn other class,
  with its perturbations in pixel units.

  `fooling_images` steps in the normalised space and reports norms there; the pixel
  perturbation is d * std per channel. It does not clip to the pixel box, so the report
  also says how much of the fooled image lies outside [0, 1] and whether the fooling
  survives saving it (clipped to [0, 1] and rounded to 8 bits).

  Returns:
    {'learning_rate', 'iterations', 'objective', 'success_rate' (classified as the
    target), 'misclassified_rate' (no longer the true class), 'linf_255' and 'l2'
    ({'median', 'mean', 'max', 'count'} over the fooled images, pixel units; Linf in grey
    levels), 'steps' (same, steps taken), 'out_of_box_fraction' (mean share of the fooled
    images' values outside [0, 1]), 'success_after_uint8', 'seconds'}; plus arrays under
    '_arrays' for figures (targets, fooled pixels, norms).
  """
  n = len(pixels)
  labels = np.asarray(labels)
  rng = np.random.default_rng(seed)
  targets = ((labels + rng.integers(1, model.num_classes, n)) % model.num_classes).astype(np.int32)
  mean, std = (np.asarray(v, np.float32) for v in attack_lib.normalization(model))
  x = (jnp.asarray(pixels) - mean) / std
  start = time.perf_counter()
  result = jax.block_until_ready(fooling_images(
      model.apply, model.params, x, targets, learning_rate, iterations,
      chunk_size=chunk_size, cpu_kernels=model.cpu_kernels))
  seconds = time.perf_counter() - start
  fooled = np.asarray(result.fooled, bool)
  raw = np.asarray(result.images) * std + mean  # unclipped pixels
  delta = (raw - np.asarray(pixels)).reshape(n, -1)
  linf, l2 = np.abs(delta).max(axis=1), np.linalg.norm(delta, axis=1)
  outside = ((raw < 0) | (raw > 1)).reshape(n, -1).mean(axis=1)
  saved = np.round(np.clip(raw, 0, 1) * 255) / 255
  saved_predicted = predict_pixels(model, saved)
  predicted = np.asarray(result.predicted)
  return {
      'method': 'fooling_images', 'objective': 'score', 'learning_rate': float(learning_rate),
      'iterations': int(iterations), 'images': n,
      'success_rate': float(fooled.mean()),
      'misclassified_rate': float((predicted != labels).mean()),
      'linf_255': _stats(255 * linf[fooled]), 'l2': _stats(l2[fooled]),
      'steps': _stats(np.asarray(result.iterations)[fooled]),
      'out_of_box_fraction': float(outside[fooled].mean()) if fooled.any() else None,
      'success_after_uint8': float((saved_predicted == targets).mean()),
      'seconds': seconds,
      '_arrays': {'targets': targets, 'pixels': raw, 'linf': linf, 'l2': l2,
                  'fooled': fooled},
  }


def robust_accuracy(model: Model, images, labels,
                    epsilons: Mapping[str, Sequence[float]] | None = None, *,
                    attacks: Sequence[str] = DEFAULT_ATTACKS, steps: int = 10,
                    naive: bool = True, naive_learning_rate: float = 1.0,
                    naive_iterations: int = 100, seed: int = 0, batching: str = 'vmap',
                    chunk_size: int | None = None,
                    progress: Callable[[str], None] | None = None,
                    keep_arrays: bool = False) -> dict:
  """Accuracy under attack against the budget, per attack, and the course's method.

  Args:
    model: a loaded `Model`.
    images: (N, H, W, 3) uint8, or float pixels in [0, 1] (not normalised).
    labels: (N,) true classes.
    epsilons: budgets in pixel units keyed by attack name or by norm: {'linf': [0, 2/255,
      8/255], 'l2': [0, 0.5]} or {'pgd': [...]} (an attack's key wins over its norm's);
      None or a missing norm: `DEFAULT_EPSILONS`.
    attacks: names of `ATTACKS`, each untargeted from the true labels.
    steps: steps of the iterative attacks (step size 2.5 * epsilon / steps).
    naive: also run the course's `fooling_images` (see `naive_fooling`).
    naive_learning_rate, naive_iterations: the course's 1 and 100.
    seed: drives the random starts and the naive method's targets.
    batching: 'vmap' (one program over all epsilons: ~30% faster on two CPU cores,
      docs/attacks.md) or 'loop' (the compiled program run once per epsilon, each timed
      and reported); see `sweep`.
    chunk_size: images per attack loop (None: the methods' default, 1 on CPU).
    progress: called with a short line as the study advances.
    keep_arrays: add '_arrays' (per attack: the `Sweep`; the naive method's arrays) for
      figures; pop it before writing JSON.

  Returns:
    {'model', 'images', 'clean_accuracy', 'correct' (images classified correctly),
    'config', 'attacks': {name: {'norm', 'steps', 'random_start', 'epsilons',
    'epsilons_255' (Linf only), 'accuracy', 'success_rate' (misclassified among the
    correct ones), 'linf_255_median', 'l2_median' (of the perturbations used), 'seconds'
    (per epsilon, or one for a 'vmap' sweep), 'seconds_total'}}, 'naive' (see
    `naive_fooling`), 'seconds'}. Lists run along the attack's sorted epsilons; rates
    with nothing to count are None.

  References:
    Madry et al., Towards deep learning models resistant to adversarial attacks, ICLR
    2018 (accuracy against the budget, fig. 4); Carlini et al., On evaluating adversarial
    robustness, 2019 (report a curve over epsilon, not one point).
  """
  validation.check_choice(batching, EPSILON_BATCHING, 'batching')
  validation.check_positive(steps, 'steps', integer=True)
  plan = resolve_epsilons(tuple(attacks), epsilons)
  pixels = _pixels(images)
  labels = _labels(labels, len(pixels), model)
  say = progress or (lambda text: None)
  begin = time.perf_counter()
  clean = predict_pixels(model, pixels) == labels
  report = {'model': model.name, 'images': len(pixels), 'clean_accuracy': float(clean.mean()),
            'correct': int(clean.sum()),
            'config': {'steps': steps, 'seed': seed, 'batching': batching,
                       'chunk_size': chunk_size, 'step_size': '2.5 * epsilon / steps',
                       'naive_learning_rate': naive_learning_rate,
                       'naive_iterations': naive_iterations},
            'attacks': {}}
  arrays = {}
  say(f'clean accuracy {clean.mean():.3f} on {len(pixels)} images')
  for index, name in enumerate(plan):
    spec = ATTACKS[name]
    run = sweep(model, pixels, labels, name, plan[name], steps=steps,
                key=jax.random.fold_in(jax.random.key(seed), index), batching=batching,
                chunk_size=chunk_size, progress=say)
    wrong = run.predicted != labels[None]
    entry = {'norm': spec.norm, 'steps': _num_steps(spec, steps),
             'random_start': spec.random_start, 'epsilons': plan[name]}
    if spec.norm == 'linf':
      entry['epsilons_255'] = [e * 255 for e in plan[name]]
    entry.update(
        accuracy=[float(np.mean(~w)) for w in wrong],
        success_rate=[_rate(w, clean) for w in wrong],
        linf_255_median=[float(np.median(v) * 255) for v in run.linf],
        l2_median=[float(np.median(v)) for v in run.l2],
        seconds=[round(s, 3) for s in run.seconds],
        seconds_total=round(float(sum(run.seconds)), 3))
    report['attacks'][name] = entry
    arrays[name] = run
  if naive:
    say(f'course fooling method: lr {naive_learning_rate:g}, at most {naive_iterations} '
        'steps, towards a random other class')
    result = naive_fooling(model, pixels, labels, learning_rate=naive_learning_rate,
                           iterations=naive_iterations, seed=seed, chunk_size=chunk_size)
    arrays['naive'] = result.pop('_arrays')
    report['naive'] = result
    say(f"course fooling method: success {result['success_rate']:.3f}, median Linf "
        f"{result['linf_255']['median'] or float('nan'):.3g}/255, median L2 "
        f"{result['l2']['median'] or float('nan'):.3g} ({result['seconds']:.1f} s)")
  report['seconds'] = round(time.perf_counter() - begin, 3)
  if keep_arrays:
    report['_arrays'] = arrays
  return report


def labelled_images(spec: str | None, shapes_model: bool, count: int, seed: int,
                    size: int = 224) -> tuple[np.ndarray, list, str]:
  """A study's images and true labels, read without a model.

  Args:
    spec: None: for a shapes model, `count` generated images of `seed` (held out: the
      model trains on the streams (seed, 0) and is tested on (seed, 1)); otherwise the
      sample photos. Else a `jaxviz.data.load_images` source that carries labels
      ('samples', an .npz with `labels`).
    shapes_model: whether the model is the self-trained shapes model.
    count: how many (0: all of `spec`; 200 generated).
    seed: the generated images' seed.
    size: the side other images are resized to.

  Returns:
    (uint8 images (N, H, W, 3), labels as class names or indices, a description).
  """
  if spec is None and shapes_model:
    generated = shapes.generate(count or 200, seed)
    return generated.images, list(generated.labels), f'generated shapes, seed {seed}'
  spec = spec or 'samples'
  images = data.load_images(spec, size)
  if images.labels is None:
    raise InputError(f'{spec} has no labels: the study needs the true classes (an .npz '
                     'with `labels`, or samples)')
  count = count or len(images.names)
  if count > len(images.names):
    raise InputError(f'{count} images asked for, but {spec} has {len(images.names)}')
  return images.images[:count], list(images.labels[:count]), spec


# --- Transfer ------------------------------------------------------------------------------

def parse_model_spec(spec: str) -> tuple[str, int]:
  """'NAME' or 'NAME:SEED' -> (architecture, seed): the seed trains a shapes model
  (load_model('shapes', seed=1)) or initialises random weights; 0 when not given."""
  name, _, seed = str(spec).strip().partition(':')
  known = sorted({*models_lib.ARCHITECTURES, *models_lib.SELF_TRAINED})
  if name not in known:
    raise InputError(f'unknown model {name!r} in {spec!r}; known: {", ".join(known)}')
  if seed and not seed.isdigit():
    raise InputError(f'model {spec!r}: the seed after the colon must be an integer >= 0')
  return name, int(seed or 0)


def model_names(models: Sequence[Model]) -> list[str]:
  """A distinct label per model: its name, with its seed (the shapes model's training
  seed) or else its position when two share a name."""
  names = [m.name for m in models]
  if len(set(names)) == len(names):
    return names
  names = [f'{m.name}:{m.metadata.get("seed", i)}' if names.count(m.name) > 1 else m.name
           for i, m in enumerate(models)]
  if len(set(names)) == len(names):
    return names
  return [f'{m.name}#{i}' for i, m in enumerate(models)]


def random_perturbation(pixels, epsilon: float, norm: str, seed: int = 0) -> np.ndarray:
  """A random perturbation of each image at the budget, clipped to [0, 1]: a random
  corner of the Linf ball (+-epsilon per value) or a uniform direction of L2 length
  epsilon. The control of a transfer rate: what the target does with noise of the same
  size that no model chose."""
  pixels = np.asarray(pixels, np.float32)
  rng = np.random.default_rng(seed)
  if norm == 'linf':
    delta = epsilon * rng.choice(np.array([-1, 1], np.float32), pixels.shape)
  else:
    delta = rng.standard_normal(pixels.shape).astype(np.float32)
    length = np.sqrt((delta.reshape(len(delta), -1) ** 2).sum(axis=1))
    delta *= (epsilon / np.maximum(length, 1e-12)).reshape((-1,) + (1,) * (delta.ndim - 1))
  return np.clip(pixels + delta, 0, 1).astype(np.float32)


def transfer_matrix(models: Sequence[Model], images, labels, *, attack: str = 'pgd',
                    epsilon: float, steps: int = 10, seed: int = 0,
                    names: Sequence[str] | None = None, chunk_size: int | None = None,
                    progress: Callable[[str], None] | None = None,
                    keep_arrays: bool = False) -> dict:
  """Adversarial images made on each model (white-box), classified by every model.

  The attack runs on model i in its own normalisation and hands over pixels in [0, 1];
  model j normalises them with its own mean and std. Untargeted, from the true labels.

  rate[i][j] counts the images that both i and j classify correctly when clean: the
  share of them whose adversarial made on i is misclassified by j. Its diagonal is the
  white-box success rate on the images i gets right (what `robust_accuracy` calls
  success); off the diagonal it is the transfer rate. conditional[i][j] counts only the
  images whose attack on i succeeded (and that j gets right): the share that also fool j
  (diagonal 1 by definition, None where nothing is counted). random_control[j] is the
  share of the images j gets right that j misclassifies under `random_perturbation` of
  the same budget: the floor a transfer rate is to be read against.

  Args:
    models: loaded `Model`s with the same classes and input size.
    images: (N, H, W, 3) uint8, or float pixels in [0, 1].
    labels: (N,) true classes.
    attack: a name of `ATTACKS`.
    epsilon: the budget in pixel units (8/255 for 'linf').
    steps: steps of an iterative attack.
    seed: the random starts' key.
    names: one label per model (default `model_names`).
    chunk_size: images per attack loop.
    progress: called with a line of text per source model.
    keep_arrays: add '_arrays' {'pixels': (M, N, H, W, 3), 'predicted': (M, M, N)
      (source, target, image), 'clean_predicted': (M, N)}; pop it before writing JSON.

  Returns:
    {'models', 'attack', 'norm', 'epsilon', 'epsilon_255' (Linf), 'steps', 'images',
    'clean_accuracy' (per model), 'rate', 'conditional', 'pairs' (images counted in
    rate[i][j]), 'white_box' (the diagonal), 'random_control' (per model), 'seconds' (per
    source: attack and evaluation)}.

  References:
    Szegedy et al., Intriguing properties of neural networks, ICLR 2014, sec. 4.3;
    Papernot, McDaniel & Goodfellow, Transferability in machine learning, 2016.
  """
  models = list(models)
  if not models:
    raise InputError('transfer_matrix needs at least one model')
  spec = check_attack(attack)
  validation.check_positive(epsilon, 'epsilon', zero=True)
  validation.check_positive(steps, 'steps', integer=True)
  names = list(names) if names is not None else model_names(models)
  if len(names) != len(models):
    raise InputError(f'{len(names)} names for {len(models)} models')
  for m in models[1:]:
    if tuple(m.class_names) != tuple(models[0].class_names):
      raise InputError(f'{m.name} and {models[0].name} have different classes: transfer '
                       'needs one label space')
  pixels = _pixels(images)
  labels = _labels(labels, len(pixels), models[0])
  say = progress or (lambda text: None)
  clean_predicted = np.stack([predict_pixels(m, pixels) for m in models])
  correct = clean_predicted == labels[None]
  m_count = len(models)
  predicted = np.zeros((m_count, m_count, len(pixels)), np.int32)
  adversarial, seconds = [], []
  for i, source in enumerate(models):
    start = time.perf_counter()
    run = sweep(source, pixels, labels, attack, [epsilon], steps=steps,
                key=jax.random.key(seed), chunk_size=chunk_size)
    adversarial.append(run.pixels[0])
    for j, target in enumerate(models):
      predicted[i, j] = predict_pixels(target, run.pixels[0])
    seconds.append(round(time.perf_counter() - start, 3))
    success = _rate(predicted[i, i] != labels, correct[i])
    say(f'{attack} on {names[i]}: white-box success '
        f'{"n/a (no image correct)" if success is None else f"{success:.3f}"} '
        f'({seconds[-1]:.1f} s)')
  noisy = random_perturbation(pixels, epsilon, spec.norm, seed)
  control = [_rate(predict_pixels(m, noisy) != labels, correct[j])
             for j, m in enumerate(models)]
  fooled = predicted != labels[None, None]
  rate = [[_rate(fooled[i, j], correct[i] & correct[j]) for j in range(m_count)]
          for i in range(m_count)]
  conditional = [[_rate(fooled[i, j], correct[i] & correct[j] & fooled[i, i])
                  for j in range(m_count)] for i in range(m_count)]
  pairs = [[int((correct[i] & correct[j]).sum()) for j in range(m_count)]
           for i in range(m_count)]
  report = {'models': names, 'attack': attack, 'norm': spec.norm, 'epsilon': float(epsilon),
            'steps': _num_steps(spec, steps), 'random_start': spec.random_start,
            'images': len(pixels),
            'clean_accuracy': [float(c.mean()) for c in correct], 'rate': rate,
            'conditional': conditional, 'pairs': pairs,
            'white_box': [rate[i][i] for i in range(m_count)], 'random_control': control,
            'seconds': seconds}
  if spec.norm == 'linf':
    report['epsilon_255'] = float(epsilon) * 255
  if keep_arrays:
    report['_arrays'] = {'pixels': np.stack(adversarial), 'predicted': predicted,
                         'clean_predicted': clean_predicted}
  return report
