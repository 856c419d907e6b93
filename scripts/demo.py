"""The main job: get ImageNet weights (or say in one line why not), classify the sample
photos, and run the three methods end to end with the course's defaults.

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
_TOP = flags.DEFINE_integer('top', 3, 'How many classes to print per image.')
_TARGET = flags.DEFINE_string('target', 'stingray', 'Fooling target (the report\'s).')
_CLASSES = flags.DEFINE_list('classes', ['tarantula', 'gorilla'],
                             'Classes to visualise (200 steps, course defaults).')


@common.one_line_errors
def main(argv):
  del argv
  common.enable_compilation_cache()
  model = common.resolve_model(_COMMON.model.value, _COMMON.weights.value)
  images = data.load_images(_COMMON.images.value, _COMMON.image_size.value)
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

  target = model.class_index(_TARGET.value)
  run = common.run_fooling(model, images.images[:1], target, 'score', 1.0, 100)
  figures.save(common.fooling_plot(model, run, f'{model.name} fooling ({label})'),
               os.path.join(out, 'fooling.png'))
  state = ('stalled: zero gradient' if run['stalled'][0] else
           'fooled' if run['fooled'][0] else 'not fooled')
  print(f'fooling {images.names[0]} -> {_TARGET.value}: {state} after '
        f'{run["iterations"][0]} iterations, ||delta||_2 = {run["l2"][0]:.3g}')

  targets = common.class_indices(model, _CLASSES.value)
  result, seconds = common.run_class_visualization(
      model, targets, _COMMON.seed.value, init=None, image_size=_COMMON.image_size.value,
      num_iterations=200, learning_rate=5.0)
  figures.save(figures.class_visualization_figure(
      common.to_rgb01(model, result.images),
      common.class_visualization_titles(model, targets, result, 200),
      f'{model.name} class visualisation ({label})'),
      os.path.join(out, 'class_visualization.png'))
  print(f'class visualisation of {", ".join(_CLASSES.value)}: 200 steps in {seconds:.1f} s, '
        'target probability ' + ', '.join(f'{p:.3g}' for p in result.target_probability))
  common.write_manifest(out, common.script_flags(), model)
  print(f'wrote {out}/saliency.png, fooling.png, class_visualization.png, manifest.json')


if __name__ == '__main__':
  app.run(main)
