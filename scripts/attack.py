"""Gradient attacks with a budget: FGSM, BIM, PGD (L-infinity and L2), and the course's
unbounded fooling method beside them.

  python scripts/attack.py [--model=squeezenet1_1] [--attacks=fgsm,bim,pgd,pgd_l2]
      [--epsilon=8/255] [--epsilon_l2=3] [--steps=10] [--step_size=2/255]
      [--targeted --target=stingray] [--early_stop] [--num_images=1] [--images=samples]
      [--seed=0] [--output_dir=outputs/attack]

Budgets and steps are in pixel units ([0, 1] scale, a number or a fraction such as
8/255), whatever the model's normalisation. Untargeted attacks move each image away from
its label (the image set's, else the model's prediction on the clean image); --targeted
moves it to --target. Writes attack_NAME.png per image (original, adversarial,
difference, difference x10: one row per attack), each adversarial image as an 8-bit PNG
(NAME_ATTACK.png, read back from disk and classified again), results.npz and
manifest.json into --output_dir, and prints a table per image and attack. On the shapes
model the default --images=samples becomes generated shapes images.
"""

import os

import numpy as np
from absl import app, flags

import jaxviz
from jaxviz import figures
import common

_COMMON = common.define_common_flags('attack')
flags.adopt_module_key_flags(common)  # --helpshort lists the shared flags too
_ATTACKS = flags.DEFINE_list(
    'attacks', list(common.DEFAULT_ATTACKS), 'Attacks, one figure row each, in order: '
    'fgsm, bim, pgd (L-infinity, random start), pgd_l2, and fooling (the course\'s '
    'normalised score ascent without a budget; needs --targeted).')
_EPSILON = flags.DEFINE_string(
    'epsilon', '8/255', 'L-infinity budget of fgsm, bim and pgd in pixel units: a number '
    'in [0, 1] or a fraction such as 8/255 (8 grey levels).')
_EPSILON_L2 = flags.DEFINE_string(
    'epsilon_l2', None, 'L2 budget of pgd_l2 in pixel units, over all H * W * 3 values '
    '(a number or a fraction). Default: 3.0 at 224 x 224 scaled by sqrt(H * W) / 224 '
    '(0.857 at 64 px): the same per-pixel size at any image size, an RMS change of '
    'about 2/255.')
_STEPS = flags.DEFINE_integer('steps', 10, 'Steps of bim, pgd and pgd_l2 (fgsm takes one).',
                              lower_bound=1)
_STEP_SIZE = flags.DEFINE_string(
    'step_size', None, 'Step of bim and pgd in pixel units (number or fraction). Default: '
    '2.5 * epsilon / steps (Madry et al.\'s rule: enough to cross the ball and back).')
_STEP_SIZE_L2 = flags.DEFINE_string(
    'step_size_l2', None, 'L2 length of each pgd_l2 step in pixel units. Default: '
    '2.5 * epsilon_l2 / steps.')
_TARGETED = flags.DEFINE_bool('targeted', False, 'Move each image to --target instead of '
                              'away from its label.')
_TARGET = flags.DEFINE_string('target', None, 'With --targeted: the class to reach, a name '
                              'or an index.')
_EARLY_STOP = flags.DEFINE_bool('early_stop', False, 'Stop each image of bim and pgd once '
                                'it meets the goal (the papers run every step).')
_FOOLING_LR = flags.DEFINE_float('fooling_lr', 1.0, 'fooling: length of each normalised '
                                 'gradient step in the normalised space (the course: 1).')
_FOOLING_ITERATIONS = flags.DEFINE_integer(
    'fooling_iterations', 100, 'fooling: cap on steps (the course: 100).', lower_bound=0)
_NUM_IMAGES = flags.DEFINE_integer('num_images', 1, 'Attack the first this many images '
                                   '(0: all).', lower_bound=0)


def _grey_levels(value: float) -> str:
  return f'{value * 255:.3g}/255'


def _on_grid(value: float) -> bool:
  """Whether a budget is a whole number of grey levels (k / 255), up to float rounding."""
  return abs(value * 255 - round(value * 255)) < 1e-6


@common.one_line_errors
def main(argv):
  del argv
  common.check_flags(__name__)  # --fooling_lr > 0 and finite, --output_dir writable
  attacks = common.check_names(_ATTACKS.value, tuple(common.ATTACKS), '--attacks', 'attack')
  epsilon = common.parse_epsilon(_EPSILON.value, '--epsilon', maximum=1.0)
  targeted = _TARGETED.value
  if targeted and _TARGET.value is None:
    raise jaxviz.InputError('--targeted needs --target=NAME (a class name or index)')
  if not targeted and _TARGET.value is not None:
    raise jaxviz.InputError('--target is only for targeted attacks: add --targeted')
  if 'fooling' in attacks and not targeted:
    raise jaxviz.InputError("--attacks=fooling: the course's fooling method is targeted "
                            'only: add --targeted --target=NAME')
  steps = _STEPS.value
  given = lambda flag, name: None if flag.value is None else common.parse_epsilon(
      flag.value, f'--{name}')
  epsilon_l2 = given(_EPSILON_L2, 'epsilon_l2')
  step_size = given(_STEP_SIZE, 'step_size')
  step_size_l2 = given(_STEP_SIZE_L2, 'step_size_l2')
  images = common.first_images(_COMMON, _NUM_IMAGES.value)  # shapes for the shapes model
  count = len(images.names)
  height, width = images.images.shape[1:3]
  l2_source = 'given' if epsilon_l2 is not None else 'default'
  if epsilon_l2 is None:
    epsilon_l2 = common.default_epsilon_l2(height, width)
  if step_size is None:  # the library's default, made explicit for the manifest
    step_size = 2.5 * epsilon / steps
  if step_size_l2 is None:
    step_size_l2 = 2.5 * epsilon_l2 / steps
  common.enable_compilation_cache()
  model = common.resolve_model(_COMMON.model.value, _COMMON.weights.value)
  if targeted:
    labels = np.full((count,), model.class_index(_TARGET.value), np.int32)
    source = '--target'
  else:
    labels, source = common.resolve_labels(model, images, None)

  runs = common.run_attacks(
      model, images.images, labels, attacks, targeted=targeted, epsilon=epsilon,
      epsilon_l2=epsilon_l2, steps=steps, step_size=step_size, step_size_l2=step_size_l2,
      early_stop=_EARLY_STOP.value, seed=_COMMON.seed.value, fooling_lr=_FOOLING_LR.value,
      fooling_iterations=_FOOLING_ITERATIONS.value)
  out = _COMMON.output_dir.value
  # File names from the image names; numbered where two images share a name (a.png and
  # a.jpg in one folder).
  stems = (list(images.names) if len(set(images.names)) == count else
           [f'{name}_{i}' for i, name in enumerate(images.names)])
  files = {a: [f'{stem}_{a}.png' for stem in stems] for a in attacks}
  saved = {a: common.check_saved(model, images.images, runs[a]['pixels'], labels, targeted,
                                 [os.path.join(out, f) for f in files[a]])
           for a in attacks}
  clean_predicted = common.predict(model, model.preprocess(images.images))

  cls = lambda k: model.class_names[k]
  budgets = ', '.join(
      ([f'Linf {_grey_levels(epsilon)}'] if {'fgsm', 'bim', 'pgd'} & set(attacks) else [])
      + ([f'L2 {epsilon_l2:.3g}'] if 'pgd_l2' in attacks else []))
  kind = 'targeted' if targeted else 'untargeted'
  figure_files = [f'attack_{stem}.png' for stem in stems]
  for i, name in enumerate(images.names):
    goal = f'to {cls(labels[i])!r}' if targeted else f'away from {cls(labels[i])!r}'
    title = (f'{name}: {model.name}, {kind} attacks {goal}, {budgets or "no budget"}, '
             f'{steps} steps; {common.weights_label(model)}')
    figures.save(common.attack_plot(model, images.images, clean_predicted, runs,
                                    images.names, title, i),
                 os.path.join(out, figure_files[i]))

  stack = lambda what, key: np.stack([what[a][key] for a in attacks])
  budget = {'linf': epsilon, 'l2': epsilon_l2, None: np.inf}
  common.save_npz(
      os.path.join(out, 'results.npz'), attacks=list(attacks), names=list(images.names),
      original=images.images, original_predicted=clean_predicted, labels=labels,
      targeted=targeted, norm=[common.ATTACKS[a][1] or 'none' for a in attacks],
      epsilon=[budget[common.ATTACKS[a][1]] for a in attacks],
      pixels=stack(runs, 'pixels'), steps=stack(runs, 'steps'),
      success=stack(runs, 'success'), stalled=stack(runs, 'stalled'),
      predicted=stack(runs, 'predicted'), linf=stack(runs, 'linf'), l2=stack(runs, 'l2'),
      uint8=stack(saved, 'uint8'), uint8_predicted=stack(saved, 'predicted'),
      uint8_success=stack(saved, 'success'), uint8_linf=stack(saved, 'linf'),
      uint8_l2=stack(saved, 'l2'), files=np.array([files[a] for a in attacks]))
  common.write_manifest(
      out, common.script_flags(), model, attacks=list(attacks), label_source=source,
      epsilon=epsilon, epsilon_l2=epsilon_l2, epsilon_l2_chosen=l2_source,
      step_size=step_size, step_size_l2=step_size_l2,
      seconds={a: round(float(runs[a]['seconds']), 3) for a in attacks},
      figures=figure_files, files=[f for a in attacks for f in files[a]])

  goal = f'to {cls(labels[0])!r}' if targeted else f'away from {source}'
  print(f'{model.name} ({common.weights_label(model)}): {len(attacks)} attack(s) on '
        f'{count} image(s) of {height}x{width}, {kind} {goal}; {budgets or "no budget"}; '
        f'{steps} steps of {_grey_levels(step_size)} (Linf), {step_size_l2:.3g} (L2)')
  short = lambda k: cls(k) if len(cls(k)) <= 18 else cls(k)[:17] + '.'
  print(f'  {"image":<14} {"attack":<16} {"goal":<22} {"clean -> adversarial":<38} '
        f'{"result":<7} {"steps":>5} {"Linf":>9} {"L2":>7} | 8-bit PNG: {"class":<18} '
        f'{"result":<6} {"Linf":>9}')
  for i, name in enumerate(images.names):
    for a in attacks:
      r, s = runs[a], saved[a]
      result = 'success' if r['success'][i] else 'stalled' if r['stalled'][i] else 'failed'
      goal = ('to ' if targeted else 'not ') + short(labels[i])
      change = f'{short(clean_predicted[i])} -> {short(r["predicted"][i])}'
      print(f'  {name[:14]:<14} {common.ATTACKS[a][0]:<16} {goal:<22} {change:<38} '
            f'{result:<7} {int(r["steps"][i]):>5} {_grey_levels(r["linf"][i]):>9} '
            f'{r["l2"][i]:>7.3g} | {"":11}{short(s["predicted"][i]):<18} '
            f'{"fools" if s["success"][i] else "fails":<6} {_grey_levels(s["linf"][i]):>9}')
  met = (clean_predicted == labels) == targeted
  if met.any():
    print(f'note: {int(met.sum())} of {count} clean image(s) '
          f'{"had the target class" if targeted else "were misclassified"} already, before any '
          'attack, so their attacks succeed at step 0'
          + (' (random weights)' if model.metadata.get('source') == 'random' else ''))
  bounded = [a for a in attacks if common.ATTACKS[a][1] == 'linf']
  if bounded:
    worst = max(float(saved[a]['linf'].max()) for a in bounded)
    within = ('within the budget, as it must be for a whole number of grey levels'
              if _on_grid(epsilon) else 'the budget is not a whole number of grey levels, '
              'so rounding may add up to 0.5/255')
    print(f'8-bit PNGs of the Linf attacks: Linf at most {_grey_levels(worst)} ({within})')
  print(f'wrote {out}/: {", ".join(figure_files)}, {sum(len(f) for f in files.values())} '
        'adversarial PNG(s), results.npz, manifest.json')

if __name__ == '__main__':
  app.run(main, flags_parser=common.parse_flags)
