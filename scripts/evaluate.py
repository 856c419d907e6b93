"""Measures the methods against ground truth: pointing game, saliency mass in the mask,
deletion/insertion AUC, fooling success, class-visualisation probability, and the
randomisation sanity checks (jaxviz.evaluation).

  python scripts/evaluate.py [--model=shapes] [--output_json=outputs/evaluate/report.json]
  python scripts/evaluate.py --model=squeezenet1_1 --weights=imagenet --data=masked.npz

--data is 'shapes' (held-out generated images, seed --data_seed, never trained on) or an
.npz with `images` (N, H, W, 3) uint8 or float in [0, 1], `labels` (N,) class indices or
names, and `masks` (N, H, W) bool or `boxes` (N, 4) as x0, y0, x1, y1 pixels; it is read
and checked before the model loads. Prints a table; writes the JSON report, the figures
(saliency.png, deletion_insertion.png, sanity_cascading.png, sanity_independent.png,
class_visualization.png) and manifest.json into --output_dir.

  python scripts/evaluate.py --methods=all [--method_sanity_images=8]

adds every attribution method (or a comma list of jaxviz.attribution_methods()): a second
table with a row per method (pointing game at 0 px and at the scaled tolerance, mass in
the mask, deletion-to-blur and insertion AUC, cascading and independent randomisation),
the centre and random maps as controls (jaxviz.evaluation.evaluate_methods), under the
report's 'attribution_methods' key, and the figures methods_grid.png,
deletion_insertion_methods.png and sanity_cascading_<method>.png.
"""

import dataclasses
import json
import os
import sys
import textwrap
import time

import numpy as np
from absl import app, flags

import jaxviz
from jaxviz import checkpoint, data, evaluation, figures, shapes
from jaxviz.preprocess import check_images
import common

_MODEL = flags.DEFINE_enum('model', 'shapes', sorted(jaxviz.models.ARCHITECTURES) + ['shapes'],
                           'Model to evaluate.')
_WEIGHTS = flags.DEFINE_string('weights', None, "Default: 'trained' for shapes (trained on "
                               "first use), 'imagenet' for the others; or a weights file.")
_DATA = flags.DEFINE_string('data', 'shapes', "'shapes' or an .npz with masks or boxes.")
_DATA_SEED = flags.DEFINE_integer('data_seed', 1000, 'Seed of the generated evaluation images.',
                                  lower_bound=0)
_OUTPUT_DIR = flags.DEFINE_string('output_dir', os.path.join('outputs', 'evaluate'),
                                  'Where the figures and manifest go.')
_OUTPUT_JSON = flags.DEFINE_string('output_json', None,
                                   'The report (default: OUTPUT_DIR/report.json).')
_DEFAULTS = evaluation.EvalConfig()
_SALIENCY = flags.DEFINE_integer('saliency_images', _DEFAULTS.saliency_images, 'Images for '
                                 'the pointing game, mask mass and deletion/insertion.',
                                 lower_bound=1)
_STEPS = flags.DEFINE_integer('deletion_steps', _DEFAULTS.deletion_steps,
                              'Points of the deletion and insertion curves, minus one.',
                              lower_bound=1)
_FOOLING = flags.DEFINE_integer('fooling_images', _DEFAULTS.fooling_images, 'Images to fool.',
                                lower_bound=1)
_CLASSVIZ = flags.DEFINE_integer('classviz_iterations', _DEFAULTS.classviz_iterations,
                                 'Class-visualisation steps.', lower_bound=1)
_CLASSES = flags.DEFINE_integer('classviz_classes', _DEFAULTS.classviz_classes,
                                'Classes to visualise (0: all).', lower_bound=0)
_SANITY = flags.DEFINE_integer('sanity_images', _DEFAULTS.sanity_images,
                               'Images for the randomisation sanity checks.', lower_bound=1)
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of fooling targets, jitter, re-inits.',
                             lower_bound=0)
_METHODS = flags.DEFINE_list(
    'methods', ['saliency'], "'saliency' (default): the course's evaluation above, the "
    "plain gradient only. 'all' or a list of jaxviz.attribution_methods() adds the methods "
    'table: every metric for each method (its first --saliency_images images, '
    '--deletion_steps) with the centre and random maps as controls.')
_M = evaluation.MethodsConfig()
_METHOD_SANITY = flags.DEFINE_integer(
    'method_sanity_images', _M.sanity_images, 'Methods table: images for the '
    "randomisation checks of each method.", lower_bound=1)
_SG_SAMPLES = flags.DEFINE_integer('smoothgrad_samples', _M.smoothgrad_samples,
                                   'Methods table: SmoothGrad samples.', lower_bound=1)
_SG_SANITY = flags.DEFINE_integer('sanity_smoothgrad_samples', _M.sanity_smoothgrad_samples,
                                  "Methods table: SmoothGrad's samples inside the "
                                  'randomisation checks.', lower_bound=1)
_IG_STEPS = flags.DEFINE_integer('ig_steps', _M.ig_steps, 'Methods table: integrated '
                                 'gradients steps (Gauss-Legendre).', lower_bound=1)
_WINDOW = flags.DEFINE_integer('occlusion_window', _M.occlusion_window,
                               'Methods table: occlusion square, px.', lower_bound=1)
_STRIDE = flags.DEFINE_integer('occlusion_stride', _M.occlusion_stride,
                               'Methods table: occlusion stride, px.', lower_bound=1)
_CAM_LAYER = flags.DEFINE_string('grad_cam_layer', None, "Methods table: Grad-CAM's layer "
                                 "(default: the model's last feature map).")


def load_masked(spec: str, count: int, seed: int):
  """(uint8 images, labels, bool masks) from 'shapes' or an .npz, checked without a model:
  the labels are class indices for 'shapes', the .npz's names or indices otherwise."""
  if spec == 'shapes':
    generated = shapes.generate(count, seed)
    return generated.images, generated.labels, generated.masks
  if not spec.endswith('.npz') or not os.path.isfile(spec):
    raise jaxviz.InputError(f"--data must be 'shapes' or an existing .npz, got {spec!r}")
  try:
    with np.load(spec, allow_pickle=False) as f:
      arrays = {k: f[k] for k in f.files}
  except (ValueError, OSError, EOFError) as e:
    raise jaxviz.InputError(f'cannot read {spec}: {e}') from None
  for key in ('images', 'labels'):
    if key not in arrays:
      raise jaxviz.InputError(f'{spec} has no `{key}` array')
  images = data.npz_images(np.asarray(check_images(arrays['images'], allow_single=False)),
                           spec)
  n, h, w = images.shape[:3]
  labels = np.asarray(arrays['labels'])
  if 'masks' in arrays:
    masks = arrays['masks']
    if masks.dtype != bool and not np.isin(masks, (0, 1)).all():
      raise jaxviz.InputError(f'{spec}: masks must be boolean or 0/1, got {masks.dtype} '
                              'with other values')
    masks = masks.astype(bool)
  elif 'boxes' in arrays:
    boxes = np.asarray(arrays['boxes'], np.float64)
    if boxes.shape != (n, 4):
      raise jaxviz.InputError(f'{spec}: boxes must be ({n}, 4), got {boxes.shape}')
    bad = np.flatnonzero(~np.isfinite(boxes).all(axis=1))
    if bad.size:
      raise jaxviz.InputError(f'{spec}: boxes of image(s) {bad.tolist()} hold NaN or inf')
    ys, xs = np.mgrid[:h, :w] + 0.5
    masks = ((xs >= boxes[:, 0, None, None]) & (xs <= boxes[:, 2, None, None])
             & (ys >= boxes[:, 1, None, None]) & (ys <= boxes[:, 3, None, None]))
  else:
    raise jaxviz.InputError(f'{spec} has neither `masks` nor `boxes`')
  if masks.shape != (n, h, w) or labels.shape != (n,):
    raise jaxviz.InputError(f'{spec}: masks {masks.shape} / labels {labels.shape} do not '
                            f'match {n} images of {h}x{w}')
  return images, labels, masks


def print_table(report: dict):
  pg, dl, ins = report['pointing_game'], report['deletion_auc'], report['insertion_auc']
  fool, viz = report['fooling'], report['class_visualization']
  cas, ind = report['cascading_randomization'], report['independent_randomization']
  rows = [
      ('accuracy on the evaluation images', f'{report["accuracy"]:.3f}'),
      ('pointing game: saliency / centre / random map',
       f'{pg["saliency"]:.3f} / {pg["center_baseline"]:.3f} / {pg["random_map"]:.3f}'),
      (f'  same, {pg["tolerance"]} px tolerance (Zhang et al.\'s 15 px at 224)',
       f'{pg["saliency_tolerant"]:.3f} / {pg["center_baseline_tolerant"]:.3f} / '
       f'{pg["random_map_tolerant"]:.3f}'),
      ('saliency mass in mask / mask area', f'{report["mask_mass"]["inside"]["mean"]:.3f} / '
       f'{report["mask_mass"]["area"]["mean"]:.3f}'),
      ('deletion AUC, grey: saliency / random (lower better)',
       f'{dl["saliency"]["mean"]:.3f} / {dl["random_map"]["mean"]:.3f}'),
      ('deletion AUC, blur: saliency / random (lower better)',
       f'{dl["saliency_blur"]["mean"]:.3f} / {dl["random_map_blur"]["mean"]:.3f}'),
      ('insertion AUC: saliency / random (higher better)',
       f'{ins["saliency"]["mean"]:.3f} / {ins["random_map"]["mean"]:.3f}'),
      ('fooling: success, mean iterations, rel. L2, rel. Linf',
       f'{fool["success_rate"]:.3f}, {fool["iterations_mean"]:.1f}, '
       f'{fool["relative_l2_mean"]:.4f}, {fool["relative_linf_mean"]:.4f}'),
      ('class viz: mean / min target p, classified as target',
       f'{viz["target_probability_mean"]:.3f} / {viz["target_probability_min"]:.3f}, '
       f'{viz["classified_as_target"]:.2f}'),
      ('cascading: Spearman |.| after logits / all layers',
       f'{cas["spearman_abs"][1]:.3f} / {cas["spearman_abs"][-1]:.3f}'),
      ('cascading: SSIM after logits / all layers',
       f'{cas["ssim"][1]:.3f} / {cas["ssim"][-1]:.3f}'),
      ('independent: Spearman |.| min / max over layers',
       f'{min(ind["spearman_abs"][1:]):.3f} / {max(ind["spearman_abs"][1:]):.3f}'),
      ('seed stability: Spearman, SSIM',
       f'{report["seed_stability"]["spearman"]["mean"]:.3f}, '
       f'{report["seed_stability"]["ssim"]["mean"]:.3f}'),
  ]
  width = max(len(r[0]) for r in rows)
  for name, value in rows:
    print(f'  {name:<{width}}  {value}')


def methods_table(report: dict) -> list[str]:
  """The methods table's lines: one row per method, then the centre and random maps."""
  tol = report['tolerance']
  head = ('method', 'PG 0px', f'PG {tol}px', 'mass', 'del blur', 'ins',
          'casc rho logits/all', 'casc SSIM logits/all', 'indep rho min/max')
  rows = []
  for group in ('methods', 'baselines'):
    for name, r in report[group].items():
      cells = [name, f'{r["pointing_game"]:.3f}', f'{r["pointing_game_tolerant"]:.3f}',
               f'{r["mask_mass"]["mean"]:.3f}', f'{r["deletion_auc_blur"]["mean"]:.3f}',
               f'{r["insertion_auc"]["mean"]:.3f}']
      if group == 'methods':
        cells += [f'{r["cascading_spearman_abs_logits"]:.3f} / '
                  f'{r["cascading_spearman_abs_all"]:.3f}',
                  f'{r["cascading_ssim_logits"]:.3f} / {r["cascading_ssim_all"]:.3f}',
                  f'{r["independent_spearman_abs_min"]:.3f} / '
                  f'{r["independent_spearman_abs_max"]:.3f}']
      else:
        cells += ['-'] * 3
      rows.append(cells)
  zero = [f'{name} {r["cascading_randomization"]["all_zero"][1]:.2f} / '
          f'{r["cascading_randomization"]["all_zero"][-1]:.2f}'
          for name, r in report['methods'].items()
          if max(r['cascading_randomization']['all_zero']) > 0]
  widths = [max(len(row[i]) for row in [head] + rows) for i in range(len(head))]
  line = lambda cells: '  '.join(c.ljust(w) if i == 0 else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
  return [line(head), line(['-' * w for w in widths])] + [line(r) for r in rows] + textwrap.wrap(
      f'PG: pointing game on {report["images"]} images (a hit only if every maximal pixel '
      f'is on the object, or within {tol} px); mass: share of the map in the mask (mask '
      f'area {report["mask_area"]["mean"]:.3f}); del blur / ins: deletion to a blurred copy '
      '(lower better) / insertion into it (higher better), AUC of the label\'s '
      f'probability; casc / indep: Adebayo et al.\'s randomisation on '
      f'{report["sanity_images"]} images, Spearman of |map| (and SSIM) with the trained '
      "model's maps after randomising the logits layer / all layers (cascading), one layer "
      'at a time (independent): high = the map ignores the weights.', 100) + (
      textwrap.wrap('All-zero maps after randomising the logits layer / all layers (their '
                    'SSIM only measures how sparse the trained map is): ' + ', '.join(zero),
                    100) if zero else [])


def write_method_figures(model: jaxviz.Model, images, labels, masks, report, arrays,
                         out: str) -> list[str]:
  """methods_grid.png (images x methods), deletion_insertion_methods.png and
  sanity_cascading_<method>.png per method; returns the file names."""
  names = list(report['methods'])
  k = min(6, len(arrays[names[0]]['maps']))
  rgb = images[:k] / 255.0
  titles = [model.class_names[c] for c in labels[:k]]
  written = ['methods_grid.png', 'deletion_insertion_methods.png']
  figures.save(figures.attribution_grid_figure(
      rgb, {name: arrays[name]['maps'][:k] for name in names}, titles,
      f'{model.name}: attribution maps of the true class'),
      os.path.join(out, written[0]))
  controls = {'random map': arrays['random_map'], 'centre map': arrays['center_map']}
  curves = {name: arrays[name] for name in names} | controls
  figures.save(figures.deletion_insertion_figure(
      arrays[names[0]]['fractions'],
      {name: c['deletion_curve'] for name, c in curves.items()},
      {name: c['insertion_curve'] for name, c in curves.items()},
      f'{model.name}: deletion and insertion (blurred baseline)'),
      os.path.join(out, written[1]))
  for name in names:
    a = arrays[name]
    path = f'sanity_cascading_{name}.png'
    figures.save(figures.sanity_check_figure(
        arrays['stages'], {'Spearman (abs)': a['cascade_spearman_abs'], 'SSIM': a['cascade_ssim']},
        maps=a['cascade_maps'][:, :3],
        suptitle=f'{model.name}, {name}: cascading randomisation (Adebayo et al. 2018)'),
        os.path.join(out, path))
    written.append(path)
  return written


def write_figures(model: jaxviz.Model, images, labels, masks, arrays, out: str):
  k = min(8, len(arrays['saliency']))
  rgb = images[:k] / 255.0
  fig = figures.saliency_figure(rgb, arrays['saliency'][:k], [model.class_names[c] for c in labels[:k]],
                                f'{model.name}: saliency of the true class')
  figures.save(fig, os.path.join(out, 'saliency.png'))
  figures.save(figures.deletion_insertion_figure(
      arrays['fractions'],
      {'saliency (grey)': arrays['deletion_curve'],
       'random map (grey)': arrays['random_deletion_curve'],
       'saliency (blur)': arrays['blur_deletion_curve'],
       'random map (blur)': arrays['random_blur_deletion_curve']},
      {'saliency': arrays['insertion_curve'], 'random map': arrays['random_insertion_curve']},
      f'{model.name}: deletion and insertion'), os.path.join(out, 'deletion_insertion.png'))
  stages = [str(s) for s in arrays['cascade_stages']]
  figures.save(figures.sanity_check_figure(
      stages, {'Spearman (abs)': arrays['cascade_spearman_abs'],
               'Spearman (signed gradient)': arrays['signed_spearman'],
               'SSIM': arrays['cascade_ssim']},
      maps=arrays['cascade_maps'][:, :2],
      suptitle=f'{model.name}: cascading randomisation (Adebayo et al. 2018)'),
      os.path.join(out, 'sanity_cascading.png'))
  figures.save(figures.sanity_check_figure(
      [str(s) for s in arrays['independent_stages']],
      {'Spearman (abs)': arrays['independent_spearman_abs'],
       'SSIM': arrays['independent_ssim']},
      suptitle=f'{model.name}: independent randomisation'),
      os.path.join(out, 'sanity_independent.png'))
  targets = arrays['classviz_targets']
  figures.save(figures.class_visualization_figure(
      common.to_rgb01(model, arrays['classviz_images']),
      [model.class_names[t] for t in targets], f'{model.name}: class visualisation'),
      os.path.join(out, 'class_visualization.png'))


@common.one_line_errors
def main(argv):
  del argv
  common.check_flags(__name__)  # counts >= 1, --data, --output_dir and --output_json
  config = evaluation.EvalConfig(
      saliency_images=_SALIENCY.value, deletion_steps=_STEPS.value,
      fooling_images=_FOOLING.value, classviz_iterations=_CLASSVIZ.value,
      classviz_classes=_CLASSES.value, sanity_images=_SANITY.value, seed=_SEED.value)
  methods = None
  if _METHODS.value != ['saliency']:
    methods = evaluation.resolve_methods(
        ['gradient' if name.strip() == 'saliency' else name for name in _METHODS.value])
    method_config = evaluation.MethodsConfig(
        localization_images=_SALIENCY.value, deletion_steps=_STEPS.value,
        sanity_images=_METHOD_SANITY.value, smoothgrad_samples=_SG_SAMPLES.value,
        sanity_smoothgrad_samples=_SG_SANITY.value, ig_steps=_IG_STEPS.value,
        occlusion_window=_WINDOW.value, occlusion_stride=_STRIDE.value,
        grad_cam_layer=_CAM_LAYER.value, seed=_SEED.value)
    method_sanity = method_config.sanity_images
  else:
    method_sanity = 0
  count = max(config.saliency_images, config.fooling_images, config.sanity_images,
              method_sanity)
  images, labels, masks = load_masked(_DATA.value, count, _DATA_SEED.value)
  common.enable_compilation_cache()
  model = (jaxviz.load_model(_MODEL.value, _WEIGHTS.value) if _MODEL.value == 'shapes'
           else common.resolve_model(_MODEL.value, _WEIGHTS.value or 'imagenet'))
  if _DATA.value != 'shapes':
    labels = common.class_indices(model, list(labels))
  if methods is not None:
    evaluation.check_methods_config(model, methods, method_config)
  say = lambda text: print(f'[evaluate] {text}', file=sys.stderr, flush=True)
  start = time.perf_counter()
  report, arrays = evaluation.evaluate(model, images, labels, masks, config, progress=say)
  report['config'] = dataclasses.asdict(config)
  report['seconds'] = time.perf_counter() - start
  if methods is not None:
    start = time.perf_counter()
    method_report, method_arrays = evaluation.evaluate_methods(
        model, images, labels, masks, methods, method_config, progress=say)
    method_report['config'] = dataclasses.asdict(method_config)
    method_report['seconds']['total'] = time.perf_counter() - start
    report['attribution_methods'] = method_report
  report['data'] = _DATA.value if _DATA.value != 'shapes' else f'shapes seed {_DATA_SEED.value}'
  report['weights'] = {k: v for k, v in model.metadata.items() if k != 'class_names'}
  out = _OUTPUT_DIR.value
  path = _OUTPUT_JSON.value or os.path.join(out, 'report.json')
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  checkpoint.atomic_write(path, lambda f: f.write(
      json.dumps(report, indent=2, default=str).encode()))
  write_figures(model, images, labels, masks, arrays, out)
  if methods is not None:
    write_method_figures(model, images, labels, masks, method_report, method_arrays, out)
  common.write_manifest(out, common.script_flags(), model)
  print(f'{model.name} ({common.weights_label(model)}), {report["data"]}:')
  print_table(report)
  if methods is not None:
    seconds = method_report['seconds']
    print(f'attribution methods ({seconds["total"]:.0f} s; the course\'s evaluation above '
          f'{report["seconds"]:.0f} s):')
    for line in methods_table(method_report):
      print(f'  {line}')
  print(f'wrote {path} and the figures in {out}')


if __name__ == '__main__':
  app.run(main, flags_parser=common.parse_flags)
