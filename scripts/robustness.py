"""Robust accuracy against the attack budget (jaxviz.robustness.robust_accuracy): the
model's accuracy on untargeted FGSM, PGD-Linf and PGD-L2 images at each epsilon, and the
course's fooling method on the same images, its perturbations in the same pixel units.

  python scripts/robustness.py [--model=shapes] [--num_images=200] [--steps=10]
      [--linf_epsilons=0,1/255,2/255,4/255,8/255,16/255] [--l2_epsilons=0,0.25,0.5,1,2]
      [--attacks=fgsm,pgd,pgd_l2] [--fooling_lr=1 --fooling_iterations=100]
  python scripts/robustness.py --model=squeezenet1_1 --images=samples --num_images=0

--model is an architecture, NAME:SEED for the shapes model of another training seed
(shapes:1) or a random init's seed. The shapes model is measured on generated images of
--data_seed (held out: it trains on the streams (seed, 0) and is tested on (seed, 1));
other models on --images with labels ('samples', an .npz with `labels`, a folder is not
enough). Epsilons are pixel units, numbers or fractions (8/255 is 8 grey levels).
Writes robustness.json, robustness.png (accuracy against epsilon: a Linf panel in grey
levels and an L2 panel, the course's method marked) and manifest.json into --output_dir.
"""

import json
import os
import sys

from absl import app, flags

import jaxviz
from jaxviz import checkpoint, figures, robustness
import common

_MODEL = flags.DEFINE_string('model', 'shapes', 'NAME or NAME:SEED (shapes:1: the shapes '
                             'model of training seed 1).')
_ATTACKS = flags.DEFINE_list('attacks', list(robustness.DEFAULT_ATTACKS),
                             f'Attacks, untargeted: {", ".join(robustness.ATTACKS)}.')
_LINF = flags.DEFINE_list('linf_epsilons', ['0', '1/255', '2/255', '4/255', '8/255', '16/255'],
                          'Budgets of the Linf attacks, pixel units.')
_L2 = flags.DEFINE_list('l2_epsilons', ['0', '0.25', '0.5', '1', '2'],
                        'Budgets of the L2 attacks, pixel units over all H * W * 3 values.')
_STEPS = flags.DEFINE_integer('steps', 10, 'Steps of the iterative attacks (step size '
                              '2.5 * epsilon / steps).', lower_bound=1)
_FOOLING = flags.DEFINE_bool('fooling', True, "Also run the course's fooling method.")
_FOOLING_LR = flags.DEFINE_float('fooling_lr', 1.0, "The course's fooling method: step "
                                 'length in the normalised space (the course: 1).')
_FOOLING_ITERATIONS = flags.DEFINE_integer('fooling_iterations', 100, "The course's fooling "
                                           'method: cap on steps (the course: 100).',
                                           lower_bound=0)
_BATCHING = flags.DEFINE_enum('batching', 'vmap', list(robustness.EPSILON_BATCHING),
                              "'vmap': one program over all epsilons (~30% faster on two "
                              "CPU cores); 'loop': the compiled attack run once per epsilon, "
                              'each timed and reported (docs/attacks.md).')
_STUDY = common.define_study_flags('robustness', 'Seed of PGD\'s random starts and the '
                                  'fooling targets.')
flags.adopt_module_key_flags(common)


def epsilons(values, flag: str, maximum: float | None) -> list[float]:
  return [common.parse_epsilon(v.strip(), flag, maximum) for v in values]


def print_table(report: dict):
  print(f'  clean accuracy {report["clean_accuracy"]:.3f} ({report["correct"]} of '
        f'{report["images"]} images)')
  for name, r in report['attacks'].items():
    linf = r['norm'] == 'linf'
    print(f'  {name} ({r["norm"]}, {r["steps"]} step(s)), {r["seconds_total"]:.1f} s:')
    print(f'    {"epsilon":>10}  {"accuracy":>8}  {"success":>8}  {"median Linf":>11}  '
          f'{"median L2":>9}')
    for k, e in enumerate(r['epsilons']):
      label = f'{e * 255:.4g}/255' if linf else f'{e:.4g}'
      success = r['success_rate'][k]
      print(f'    {label:>10}  {r["accuracy"][k]:8.3f}  '
            f'{"-" if success is None else f"{success:.3f}":>8}  '
            f'{r["linf_255_median"][k]:9.3g}/255  {r["l2_median"][k]:9.3g}')
  naive = report.get('naive')
  if naive:
    med = lambda d: '-' if d['median'] is None else f'{d["median"]:.3g}'
    print(f"  course's fooling method (lr {naive['learning_rate']:g}, at most "
          f"{naive['iterations']} steps, towards a random other class), "
          f"{naive['seconds']:.1f} s: success {naive['success_rate']:.3f} (still fooled as "
          f"8-bit RGB: {naive['success_after_uint8']:.3f}); median over the fooled images: "
          f"Linf {med(naive['linf_255'])}/255, L2 {med(naive['l2'])}, "
          f"{med(naive['steps'])} steps")


@common.one_line_errors
def main(argv):
  del argv
  common.check_flags(__name__)  # --fooling_lr > 0, lists not empty, --output_dir writable
  name, _ = robustness.parse_model_spec(_MODEL.value)
  attack_names = tuple(a.strip() for a in _ATTACKS.value)
  plan = {'linf': epsilons(_LINF.value, '--linf_epsilons', 1.0),
          'l2': epsilons(_L2.value, '--l2_epsilons', None)}
  robustness.resolve_epsilons(attack_names, plan)  # unknown attacks fail before loading
  shapes_model = name in jaxviz.models.SELF_TRAINED
  images, labels, source = robustness.labelled_images(
      _STUDY.images.value, shapes_model, _STUDY.num_images.value, _STUDY.data_seed.value, _STUDY.image_size.value)
  common.enable_compilation_cache()
  model = common.model_from_spec(_MODEL.value, _STUDY.weights.value)
  labels = common.class_indices(model, labels)
  say = lambda text: print(f'[robustness] {text}', file=sys.stderr, flush=True)
  report = robustness.robust_accuracy(
      model, images, labels, plan, attacks=attack_names, steps=_STEPS.value,
      naive=_FOOLING.value, naive_learning_rate=_FOOLING_LR.value,
      naive_iterations=_FOOLING_ITERATIONS.value, seed=_STUDY.seed.value,
      batching=_BATCHING.value, chunk_size=_STUDY.chunk_size.value or None, progress=say)
  report['data'] = source
  report['model_spec'] = _MODEL.value
  report['weights'] = {k: v for k, v in model.metadata.items() if k != 'class_names'}
  out = _STUDY.output_dir.value
  os.makedirs(out, exist_ok=True)
  path = os.path.join(out, 'robustness.json')
  checkpoint.atomic_write(path, lambda f: f.write(
      json.dumps(report, indent=2, default=str).encode()))
  title = (f'{_MODEL.value} ({common.weights_label(model)}): accuracy under untargeted '
           f'attack, {report["images"]} images ({source})')
  figures.save(common.robustness_plot(report, title), os.path.join(out, 'robustness.png'))
  common.write_manifest(out, common.script_flags(), model, data=source, timings={
      'total_s': report['seconds'],
      **{f'{a}_s': r['seconds_total'] for a, r in report['attacks'].items()},
      **({'fooling_s': round(report['naive']['seconds'], 3)} if 'naive' in report else {})})
  print(f'{_MODEL.value} ({common.weights_label(model)}), {source}:')
  print_table(report)
  print(f'wrote {path}, robustness.png and manifest.json in {out} ({report["seconds"]:.0f} s)')


if __name__ == '__main__':
  app.run(main, flags_parser=common.parse_flags)
