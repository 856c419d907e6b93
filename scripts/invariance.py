"""Invariance to rotation, translation and scale (Zeiler & Fergus 2014, Fig. 5; the
course's Fig. 6): how far a low and a high layer's features move, and how the true class's
probability changes, as each image is transformed.

  python scripts/invariance.py [--model=squeezenet1_1] [--weights=imagenet]
      [--images=samples] [--num_images=3] [--transforms=rotate,translate,scale]
      [--angles=0,15,...] [--shifts=-56,...] [--scales=0.5,...] [--layers=L1,L2]
      [--fill=mean|black|white|NUMBER] [--output_dir=outputs/invariance]

Every transformed copy of an image (and the image itself) goes through the network in one
vmapped call per transform. Default values: rotations 0 to 360 degrees in steps of 15,
17 vertical shifts over a quarter of the side either way, 13 scale factors from 1/2 to 2.
--fill is what the warp lets in from outside the image: 'mean' (the dataset's mean
colour, 0 in the normalised space), 'black', 'white', or a number in the normalised
space. The true class is the images' label, else the model's prediction on the
untransformed image. Writes invariance.png, invariance.json (every curve) and
manifest.json into --output_dir. On the shapes model the default --images=samples
becomes generated shapes images.
"""

import json
import math
import os
import time

import jax
import numpy as np
from absl import app, flags

import jaxviz
from jaxviz import checkpoint, figures, invariance
import common

_COMMON = common.define_common_flags('invariance')
flags.adopt_module_key_flags(common)  # --helpshort lists the shared flags too
_TRANSFORMS = flags.DEFINE_list('transforms', list(invariance.TRANSFORMS),
                                'Transforms, one figure column each: rotate, translate, '
                                'scale.')
_NUM_IMAGES = flags.DEFINE_integer('num_images', 3, 'Study the first this many images '
                                   '(0: all), one curve each.', lower_bound=0)
_ANGLES = flags.DEFINE_list('angles', None, 'Rotation angles in degrees, counter-clockwise '
                            '(default: 0 to 360 in steps of 15).')
_SHIFTS = flags.DEFINE_list('shifts', None, 'Vertical shifts in pixels, down (default: 17 '
                            'whole-pixel shifts over a quarter of the side either way).')
_SCALES = flags.DEFINE_list('scales', None, 'Scale factors > 0 about the centre (default: '
                            '13 from 1/2 to 2, log-spaced).')
_LAYERS = flags.DEFINE_list('layers', None, 'Layers whose feature distance is plotted '
                            '(default: the first convolution after its ReLU and the top '
                            'feature layer, e.g. features.1,features.12 for SqueezeNet).')
_FILL = flags.DEFINE_string('fill', 'mean', "Outside the image: 'mean' (0 in the normalised "
                            "space), 'black', 'white', or a number (normalised space).")
_SAMPLES = flags.DEFINE_integer('samples', 5, 'Transformed copies of the first image shown '
                                'per transform.', lower_bound=1)

_VALUE_FLAGS = {'rotate': _ANGLES, 'translate': _SHIFTS, 'scale': _SCALES}


def _numbers(flag) -> np.ndarray | None:
  if flag.value is None:
    return None
  try:
    values = np.array([float(v) for v in flag.value])
  except ValueError:
    raise jaxviz.InputError(f'--{flag.name} must be numbers, got '
                            f'{",".join(flag.value)!r}') from None
  if not np.isfinite(values).all():
    raise jaxviz.InputError(f'--{flag.name} must be finite, got {",".join(flag.value)!r}')
  if flag.name == 'scales' and not (values > 0).all():
    raise jaxviz.InputError(f'--scales must be positive, got {",".join(flag.value)!r}')
  return values


def _fill(model, text: str):
  """--fill in the normalised space: a number, or one per channel for black / white."""
  mean, std = np.array(model.mean), np.array(model.std)
  named = {'mean': 0.0, 'black': (0 - mean) / std, 'white': (1 - mean) / std}
  if text in named:
    return named[text]
  try:
    value = float(text)
  except ValueError:
    raise jaxviz.InputError(f"--fill must be 'mean', 'black', 'white' or a number, got "
                            f'{text!r}') from None
  if not math.isfinite(value):
    raise jaxviz.InputError(f'--fill must be finite, got {text!r}')
  return value


@common.one_line_errors
def main(argv):
  del argv
  common.check_flags(__name__)
  transforms = common.check_names(_TRANSFORMS.value, invariance.TRANSFORMS, '--transforms',
                                  'transform')
  given = {t: _numbers(_VALUE_FLAGS[t]) for t in invariance.TRANSFORMS}
  images = common.first_images(_COMMON, _NUM_IMAGES.value)  # shapes for the shapes model
  count = len(images.names)
  common.enable_compilation_cache()
  model = common.resolve_model(_COMMON.model.value, _COMMON.weights.value)
  layers = tuple(_LAYERS.value) if _LAYERS.value else invariance.default_layers(model)
  for name in layers:
    if name not in model.layer_names:
      raise jaxviz.InputError(f'--layers: unknown layer {name!r} for {model.name} '
                              '(Model.layer_names)')
  fill = _fill(model, _FILL.value)
  labels, source = common.resolve_labels(model, images, None)
  x = model.preprocess(images.images)
  side = min(x.shape[1:3])

  results, record, seconds = {}, {}, {}
  for transform in transforms:
    values = given[transform]
    if values is None:
      values = invariance.default_values(transform, side)
    start = time.perf_counter()
    studies = [jax.tree.map(np.asarray, invariance.invariance_study(
        model, model.params, x[i], int(labels[i]), transform=transform, values=values,
        layers=layers, fill=fill)) for i in range(count)]
    seconds[transform] = round(time.perf_counter() - start, 3)
    shown = np.unique(np.linspace(0, len(values) - 1, min(_SAMPLES.value, len(values)))
                      .round().astype(int))
    results[transform] = {
        'values': values,
        'probability': np.stack([s.probability for s in studies]),
        'distances': {l: np.stack([s.distances[l] for s in studies]) for l in layers},
        'samples': common.to_rgb01(model, studies[0].images[shown]),
        'sample_values': values[shown]}
    record[transform] = {
        'values': values.tolist(), 'seconds': seconds[transform],
        'images': {name: {
            'label': model.class_names[int(labels[i])],
            'original_probability': float(s.original_probability),
            'original_predicted': model.class_names[int(s.original_predicted)],
            'probability': s.probability.tolist(),
            'predicted': [model.class_names[int(k)] for k in s.predicted],
            'distances': {l: s.distances[l].tolist() for l in layers},
            'relative_distances': {l: s.relative[l].tolist() for l in layers}}
            for i, (name, s) in enumerate(zip(images.names, studies))}}

  out = _COMMON.output_dir.value
  short = lambda k: model.class_names[k][:18]
  curve_labels = [f'{name} ({short(int(k))})' for name, k in zip(images.names, labels)]
  fill_text = _FILL.value + (' (0 normalised)' if _FILL.value == 'mean' else '')
  title = (f'{model.name} invariance (Zeiler & Fergus Fig. 5): feature distance to the '
           f'untransformed image and p(true class, from {source}); fill {fill_text}; '
           f'{common.weights_label(model)}')
  figures.save(figures.invariance_figure(results, curve_labels, layers, title),
               os.path.join(out, 'invariance.png'))
  document = {'model': model.name, 'layers': list(layers), 'fill': _FILL.value,
              'label_source': source, 'images': list(images.names), 'transforms': record}
  checkpoint.atomic_write(os.path.join(out, 'invariance.json'), lambda f: f.write(
      json.dumps(document, indent=1).encode()))
  common.write_manifest(out, common.script_flags(), model, layers=list(layers),
                        transforms=list(transforms), timings_s=seconds,
                        figures=['invariance.png'])

  print(f'{model.name} ({common.weights_label(model)}): {count} image(s), layers '
        f'{", ".join(layers)}, fill {fill_text}')
  for transform in transforms:
    r = results[transform]
    worst = r['probability'].min(axis=1)
    print(f'  {transform:<9} {len(r["values"])} values in {seconds[transform]:.2f} s; '
          f'p(true) min over values: {", ".join(f"{p:.3g}" for p in worst)}')
  print(f'wrote {out}/: invariance.png, invariance.json, manifest.json')


if __name__ == '__main__':
  app.run(main, flags_parser=common.parse_flags)
