"""DeepDream (Mordvintsev, Olah & Tyka 2015): amplify what a layer sees in each image,
octave by octave, as the original notebook does; all images in one compiled call.

  python scripts/deep_dream.py [--model=squeezenet1_1] [--weights=imagenet]
      [--layer=features.7] [--images=samples] [--num_images=2] [--octaves=4]
      [--octave_scale=1.4] [--steps_per_octave=10] [--learning_rate=0.026]
      [--max_jitter=16] [--image_size=...]

Writes deep_dream.png (each original beside its dream), results.npz (the dreams, the
originals, the objective mean(a^2) before and after each octave) and manifest.json into
--output_dir. --image_size defaults to the model's own size (64 for the shapes model); on
the shapes model the default --images=samples becomes generated shapes images.
"""

import os
import time

import jax
import numpy as np
from absl import app, flags

import jaxviz
from jaxviz import data, figures, shapes
from jaxviz.methods.deep_dream import DEFAULT_LEARNING_RATE, deep_dream, octave_sizes
from jaxviz.methods.layers import resolve_layer
import common

_COMMON = common.define_common_flags('deep_dream')
flags.adopt_module_key_flags(common)  # --helpshort lists the shared flags too
_LAYER = flags.DEFINE_string('layer', None, "Layer (a name of Model.layer_names); default: "
                             "'features.7' for SqueezeNet, the model's last feature map "
                             'otherwise.')
_NUM_IMAGES = flags.DEFINE_integer('num_images', 2, 'Images to dream from (the first ones).',
                                   lower_bound=1)
_OCTAVES = flags.DEFINE_integer('octaves', 4, 'Scales, smallest first.', lower_bound=1)
_OCTAVE_SCALE = flags.DEFINE_float('octave_scale', 1.4, 'Ratio between octaves (> 1).')
_STEPS = flags.DEFINE_integer('steps_per_octave', 10, 'Ascent steps per octave.',
                              lower_bound=1)
_LEARNING_RATE = flags.DEFINE_float(
    'learning_rate', DEFAULT_LEARNING_RATE, 'Step per mean |g|, normalised units (default: '
    "the notebook's 1.5 on the 0-255 scale).")
_MAX_JITTER = flags.DEFINE_integer('max_jitter', 16, 'Random roll of up to this many pixels '
                                   'before each step (0: none).', lower_bound=0)

_DEFAULT_LAYERS = {'squeezenet1_1': 'features.7', 'squeezenet1_0': 'features.7'}


@common.one_line_errors
def main(argv):
  del argv
  common.check_flags(__name__)
  if _OCTAVE_SCALE.value <= 1 and _OCTAVES.value > 1:
    raise jaxviz.InputError(f'--octave_scale must be more than 1, got {_OCTAVE_SCALE.value:g}')
  common.enable_compilation_cache()
  model = common.resolve_model(_COMMON.model.value, _COMMON.weights.value)
  size = (model.image_size if flags.FLAGS['image_size'].using_default_value
          else _COMMON.image_size.value)
  layer = resolve_layer(model, _LAYER.value or _DEFAULT_LAYERS.get(model.name), 'deep_dream')
  if model.name == 'shapes' and _COMMON.images.value == 'samples':
    pixels = shapes.generate(_NUM_IMAGES.value, seed=_COMMON.seed.value, size=size).images
  else:
    pixels = data.load_images(_COMMON.images.value, size).images[:_NUM_IMAGES.value]
  images = model.preprocess(pixels)
  start = time.perf_counter()
  with common.progress_bar(_OCTAVES.value * _STEPS.value, f'{model.name} DeepDream') as progress:
    result = deep_dream(
        model, model.params, images, layer, key=jax.random.key(_COMMON.seed.value),
        octaves=_OCTAVES.value, octave_scale=_OCTAVE_SCALE.value,
        steps_per_octave=_STEPS.value, learning_rate=_LEARNING_RATE.value,
        max_jitter=_MAX_JITTER.value, cpu_kernels=model.cpu_kernels, progress=progress)
    result = jax.tree.map(np.asarray, jax.block_until_ready(result))
  seconds = time.perf_counter() - start

  out = _COMMON.output_dir.value
  original, dreamed = common.to_rgb01(model, images), common.to_rgb01(model, result.images)
  sizes = octave_sizes(size, size, _OCTAVES.value, _OCTAVE_SCALE.value)
  title = (f'{model.name} DeepDream, {layer}: {_OCTAVES.value} octaves '
           f'({sizes[0][0]}-{sizes[-1][0]} px) x {_STEPS.value} steps, '
           f'{common.weights_label(model)}')
  titles = [f'dream\nmean(a^2) {b:.2g} -> {a:.2g}'
            for b, a in zip(result.objective_original, result.objective_final)]
  figures.save(figures.deep_dream_figure(original, dreamed, titles, title),
               os.path.join(out, 'deep_dream.png'))
  common.save_npz(os.path.join(out, 'results.npz'), images=dreamed, original=original,
                  normalised=result.images, objective_original=result.objective_original,
                  objective_final=result.objective_final,
                  objective_before=result.objective_before,
                  objective_after=result.objective_after,
                  objective_trace=result.objective_trace, octave_sizes=np.asarray(sizes))
  common.write_manifest(out, common.script_flags(), model,
                        timings={'deep_dream_s': round(seconds, 3)})
  print(f'{model.name} ({common.weights_label(model)}) {layer}: {len(images)} image(s), '
        f'{_OCTAVES.value} octaves x {_STEPS.value} steps in {seconds:.1f} s')
  print(f'  the layer\'s mean(a^2): {result.objective_original.mean():.4g} in the originals, '
        f'{result.objective_final.mean():.4g} in the dreams (mean over images)')
  for o, s in enumerate(sizes):
    print(f'  octave {o} ({s[0]}x{s[1]}): mean(a^2) '
          f'{result.objective_before[:, o].mean():.4g} -> '
          f'{result.objective_after[:, o].mean():.4g} (mean over images)')
  print(f'wrote {out}/deep_dream.png, results.npz, manifest.json')


if __name__ == '__main__':
  app.run(main, flags_parser=common.parse_flags)
