"""Activation maps: every channel of one layer's output for each image, as a grid of
tiles beside the image (the course's "cartes d'activation"; Zeiler & Fergus 2014, sec. 2).

  python scripts/activations.py [--model=squeezenet1_1] [--weights=imagenet]
      [--layer=features.5] [--images=samples] [--num_images=1] [--max_channels=0]
      [--scale=channel|shared] [--output_dir=outputs/activations]

--layer is a name of Model.layer_names (default: the first convolution after its ReLU,
'features.1' for SqueezeNet and VGG16). Writes activations_IMAGE.png per image,
results.npz (the activations, (N, h, w, C)) and manifest.json into --output_dir. On the
shapes model the default --images=samples becomes generated shapes images.
"""

import os
import time

import jax
import numpy as np
from absl import app, flags

import jaxviz
from jaxviz import figures, inspection
import common

_COMMON = common.define_common_flags('activations')
flags.adopt_module_key_flags(common)  # --helpshort lists the shared flags too
_LAYER = flags.DEFINE_string(
    'layer', None, 'Layer name (Model.layer_names, e.g. features.5 or '
    'features.3.expand3x3_activation). Default: the first convolution after its ReLU.')
_NUM_IMAGES = flags.DEFINE_integer('num_images', 1, 'Show the first this many images '
                                   '(0: all).', lower_bound=0)
_MAX_CHANNELS = flags.DEFINE_integer('max_channels', 0, 'Draw the first this many channels '
                                     '(0: all); results.npz keeps all.', lower_bound=0)
_SCALE = flags.DEFINE_enum(
    'scale', 'channel', ['channel', 'shared'], "'channel': each tile scaled by its own "
    "min-max (patterns of weak channels show); 'shared': one scale for all (strengths "
    'compare). Dead (all-zero) channels are blank and counted either way.')


@common.one_line_errors
def main(argv):
  del argv
  common.check_flags(__name__)
  images = common.first_images(_COMMON, _NUM_IMAGES.value)  # shapes for the shapes model
  count = len(images.names)
  common.enable_compilation_cache()
  model = common.resolve_model(_COMMON.model.value, _COMMON.weights.value)
  layer = _LAYER.value or inspection.first_activation(model)
  if layer not in model.layer_names:
    raise jaxviz.InputError(f'--layer={layer}: unknown layer for {model.name}; known: '
                            f'{", ".join(model.layer_names[:8])}, ... (Model.layer_names)')
  x = model.preprocess(images.images)
  start = time.perf_counter()
  acts = np.asarray(jax.block_until_ready(
      inspection.activation_maps(model, model.params, x, layer)))
  seconds = time.perf_counter() - start
  if acts.ndim != 4:
    raise jaxviz.InputError(f'--layer={layer} of {model.name} has output shape '
                            f'{acts.shape[1:]}: not a convolutional feature map (no '
                            'spatial maps to draw)')

  out = _COMMON.output_dir.value
  stems = (list(images.names) if len(set(images.names)) == count else
           [f'{name}_{i}' for i, name in enumerate(images.names)])
  files = [f'activations_{stem}.png' for stem in stems]
  rgb = images.images.astype(np.float32) / 255
  max_channels = _MAX_CHANNELS.value or None
  dead = (acts == 0).all(axis=(1, 2)).sum(axis=-1)
  for i, name in enumerate(images.names):
    title = (f'{name}: {model.name} {layer}, output {acts.shape[1]} x {acts.shape[2]} x '
             f'{acts.shape[3]}; {common.weights_label(model)}')
    figures.save(figures.activation_maps_figure(rgb[i], acts[i], title, scale=_SCALE.value,
                                                max_channels=max_channels),
                 os.path.join(out, files[i]))
  common.save_npz(os.path.join(out, 'results.npz'), activations=acts,
                  names=list(images.names), layer=layer, dead_channels=dead)
  common.write_manifest(out, common.script_flags(), model, layer=layer,
                        shape=list(acts.shape), dead_channels=dead.tolist(),
                        timings={'activation_maps_s': round(seconds, 3)}, figures=files)
  print(f'{model.name} ({common.weights_label(model)}): {layer} -> {acts.shape[1]} x '
        f'{acts.shape[2]} x {acts.shape[3]} for {count} image(s) in {seconds:.2f} s '
        '(compile included)')
  for name, d in zip(images.names, dead):
    print(f'  {name}: {int(d)} of {acts.shape[3]} channels dead (all zero)')
  print(f'wrote {out}/: {", ".join(files)}, results.npz, manifest.json')


if __name__ == '__main__':
  app.run(main, flags_parser=common.parse_flags)
