"""Runs every metric of `jaxviz.metrics` on a model and a masked image set: one call, one
JSON-ready report. `scripts/evaluate.py` is its command line.

The report's keys are named after the metrics: pointing_game, mask_mass, deletion_auc,
insertion_auc, fooling, class_visualization, cascading_randomization,
independent_randomization, seed_stability.

`evaluate_methods` runs the localisation, faithfulness and randomisation metrics on every
attribution method of `jaxviz.attribution_methods()` (one row each), with a centre map
and a random map as controls.
"""

import dataclasses
import functools
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz import metrics, validation
from jaxviz.errors import InputError
from jaxviz.loading import Model
from jaxviz.methods import (attribution_maps, class_visualization, fooling_images,
                            saliency_maps)
from jaxviz.methods import methods as registered_methods
from jaxviz.methods.layers import resolve_layer


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


# --- Every attribution method on the same metrics -------------------------------------------

BASELINES = ('center_map', 'random_map')


@dataclasses.dataclass(frozen=True)
class MethodsConfig:
  """How `evaluate_methods` runs each attribution method (defaults: the shapes model's
  64 px images; the methods table in docs/validation.md).

  Attributes:
    localization_images: images for the pointing game, mask mass and deletion/insertion.
    deletion_steps: chunks of the deletion and insertion curves (both to a blurred copy).
    sanity_images: images for the cascading and independent randomisation of each method
      (each runs 2 x (layers + 1) times per method: 35 maps of every image on ShapesNet).
    smoothgrad_samples, smoothgrad_noise: Smilkov et al.'s 50 samples and 15% noise.
    sanity_smoothgrad_samples: SmoothGrad's samples inside the randomisation checks (the
      checks compare maps of the same noise draw, so fewer samples bound their time
      without biasing the comparison; the trained-model maps they start from use these
      too).
    ig_steps, ig_rule: integrated gradients' quadrature (32 Gauss-Legendre nodes: well
      below 1% completeness gap on ShapesNet, see `integrated_gradients`' gap).
    occlusion_window, occlusion_stride: Zeiler & Fergus's grey square (the dataset's mean
      colour, 0 in normalised units): their 16 / 8 px at 224 px scaled to the image,
      5 / 2 px on the 64 px shapes images, as scripts/attribution.py draws it. A
      coarser 8 / 4 px runs ~3.4x faster, but its map is constant on 4x4 blocks, and the
      pointing game at 0 px needs all of such a plateau on the object (docs/validation.md).
    grad_cam_layer: Grad-CAM's (and guided Grad-CAM's) layer; None: the model's default
      (`jaxviz.methods.layers.DEFAULT_LAYERS`, ShapesNet's 'features.8', 4x4 at 64 px:
      its upsampled maximum is often a plateau, which the pointing game's 'all' rule
      counts as a miss unless all of it is on the object; 'features.6', 8x8, localises
      better on the shapes model: pointing game 0.735 / 0.955 at 0 / 4 px against 0.430 /
      0.770, 200 images of seed 1000).
    seed: drives SmoothGrad's noise, the random maps and the re-initialisations.
  """
  localization_images: int = 200
  deletion_steps: int = 32
  sanity_images: int = 8
  smoothgrad_samples: int = 50
  smoothgrad_noise: float = 0.15
  sanity_smoothgrad_samples: int = 16
  ig_steps: int = 32
  ig_rule: str = 'gausslegendre'
  occlusion_window: int = 5
  occlusion_stride: int = 2
  grad_cam_layer: str | None = None
  seed: int = 0

  def __post_init__(self):
    for field in dataclasses.fields(self):
      if field.name in ('ig_rule', 'grad_cam_layer'):
        continue
      integer = field.type in ('int', int)
      validation.check_positive(getattr(self, field.name), field.name, integer=integer,
                                zero=field.name in ('seed', 'smoothgrad_noise'))
    if self.grad_cam_layer is not None and not isinstance(self.grad_cam_layer, str):
      raise InputError(f'grad_cam_layer must be a layer name or None, got '
                       f'{self.grad_cam_layer!r}')


# Images per compiled chunk: the methods that run many passes per image (SmoothGrad's
# samples, IG's steps, occlusion's windows) vmap them, so fewer images at a time bound the
# memory (a few hundred 64 px passes per chunk).
_CHUNKS = {'smoothgrad': 4, 'integrated_gradients': 8, 'occlusion': 2}


def method_options(method: str, config: MethodsConfig = MethodsConfig(),
                   sanity: bool = False) -> dict:
  """The keyword options `evaluate_methods` passes `jaxviz.attribution_maps` for `method`
  (with sanity=True: inside the randomisation checks)."""
  if method == 'smoothgrad':
    return {'samples': config.sanity_smoothgrad_samples if sanity
            else config.smoothgrad_samples, 'noise_level': config.smoothgrad_noise}
  if method == 'integrated_gradients':
    return {'steps': config.ig_steps, 'rule': config.ig_rule}
  if method == 'occlusion':
    return {'window': config.occlusion_window, 'stride': config.occlusion_stride}
  if method in ('grad_cam', 'guided_grad_cam') and config.grad_cam_layer is not None:
    return {'layer': config.grad_cam_layer}
  return {}


def resolve_methods(names) -> tuple[str, ...]:
  """Registered attribution-method names: 'all' expands to every one, in registry order;
  duplicates are dropped; an unknown name is a one-line InputError."""
  known = registered_methods()
  out = []
  for name in ([names] if isinstance(names, str) else list(names)):
    name = str(name).strip()
    for one in (known if name == 'all' else (name,)):
      if one not in known:
        raise InputError(f'unknown attribution method {one!r}; registered: '
                         f'{", ".join(known)} (or all)')
      if one not in out:
        out.append(one)
  if not out:
    raise InputError('no attribution methods to evaluate')
  return tuple(out)


def check_methods_config(model: Model, methods, config: MethodsConfig):
  """A one-line InputError, before any work, for a Grad-CAM layer `model` lacks (or a
  model with no default layer) when a Grad-CAM method is among `methods`."""
  if {'grad_cam', 'guided_grad_cam'} & set(resolve_methods(methods)):
    resolve_layer(model, config.grad_cam_layer, 'grad_cam')


def method_maps(model: Model, method: str, images, labels, *, params=None, key=None,
                config: MethodsConfig = MethodsConfig(), sanity: bool = False):
  """(N, H, W) non-negative maps of `method` as the metrics take them.

  Pixel methods are reduced by max |.| over RGB (Simonyan et al.; the plain gradient's
  map is then exactly `saliency_maps`), Grad-CAM is upsampled bilinearly to the image.
  Occlusion's attribution is a signed score drop (negative where hiding a patch raises
  the class score): it is clipped at 0 here, keeping the evidence *for* the class,
  because the mask mass needs a non-negative map (a distribution over pixels) and the
  other metrics should see the same map; the clipped pixels tie at 0 and are deleted last,
  in row-major order.
  """
  maps = attribution_maps(
      model, method, images, labels, params=params, key=key,
      chunk_size=_CHUNKS.get(method, 32), **method_options(method, config, sanity))
  return jnp.maximum(maps, 0.0) if method == 'occlusion' else maps


def _localization(model, xs, ys, ms, maps, tolerance, steps) -> tuple[dict, dict]:
  curves = metrics.deletion_insertion(model.apply, model.params, xs, maps, ys, steps=steps,
                                      deletion_baseline='blur', insertion_baseline='blur')
  mass = metrics.mask_mass(maps, ms)
  row = {'pointing_game': float(np.mean(metrics.pointing_game(maps, ms))),
         'pointing_game_tolerant': float(np.mean(metrics.pointing_game(maps, ms, tolerance))),
         'mask_mass': _mean_std(mass.inside),
         'deletion_auc_blur': _mean_std(curves.deletion_auc),
         'insertion_auc': _mean_std(curves.insertion_auc)}
  return row, {'deletion_curve': np.asarray(curves.deletion_curve),
               'insertion_curve': np.asarray(curves.insertion_curve),
               'fractions': np.asarray(curves.fractions)}


def _sanity_summary(cascade: metrics.SanityCheck, independent: metrics.SanityCheck) -> dict:
  cas, ind = _sanity_dict(cascade), _sanity_dict(independent)
  # A map that is zero everywhere (Grad-CAM's ReLU once the class weights are random)
  # has no ranks and an SSIM that only measures how sparse the trained map is: count them.
  maps = np.asarray(cascade.maps)
  cas['all_zero'] = [float(v) for v in (maps.reshape(*maps.shape[:2], -1).max(-1) <= 0).mean(1)]
  return {'cascading_spearman_abs_logits': cas['spearman_abs'][1],
          'cascading_spearman_abs_all': cas['spearman_abs'][-1],
          'cascading_ssim_logits': cas['ssim'][1],
          'cascading_ssim_all': cas['ssim'][-1],
          'independent_spearman_abs_min': min(ind['spearman_abs'][1:]),
          'independent_spearman_abs_max': max(ind['spearman_abs'][1:]),
          'cascading_randomization': cas, 'independent_randomization': ind}


def evaluate_methods(model: Model, images_uint8: np.ndarray, labels: np.ndarray,
                     masks: np.ndarray, methods=('gradient',),
                     config: MethodsConfig = MethodsConfig(),
                     progress: Callable[[str], None] | None = None) -> tuple[dict, dict]:
  """Every attribution method on the same images and metrics: one row per method.

  Each method's maps (`method_maps`) on the first `config.localization_images` images
  are scored by the pointing game (at 0 px, and at Zhang et al.'s 15 px scaled from 224
  px to the image: 4 px at 64), the mass in the mask, and the deletion (to a blurred
  copy) and insertion AUCs; on the first `config.sanity_images` by Adebayo et al.'s
  cascading and independent randomisation (every convolution and linear layer; batch
  norms stay trained, as in `evaluate`), Spearman of |map| and SSIM against the trained
  model's maps. A centre map and a uniform random map are the controls (no sanity
  rows: they do not read the model).

  Args:
    model: a loaded `Model`.
    images_uint8, labels, masks: as for `evaluate`.
    methods: registered attribution-method names, or 'all' (`resolve_methods`).
    config: a `MethodsConfig`.
    progress: called with a short description before each part.

  Returns:
    (report, arrays). report: {'methods': {name: row}, 'baselines': {name: row},
    'options', 'tolerance', 'images', 'sanity_images', 'mask_area', 'seconds'}, each
    row with 'pointing_game', 'pointing_game_tolerant', 'mask_mass', 'deletion_auc_blur',
    'insertion_auc' and (methods only) the randomisation summaries and their per-stage
    curves. arrays: {name: {'maps', 'deletion_curve', 'insertion_curve', 'fractions'
    and, for methods, 'cascade_maps', 'cascade_spearman_abs', 'cascade_ssim',
    'independent_spearman_abs', 'independent_ssim'}}, plus 'stages' and
    'independent_stages'.
  """
  methods = resolve_methods(methods)
  images_uint8, labels, masks = np.asarray(images_uint8), np.asarray(labels), np.asarray(masks)
  n = len(images_uint8)
  if labels.shape != (n,) or masks.shape != images_uint8.shape[:3]:
    raise InputError(f'labels {labels.shape} and masks {masks.shape} must match the '
                     f'images {images_uint8.shape}')
  check_methods_config(model, methods, config)
  say = progress or (lambda text: None)
  key = jax.random.key(config.seed)
  x = model.preprocess(images_uint8)
  k = min(config.localization_images, n)
  xs, ys, ms = x[:k], labels[:k], masks[:k]
  h, w = xs.shape[1:3]
  # Zhang et al. count a hit within 15 pixels of the object at ~224 pixels: scaled here.
  tolerance = max(1, round(15 * h / 224))
  ks = min(config.sanity_images, n)
  layers = [name for name in metrics.parameterized_layers(model.params, model.apply, x[:1])
            if not name.endswith('.bn')]
  report = {'model': model.name, 'images': k, 'sanity_images': ks, 'tolerance': tolerance,
            'mask_area': _mean_std(metrics.mask_mass(jnp.ones(ms.shape), ms).area),
            'options': {m: method_options(m, config) for m in methods},
            'methods': {}, 'baselines': {}, 'seconds': {}}
  if 'smoothgrad' in methods:
    report['options']['smoothgrad_sanity'] = method_options('smoothgrad', config, True)
  arrays = {}

  centre = metrics.center_map(h, w)
  controls = {'center_map': jnp.broadcast_to(centre - centre.min(), ms.shape),
              'random_map': jax.random.uniform(jax.random.fold_in(key, 1), ms.shape)}
  for name, maps in controls.items():
    row, curves = _localization(model, xs, ys, ms, maps, tolerance, config.deletion_steps)
    report['baselines'][name] = row
    arrays[name] = {'maps': np.asarray(maps[:8]), **curves}

  method_key = jax.random.fold_in(key, 5)
  for method in methods:
    start = time.perf_counter()
    say(f'{method}: maps of {k} images, pointing game, mask mass, deletion and insertion')
    maps = method_maps(model, method, xs, ys, key=method_key, config=config)
    row, curves = _localization(model, xs, ys, ms, maps, tolerance, config.deletion_steps)
    middle = time.perf_counter()
    say(f'{method}: cascading and independent randomisation of {len(layers)} layers, '
        f'{ks} images')

    def saliency_fn(params, images, labels, method=method):
      # The same key at every stage: SmoothGrad's maps differ only by the weights.
      return method_maps(model, method, images, labels, params=params, key=method_key,
                         config=config, sanity=True)

    sanity_key = jax.random.fold_in(key, 3)
    cascade = metrics.cascading_randomization(saliency_fn, model.params, x[:ks], labels[:ks],
                                              sanity_key, layers)
    independent = metrics.independent_randomization(saliency_fn, model.params, x[:ks],
                                                     labels[:ks], sanity_key, layers,
                                                     keep_maps=False)
    row.update(_sanity_summary(cascade, independent))
    end = time.perf_counter()
    report['methods'][method] = row
    report['seconds'][method] = {'localization': middle - start, 'sanity': end - middle}
    arrays[method] = {'maps': np.asarray(maps), **curves,
                      'cascade_maps': np.asarray(cascade.maps),
                      'cascade_spearman_abs': np.asarray(cascade.spearman_abs),
                      'cascade_ssim': np.asarray(cascade.ssim),
                      'independent_spearman_abs': np.asarray(independent.spearman_abs),
                      'independent_ssim': np.asarray(independent.ssim)}
    arrays['stages'] = list(cascade.stages)
    arrays['independent_stages'] = list(independent.stages)
  return report, arrays
