"""Fooling images (Szegedy et al. 2014): figures 5-6 of the course report.

  python scripts/adversarial.py [--target=stingray] [--objective=score|cross_entropy]
      [--learning_rate=1] [--max_iterations=100] [--num_images=1] [--images=samples]

Writes fooling.png (original, fooled, difference, difference x10 per image), results.npz
and manifest.json into --output_dir.
"""

import os

from absl import app, flags

import jaxviz
from jaxviz import data, figures
import common

_COMMON = common.define_common_flags('adversarial')
flags.adopt_module_key_flags(common)  # --helpshort lists the shared flags too
_TARGET = flags.DEFINE_string('target', 'stingray', 'Class to reach: a name or an index.')
_OBJECTIVE = flags.DEFINE_enum(
    'objective', 'score', ['score', 'cross_entropy'],
    "Ascend the target's score (the course) or descend the cross-entropy to it (the "
    "reports' variant).")
_LEARNING_RATE = flags.DEFINE_float('learning_rate', 1.0,
                                    'Length of each normalised gradient step.')
_MAX_ITERATIONS = flags.DEFINE_integer('max_iterations', 100, 'Cap on steps per image.',
                                       lower_bound=0)
_NUM_IMAGES = flags.DEFINE_integer('num_images', 1, 'Fool the first this many images '
                                   '(0: all).', lower_bound=0)


@common.one_line_errors
def main(argv):
  del argv
  common.check_flags(__name__)  # --learning_rate > 0 and finite, among others
  images = data.load_images(_COMMON.images.value, _COMMON.image_size.value)
  count = _NUM_IMAGES.value or len(images.names)
  if count > len(images.names):
    raise jaxviz.InputError(f'--num_images={count} but {_COMMON.images.value} has '
                            f'{len(images.names)} images')
  common.enable_compilation_cache()
  model = common.resolve_model(_COMMON.model.value, _COMMON.weights.value)
  target = model.class_index(_TARGET.value)

  run = common.run_fooling(model, images.images[:count], target, _OBJECTIVE.value,
                           _LEARNING_RATE.value, _MAX_ITERATIONS.value)

  out = _COMMON.output_dir.value
  title = (f'{model.name}: fooling towards {model.class_names[target]!r} '
           f'({_OBJECTIVE.value.replace("_", "-")}, lr {_LEARNING_RATE.value:g}), '
           f'{common.weights_label(model)}')
  figures.save(common.fooling_plot(model, run, title), os.path.join(out, 'fooling.png'))
  common.save_npz(
      os.path.join(out, 'results.npz'), original=run['original'], fooled=run['images'],
      fooled_uint8=run['fooled_uint8'], iterations=run['iterations'], success=run['fooled'],
      stalled=run['stalled'], predicted=run['predicted'],
      original_predicted=run['original_predicted'],
      fooled_uint8_predicted=run['fooled_uint8_predicted'], target=run['target'],
      l2=run['l2'], linf=run['linf'], relative_l2=run['relative_l2'],
      relative_linf=run['relative_linf'], names=list(images.names[:count]))
  common.write_manifest(out, common.script_flags(), model,
                        timings={'fooling_images_s': round(run['seconds'], 3)})

  print(f'{model.name} ({common.weights_label(model)}): fooling {count} image(s) towards '
        f'{model.class_names[target]!r} by {_OBJECTIVE.value}, lr {_LEARNING_RATE.value:g}, '
        f'at most {_MAX_ITERATIONS.value} iterations')
  for i, name in enumerate(images.names[:count]):
    status = ('fooled' if run['fooled'][i] else
              'stalled (zero gradient)' if run['stalled'][i] else 'NOT fooled')
    kept = '' if not run['fooled'][i] else (
        '; still fooled as 8-bit RGB' if run['fooled_uint8_predicted'][i] == target
        else '; no longer fooled once saved as 8-bit RGB')
    print(f'  {name:>14}: {model.class_names[run["original_predicted"][i]]} -> '
          f'{model.class_names[run["predicted"][i]]} in {int(run["iterations"][i])} '
          f'iteration(s), {status}, ||delta||_2 = {run["l2"][i]:.3g} '
          f'(relative {run["relative_l2"][i]:.2%}), ||delta||_inf = {run["linf"][i]:.3g}'
          f'{kept}')
  print(f'wrote {out}/fooling.png, results.npz, manifest.json')


if __name__ == '__main__':
  app.run(main, flags_parser=common.parse_flags)
