"""Transfer of adversarial images between models (jaxviz.robustness.transfer_matrix):
images attacked white-box on each model, classified by every model.

  python scripts/transfer.py [--models=shapes:0,shapes:1] [--attack=pgd] [--epsilon=8/255]
      [--steps=10] [--num_images=200]
  python scripts/transfer.py --models=squeezenet1_1,vgg16 --images=samples --num_images=0

--models: two or more of NAME or NAME:SEED (shapes:1: the shapes model of training seed
1; for a random init, its seed), all with the same classes. The images travel as pixels;
each model normalises them with its own mean and std. --epsilon is in pixel units (a
number or a fraction such as 8/255); for an L2 attack the default is 3.0 at 224 px
scaled by sqrt(H * W) / 224. Shapes models are measured on generated images of
--data_seed, held out from their training. Writes transfer.json, transfer.png (the
matrix of rates as a heat map with its numbers, and below it each model's rate under
random noise of the same budget, the control) and manifest.json into --output_dir.
"""

import json
import os
import sys

from absl import app, flags

import jaxviz
from jaxviz import checkpoint, figures, robustness
import common

_MODELS = flags.DEFINE_list('models', ['shapes:0', 'shapes:1'], 'Models, NAME or NAME:SEED.')
_ATTACK = flags.DEFINE_enum('attack', 'pgd', list(robustness.ATTACKS), 'The attack, '
                            'untargeted.')
_EPSILON = flags.DEFINE_string('epsilon', None, 'Budget in pixel units (default: 8/255 for '
                               'Linf attacks; for L2 ones 3.0 at 224 px scaled to the size).')
_STEPS = flags.DEFINE_integer('steps', 10, 'Steps of an iterative attack.', lower_bound=1)
_STUDY = common.define_study_flags('transfer', "Seed of PGD's random starts.")
flags.adopt_module_key_flags(common)


def print_matrix(report: dict):
  names = report['models']
  width = max(10, *(len(n) + 2 for n in names))
  corner = 'made on / evaluated on'
  first = max(len(corner), len('random noise (control)'), *(len(n) for n in names)) + 2
  print(f'  {corner:<{first}}' + ''.join(f'{n:>{width}}' for n in names))
  for i, name in enumerate(names):
    cells = ''.join(f'{"n/a" if r is None else f"{r:.3f}":>{width}}' for r in report['rate'][i])
    print(f'  {name:<{first}}{cells}')
  noise = ''.join(f'{"n/a" if r is None else f"{r:.3f}":>{width}}'
                  for r in report['random_control'])
  print(f'  {"random noise (control)":<{first}}{noise}')
  print('  clean accuracy: ' + ', '.join(f'{n} {a:.3f}' for n, a in
                                          zip(names, report['clean_accuracy'])))


@common.one_line_errors
def main(argv):
  del argv
  common.check_flags(__name__)  # lists not empty, --output_dir writable
  specs = [s.strip() for s in _MODELS.value]
  for spec in specs:
    robustness.parse_model_spec(spec)
  if len(specs) < 2:
    raise jaxviz.InputError(f'--models={",".join(specs)}: give at least two models')
  if len(set(specs)) != len(specs):
    raise jaxviz.InputError(f'--models={",".join(specs)} names a model twice')
  spec = robustness.ATTACKS[_ATTACK.value]
  epsilon = None
  if _EPSILON.value is not None:
    epsilon = common.parse_epsilon(_EPSILON.value, '--epsilon',
                                   1.0 if spec.norm == 'linf' else None)
  shapes_models = all(robustness.parse_model_spec(s)[0] in jaxviz.models.SELF_TRAINED
                      for s in specs)
  images, labels, source = robustness.labelled_images(
      _STUDY.images.value, shapes_models, _STUDY.num_images.value, _STUDY.data_seed.value, _STUDY.image_size.value)
  if epsilon is None:
    epsilon = (8 / 255 if spec.norm == 'linf'
               else common.default_epsilon_l2(*images.shape[1:3]))
  common.enable_compilation_cache()
  models = [common.model_from_spec(s, _STUDY.weights.value) for s in specs]
  labels = common.class_indices(models[0], labels)
  say = lambda text: print(f'[transfer] {text}', file=sys.stderr, flush=True)
  report = robustness.transfer_matrix(models, images, labels, attack=_ATTACK.value,
                                      epsilon=epsilon, steps=_STEPS.value, seed=_STUDY.seed.value,
                                      names=specs, chunk_size=_STUDY.chunk_size.value or None,
                                      progress=say)
  report['data'] = source
  report['weights'] = [common.weights_label(m) for m in models]
  out = _STUDY.output_dir.value
  os.makedirs(out, exist_ok=True)
  path = os.path.join(out, 'transfer.json')
  checkpoint.atomic_write(path, lambda f: f.write(
      json.dumps(report, indent=2, default=str).encode()))
  budget = (f'{epsilon * 255:.3g}/255' if spec.norm == 'linf' else f'L2 {epsilon:.3g}')
  figures.save(common.transfer_plot(report, _ATTACK.value, epsilon, source, models),
               os.path.join(out, 'transfer.png'))
  common.write_manifest(out, common.script_flags(), models[0], data=source,
                        models={s: {k: v for k, v in m.metadata.items() if k != 'class_names'}
                                for s, m in zip(specs, models)},
                        timings={f'{s}_s': t for s, t in zip(specs, report['seconds'])})
  print(f'{_ATTACK.value}, epsilon {budget}, {source}; '
        + ', '.join(f'{s} ({w})' for s, w in zip(specs, report['weights'])) + ':')
  print_matrix(report)
  print(f'wrote {path}, transfer.png and manifest.json in {out}')


if __name__ == '__main__':
  app.run(main, flags_parser=common.parse_flags)
