"""The main job: get ImageNet weights, classify the sample photos, and run the three
methods end to end with the course's defaults. Without ImageNet weights (no network) it
says so in one line and runs the same on the self-trained shapes model (training it
first, about 2.5 minutes on 2 cores, if it is not cached) and generated shapes images.

  python scripts/demo.py [--model=squeezenet1_1] [--weights=imagenet] [--images=samples]

Writes saliency.png, fooling.png, class_visualization.png and manifest.json into
--output_dir (outputs/demo). scripts/make_figures.py makes every figure of the report.
"""

import os

import jax
import numpy as np
from absl import app, flags

import jaxviz
from jaxviz import data, figures
import common

_COMMON = common.define_common_flags('demo')
_TOP = flags.DEFINE_integer('top', 3, 'How many classes to print per image.', lower_bound=1)
_TARGET = flags.DEFINE_string('target', None, "Fooling target (default: the report's "
                              "'stingray'; 'star' on the shapes model).")
_CLASSES = flags.DEFINE_list('classes', None, 'Classes to visualise (200 steps, course '
                             "defaults; default: 'tarantula', 'gorilla'; 'star', 'hourglass' on "
                             'the shapes model).')
# What the demo runs on: ImageNet models and the shapes model need different inputs.
_DEFAULTS = {'imagenet': dict(images='samples', target='stingray',
                              classes=['tarantula', 'gorilla']),
             'shapes': dict(images='shapes', target='star', classes=['star', 'hourglass'])}


@common.one_line_errors
def main(argv):
  del argv
  common.check_flags(__name__)
  common.enable_compilation_cache()
  model = common.resolve_model(_COMMON.model.value, _COMMON.weights.value, fallback='shapes')
  defaults = _DEFAULTS['shapes' if model.name == 'shapes' else 'imagenet']
  target_name = _TARGET.value or defaults['target']
  class_names = _CLASSES.value or defaults['classes']
  images_spec = _COMMON.images.value
  if model.name == 'shapes' and images_spec == 'samples':  # photos mean nothing to it
    images_spec = defaults['images']
  size = model.image_size if model.name == 'shapes' else _COMMON.image_size.value
  images = data.load_images(images_spec, size)
  out, label = _COMMON.output_dir.value, common.weights_label(model)
  x = model.preprocess(images.images)

  probs = np.asarray(jax.nn.softmax(jax.jit(model.apply)(model.params, x)))
  print(f'{model.name} ({label}) on {len(images.names)} images:')
  for name, p in zip(images.names, probs):
    top = np.argsort(-p)[:_TOP.value]
    print(f'  {name:>14}: ' + ', '.join(f'{model.class_names[k]} {p[k]:.1%}' for k in top))

  labels = (common.class_indices(model, images.labels) if images.labels is not None
            else probs.argmax(-1))
  maps, timings = common.run_saliency(model, images.images, labels, 'score')
  figures.save(common.saliency_plot(model, images.images, maps, labels,
                                    f'{model.name} saliency ({label})'),
               os.path.join(out, 'saliency.png'))
  print(f'saliency: {len(maps)} maps, {timings["second_call_s"]:.2f} s once compiled')

  target = model.class_index(target_name)
  run = common.run_fooling(model, images.images[:1], target, 'score', 1.0, 100)
  figures.save(common.fooling_plot(model, run, f'{model.name} fooling ({label})'),
               os.path.join(out, 'fooling.png'))
  state = ('stalled: zero gradient' if run['stalled'][0] else
           'fooled' if run['fooled'][0] else 'not fooled')
  print(f'fooling {images.names[0]} -> {target_name}: {state} after '
        f'{run["iterations"][0]} iterations, ||delta||_2 = {run["l2"][0]:.3g}')

  targets = common.class_indices(model, class_names)
  # The course's jitter is 16 px at 224; keep it the same fraction of smaller images.
  result, seconds = common.run_class_visualization(
      model, targets, _COMMON.seed.value, init=None, image_size=size,
      num_iterations=200, learning_rate=5.0, max_jitter=max(1, round(16 * size / 224)))
  figures.save(figures.class_visualization_figure(
      common.to_rgb01(model, result.images),
      common.class_visualization_titles(model, targets, result, 200),
      f'{model.name} class visualisation ({label})'),
      os.path.join(out, 'class_visualization.png'))
  print(f'class visualisation of {", ".join(class_names)}: 200 steps in {seconds:.1f} s, '
        'target probability ' + ', '.join(f'{p:.3g}' for p in result.target_probability))
  common.write_manifest(out, common.script_flags(), model)
  print(f'wrote {out}/saliency.png, fooling.png, class_visualization.png, manifest.json')


if __name__ == '__main__':
  app.run(main, flags_parser=common.parse_flags)
