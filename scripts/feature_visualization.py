"""Neuron and channel maximisation (Erhan et al. 2009; Yosinski et al. 2015), in the pixel
basis (the course's) or lucid's decorrelated Fourier basis (Olah et al. 2017): one image
per channel of a layer, all channels in one compiled call.

  python scripts/feature_visualization.py [--model=squeezenet1_1] [--weights=imagenet]
      [--layer=features.5] [--channels=0-63] [--objective=mean|centre|unit --unit=i,j]
      [--parameterization=pixel|fourier] [--decorrelate] [--optimizer=sgd|adam]
      [--init=zeros|black|noise] [--num_iterations=100] [--learning_rate=1]
      [--l2_reg=1e-3] [--max_jitter=0] [--blur_every=0] [--image_size=...]

Writes feature_visualization.png (one tile per channel, deprocessed to RGB, each tile's
contrast stretched unless --nostretch), results.npz (images, normalised images, final
activations, traces) and manifest.json into --output_dir. --image_size defaults to the
model's own size (64 for the shapes model).
"""

import os
import time

import jax
import numpy as np
import optax
from absl import app, flags

import jaxviz
from jaxviz import figures
from jaxviz.methods.feature_visualization import (channel_visualization, check_channels,
                                                  layer_shape)
from jaxviz.methods.layers import resolve_layer
import common

_COMMON = common.define_common_flags('feature_visualization')
flags.adopt_module_key_flags(common)  # --helpshort lists the shared flags too
_LAYER = flags.DEFINE_string('layer', 'features.5', 'Layer (a name of Model.layer_names).')
_CHANNELS = flags.DEFINE_list('channels', ['0-15'], 'Channels: indices and ranges, e.g. '
                              '0-63 or 3,7,10-12.')
_OBJECTIVE = flags.DEFINE_enum('objective', 'mean', ['mean', 'centre', 'unit'],
                               "The channel's spatial mean, its centre unit, or --unit.")
_UNIT = flags.DEFINE_list('unit', None, "i,j: the neuron's position for --objective=unit.")
_PARAMETERIZATION = flags.DEFINE_enum('parameterization', 'pixel', ['pixel', 'fourier'],
                                      "'pixel' (the course's) or 'fourier' (lucid's).")
_DECORRELATE = flags.DEFINE_bool('decorrelate', False, 'Colours through the square root of '
                                 "ImageNet's colour correlation (lucid).")
_OPTIMIZER = flags.DEFINE_enum('optimizer', 'sgd', ['sgd', 'adam'],
                               "'sgd': the course's I += lr * g; 'adam': optax.adam(lr).")
_INIT = flags.DEFINE_enum('init', 'zeros', ['zeros', 'black', 'noise'],
                          "'zeros' (the course's), 'black' (pixels 0) or 'noise'.")
_NUM_ITERATIONS = flags.DEFINE_integer('num_iterations', 100, 'Gradient steps.',
                                       lower_bound=1)
_LEARNING_RATE = flags.DEFINE_float('learning_rate', 1.0, 'Step size (also Adam\'s).')
_L2_REG = flags.DEFINE_float('l2_reg', 1e-3, 'lambda in f(I) - lambda ||I||_2^2.')
_MAX_JITTER = flags.DEFINE_integer('max_jitter', 0, 'Random roll of up to this many pixels '
                                   'before each step (0: none).', lower_bound=0)
_BLUR_EVERY = flags.DEFINE_integer('blur_every', 0, 'Blur every this many steps (0: never; '
                                   'pixel parameterisation only).', lower_bound=0)
_BLUR_SIGMA = flags.DEFINE_float('blur_sigma', 0.5, 'Gaussian blur sigma in pixels.')
_COLUMNS = flags.DEFINE_integer('columns', 8, 'Tiles per row of the sheet.', lower_bound=1)
_STRETCH = flags.DEFINE_bool('stretch', True, "Stretch each tile's contrast to [0, 1] "
                             'for display (results.npz keeps both).')


def parse_channels(items) -> list[int]:
  """'0-3', '7' -> [0, 1, 2, 3, 7]; a one-line InputError for anything else."""
  channels = []
  for item in items:
    item = item.strip()
    first, sep, last = item.partition('-')
    if not first.isdigit() or (sep and not last.isdigit()):
      raise jaxviz.InputError(f'--channels: {item!r} is not an index or a range a-b')
    if sep and int(last) < int(first):
      raise jaxviz.InputError(f'--channels: the range {item!r} is empty')
    channels.extend(range(int(first), int(last) + 1) if sep else [int(first)])
  return channels


def stretch(images: np.ndarray) -> np.ndarray:
  """Each image's values mapped linearly onto [0, 1] (a constant image to 0.5)."""
  low = images.min(axis=(1, 2, 3), keepdims=True)
  span = images.max(axis=(1, 2, 3), keepdims=True) - low
  return np.where(span > 0, (images - low) / np.where(span > 0, span, 1), 0.5)


@common.one_line_errors
def main(argv):
  del argv
  common.check_flags(__name__)
  channels = parse_channels(_CHANNELS.value)
  unit = None
  if _UNIT.value is not None:
    if len(_UNIT.value) != 2 or not all(u.strip().isdigit() for u in _UNIT.value):
      raise jaxviz.InputError(f'--unit must be two indices i,j, got {",".join(_UNIT.value)!r}')
    unit = tuple(int(u) for u in _UNIT.value)
  common.enable_compilation_cache()
  model = common.resolve_model(_COMMON.model.value, _COMMON.weights.value)
  size = (model.image_size if flags.FLAGS['image_size'].using_default_value
          else _COMMON.image_size.value)
  # What the method would refuse about the layer, checked before the progress bar starts.
  layer = resolve_layer(model, _LAYER.value, 'feature_visualization')
  h, w, count = layer_shape(model, model.params, layer, (size, size, 3))
  check_channels(channels, count, layer)
  if unit is not None and not (unit[0] < h and unit[1] < w):
    raise jaxviz.InputError(f'--unit={unit[0]},{unit[1]} is outside the {h}x{w} map of '
                            f'layer {layer!r}')
  optimizer = optax.adam(_LEARNING_RATE.value) if _OPTIMIZER.value == 'adam' else None
  start = time.perf_counter()
  with common.progress_bar(_NUM_ITERATIONS.value,
                           f'{model.name} {layer} feature visualisation') as progress:
    result = channel_visualization(
        model, model.params, layer, channels, jax.random.key(_COMMON.seed.value),
        objective=_OBJECTIVE.value, unit=unit, image_shape=(size, size, 3),
        num_iterations=_NUM_ITERATIONS.value, learning_rate=_LEARNING_RATE.value,
        l2_reg=_L2_REG.value, blur_every=_BLUR_EVERY.value, blur_sigma=_BLUR_SIGMA.value,
        max_jitter=_MAX_JITTER.value, parameterization=_PARAMETERIZATION.value,
        decorrelate=_DECORRELATE.value, optimizer=optimizer, init=_INIT.value,
        cpu_kernels=model.cpu_kernels, progress=progress)
    result = jax.tree.map(np.asarray, jax.block_until_ready(result))
  seconds = time.perf_counter() - start

  out = _COMMON.output_dir.value
  rgb = common.to_rgb01(model, result.images)
  shown = stretch(rgb) if _STRETCH.value else rgb
  basis = _PARAMETERIZATION.value + (', decorrelated' if _DECORRELATE.value else '')
  title = (f'{model.name} {layer}, {_OBJECTIVE.value}, {basis}: '
           f'{_NUM_ITERATIONS.value} it. ({_OPTIMIZER.value}, lr {_LEARNING_RATE.value:g}, '
           f'l2 {_L2_REG.value:g}), {common.weights_label(model)}')
  labels = [f'{c}: {a:.3g}' for c, a in zip(channels, result.activation)]
  figures.save(figures.feature_sheet_figure(shown, labels, title, columns=_COLUMNS.value),
               os.path.join(out, 'feature_visualization.png'))
  common.save_npz(os.path.join(out, 'results.npz'), images=rgb, normalised=result.images,
                  channels=np.asarray(channels), activation=result.activation,
                  objective_trace=result.objective_trace,
                  activation_trace=result.activation_trace)
  common.write_manifest(out, common.script_flags(), model,
                        timings={'feature_visualization_s': round(seconds, 3)})
  print(f'{model.name} ({common.weights_label(model)}) {layer}: {len(channels)} '
        f'channel(s), {_NUM_ITERATIONS.value} steps in {seconds:.1f} s; activation '
        f'{result.activation_trace[:, 0].mean():.3g} -> {result.activation.mean():.3g} '
        '(mean over channels)')
  print(f'wrote {out}/feature_visualization.png, results.npz, manifest.json')


if __name__ == '__main__':
  app.run(main, flags_parser=common.parse_flags)
