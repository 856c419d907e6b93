"""Runs every metric of `jaxviz.metrics` on a model and a masked image set: one call, one
JSON-ready report. `scripts/evaluate.py` is its command line.

The report's keys are named after the metrics: pointing_game, mask_mass, deletion_auc,
insertion_auc, fooling, class_visualization, cascading_randomization,
independent_randomization, seed_stability.
"""

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz import metrics, validation
from jaxviz.errors import InputError
from jaxviz.loading import Model
from jaxviz.methods import class_visualization, fooling_images, saliency_maps


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """What to evaluate and how hard (defaults: the table in docs/validation.md, ~1 min on 2 cores).

  Attributes:
    saliency_images: images for the pointing game, mask mass and deletion/insertion.
    deletion_steps: chunks of the deletion and insertion curves.
    fooling_images: images to fool, each towards a random other class.
    fooling_learning_rate, fooling_iterations: the course's 1 and 100.
    classviz_iterations: class-visualisation steps per class (one image per class, at
      most `classviz_classes` classes). 400, not the course's 200: on the shapes model
      200 steps leave some classes far from the target (measured 0.07 for 'square'),
      400 reach >= 0.97 for all ten.
    classviz_classes: how many classes to visualise (0: all of them).
    sanity_images: images for the randomisation tests.
    stability_noise: std (normalised units) of the noise of the seed-stability test.
    seed: drives fooling targets, noise, jitter and the re-initialisations.
  """
  saliency_images: int = 200
  deletion_steps: int = 32
  fooling_images: int = 50
  fooling_learning_rate: float = 1.0
  fooling_iterations: int = 100
  classviz_iterations: int = 400
  classviz_classes: int = 0
  sanity_images: int = 16
  stability_noise: float = 0.02
  seed: int = 0

  def __post_init__(self):
    """Every count a whole number >= 1 (classviz_classes, fooling_iterations and seed
    >= 0), the learning rate finite and > 0, the noise finite and >= 0: else a one-line
    InputError, before any work."""
    for field in dataclasses.fields(self):
      integer = field.type in ('int', int)
      validation.check_positive(getattr(self, field.name), field.name, integer=integer,
                                zero=field.name in ('classviz_classes', 'seed',
                                                    'fooling_iterations', 'stability_noise'))


def _mean_std(x) -> dict:
  x = np.asarray(x, np.float64)
  return {'mean': float(x.mean()), 'std': float(x.std())}


def _sanity_dict(check: metrics.SanityCheck) -> dict:
  return {'stages': list(check.stages),
          **{name: [float(v) for v in np.asarray(getattr(check, name)).mean(axis=1)]
             for name in ('spearman', 'spearman_abs', 'ssim')}}


def evaluate(model: Model, images_uint8: np.ndarray, labels: np.ndarray, masks: np.ndarray,
             config: EvalConfig = EvalConfig(),
             progress: Callable[[str], None] | None = None) -> tuple[dict, dict]:
  """Evaluates the three methods of `model` against ground-truth masks.

  Args:
    model: a loaded `Model`.
    images_uint8: (N, H, W, 3) images; labels (N,) their true classes; masks (N, H, W)
      object masks (bool). The first `config.saliency_images` are used for saliency,
      the first `config.fooling_images` for fooling, the first `config.sanity_images` for
      the sanity checks.
    config: an `EvalConfig`.
    progress: called with a short description before each part (for logging).

  Returns:
    (report, arrays): the JSON-ready report, and arrays for figures (maps, curves, the
    sanity checks, fooled images, class visualisations).
  """
  images_uint8, labels, masks = np.asarray(images_uint8), np.asarray(labels), np.asarray(masks)
  n = len(images_uint8)
  if labels.shape != (n,) or masks.shape != images_uint8.shape[:3]:
    raise InputError(f'labels {labels.shape} and masks {masks.shape} must match the '
                     f'images {images_uint8.shape}')
  say = progress or (lambda text: None)
  key = jax.random.key(config.seed)
  rng = np.random.default_rng(config.seed)
  x = model.preprocess(images_uint8)
  report, arrays = {'model': model.name, 'images': n}, {}

  # Saliency: localisation and faithfulness, with a random map and the centre as controls.
  say('saliency: pointing game, mask mass, deletion and insertion')
  k = min(config.saliency_images, n)
  xs, ys, ms = x[:k], labels[:k], masks[:k]
  maps = saliency_maps(model.apply, model.params, xs, ys, cpu_kernels=model.cpu_kernels)
  random_maps = jax.random.uniform(jax.random.fold_in(key, 1), maps.shape)
  hits = metrics.pointing_game(maps, ms)
  # Zhang et al. count a hit within 15 pixels of the object at ~224 pixels: scaled here.
  tolerance = max(1, round(15 * xs.shape[1] / 224))
  mass = metrics.mask_mass(maps, ms)
  curves = metrics.deletion_insertion(model.apply, model.params, xs, maps, ys,
                                      steps=config.deletion_steps)
  random_curves = metrics.deletion_insertion(model.apply, model.params, xs, random_maps, ys,
                                             steps=config.deletion_steps)
  # Deleting to grey (RISE's constant) scatters out-of-distribution pixels that hurt any
  # order; deleting to a blurred copy removes only the information: report both.
  blur = dict(steps=config.deletion_steps, deletion_baseline='blur')
  blur_curves = metrics.deletion_insertion(model.apply, model.params, xs, maps, ys, **blur)
  random_blur = metrics.deletion_insertion(model.apply, model.params, xs, random_maps, ys,
                                           **blur)
  report['accuracy'] = float(np.mean(np.asarray(
      jnp.argmax(model.apply(model.params, xs), -1)) == ys))
  report['pointing_game'] = {
      'saliency': float(np.mean(hits)),
      'center_baseline': float(np.mean(metrics.center_baseline(ms))),
      'random_map': float(np.mean(metrics.pointing_game(random_maps, ms))),
      'tolerance': tolerance,
      'saliency_tolerant': float(np.mean(metrics.pointing_game(maps, ms, tolerance))),
      'center_baseline_tolerant': float(np.mean(metrics.center_baseline(ms, tolerance))),
      'random_map_tolerant': float(np.mean(metrics.pointing_game(random_maps, ms,
                                                                 tolerance))),
      'images': k}
  report['mask_mass'] = {'inside': _mean_std(mass.inside), 'area': _mean_std(mass.area)}
  report['deletion_auc'] = {'saliency': _mean_std(curves.deletion_auc),
                            'random_map': _mean_std(random_curves.deletion_auc),
                            'saliency_blur': _mean_std(blur_curves.deletion_auc),
                            'random_map_blur': _mean_std(random_blur.deletion_auc)}
  report['insertion_auc'] = {'saliency': _mean_std(curves.insertion_auc),
                             'random_map': _mean_std(random_curves.insertion_auc)}
  arrays.update(saliency=np.asarray(maps), fractions=np.asarray(curves.fractions),
                deletion_curve=np.asarray(curves.deletion_curve),
                blur_deletion_curve=np.asarray(blur_curves.deletion_curve),
                random_blur_deletion_curve=np.asarray(random_blur.deletion_curve),
                insertion_curve=np.asarray(curves.insertion_curve),
                random_deletion_curve=np.asarray(random_curves.deletion_curve),
                random_insertion_curve=np.asarray(random_curves.insertion_curve))

  # Fooling: each image towards a uniformly drawn other class.
  say('fooling')
  k = min(config.fooling_images, n)
  targets = (labels[:k] + rng.integers(1, model.num_classes, k)) % model.num_classes
  fooled = fooling_images(model.apply, model.params, x[:k], targets.astype(np.int32),
                          config.fooling_learning_rate, config.fooling_iterations,
                          cpu_kernels=model.cpu_kernels)
  report['fooling'] = metrics.fooling_summary(fooled)
  arrays.update(fooling_original=np.asarray(x[:k]), fooling_images=np.asarray(fooled.images),
                fooling_targets=targets, fooling_iterations=np.asarray(fooled.iterations))

  # Class visualisation: the course's algorithm, jitter scaled to the image size.
  say('class visualisation')
  classes = np.arange(model.num_classes if config.classviz_classes <= 0
                      else min(config.classviz_classes, model.num_classes))
  size = images_uint8.shape[1]
  viz = class_visualization(
      model.apply, model.params, classes, jax.random.fold_in(key, 2),
      image_shape=(size, size, 3), num_iterations=config.classviz_iterations,
      max_jitter=max(1, round(16 * size / 224)), clamp=model.valid_range(),
      cpu_kernels=model.cpu_kernels)
  report['class_visualization'] = metrics.class_visualization_summary(viz, classes)
  report['class_visualization']['per_class'] = {
      model.class_names[c]: float(p) for c, p in zip(classes, viz.target_probability)}
  arrays.update(classviz_images=np.asarray(viz.images), classviz_targets=classes)

  # Sanity checks (Adebayo et al.): plain gradients must depend on the weights.
  say('sanity checks: cascading and independent randomisation')
  k = min(config.sanity_images, n)
  saliency_fn = functools.partial(_saliency, model.apply, cpu_kernels=model.cpu_kernels)
  # Convolutions and linear layers; a batch norm's affine stays with the trained model
  # (the paper randomises weights; a redrawn BN scale barely differs from the trained one).
  layers = [name for name in metrics.parameterized_layers(model.params, model.apply, x[:1])
            if not name.endswith('.bn')]
  cascade = metrics.cascading_randomization(saliency_fn, model.params, x[:k], labels[:k],
                                            jax.random.fold_in(key, 3), layers)
  independent = metrics.independent_randomization(
      saliency_fn, model.params, x[:k], labels[:k], jax.random.fold_in(key, 3), layers,
      keep_maps=False)
  signed = metrics.cascading_randomization(
      metrics.input_gradient_fn(model.apply), model.params, x[:k], labels[:k],
      jax.random.fold_in(key, 3), layers, keep_maps=False)
  report['cascading_randomization'] = _sanity_dict(cascade)
  report['cascading_randomization']['signed_gradient_spearman'] = [
      float(v) for v in np.asarray(signed.spearman).mean(axis=1)]
  report['independent_randomization'] = _sanity_dict(independent)
  arrays.update(cascade_stages=np.asarray(cascade.stages), cascade_maps=np.asarray(cascade.maps),
                cascade_spearman=np.asarray(cascade.spearman),
                cascade_spearman_abs=np.asarray(cascade.spearman_abs),
                cascade_ssim=np.asarray(cascade.ssim),
                signed_spearman=np.asarray(signed.spearman),
                independent_stages=np.asarray(independent.stages),
                independent_spearman_abs=np.asarray(independent.spearman_abs),
                independent_ssim=np.asarray(independent.ssim))

  # Stability: the same input under two small noise draws gives nearly the same map.
  say('seed stability')
  stability = seed_stability(model, x[:k], labels[:k], config.stability_noise,
                             jax.random.fold_in(key, 4))
  report['seed_stability'] = {'noise_std': config.stability_noise,
                              'spearman': _mean_std(stability['spearman']),
                              'ssim': _mean_std(stability['ssim'])}
  return report, arrays


def _saliency(apply_fn, params, images, labels, cpu_kernels=None):
  return saliency_maps(apply_fn, params, images, labels, cpu_kernels=cpu_kernels)


def seed_stability(model: Model, images, labels, noise_std: float, key) -> dict:
  """Similarity of the saliency maps of the same images under two independent draws of
  small Gaussian input noise (std `noise_std` in normalised units).

  A trained model's maps should barely move (they reflect the object, not the pixel
  noise); the paper's randomised models are the contrast. Returns {'spearman', 'ssim'},
  each (N,).
  """
  first, second = jax.random.split(key)
  maps = [saliency_maps(model.apply, model.params,
                        images + noise_std * jax.random.normal(k, images.shape, images.dtype),
                        labels, cpu_kernels=model.cpu_kernels) for k in (first, second)]
  return {'spearman': np.asarray(metrics.spearman(*maps)),
          'ssim': np.asarray(metrics.ssim(metrics.normalize_maps(maps[0]),
                                          metrics.normalize_maps(maps[1])))}
