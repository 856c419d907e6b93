"""Attribution methods side by side: one row per image, one column per method.

  python scripts/attribution.py [--model=squeezenet1_1] [--images=samples]
      [--methods=gradient,smoothgrad,integrated_gradients,guided_backprop,deconvnet,
                 grad_cam,guided_grad_cam,occlusion]
      [--labels=tabby,espresso,...] [--layer=features.12] [--samples=50]
      [--noise_level=0.15] [--steps=50] [--rule=gausslegendre] [--window=16] [--stride=8]
      [--output_dir=outputs/attribution]

Every method's map is `jaxviz.attribution_maps`: (N, H, W), non-negative for the pixel
methods (max over RGB of |attribution|), Grad-CAM upsampled to the image, occlusion's
per-pixel mean score drop (signed). Writes attribution.png (the comparison grid, each map
clipped at its 99th percentile over its image), results.npz (images, labels and
`maps_<method>` per method) and manifest.json (with each method's time) into
--output_dir. On the shapes model the default --images=samples becomes generated shapes
images (photos mean nothing to it).
"""

import difflib
import os
import time

import jax
import numpy as np
from absl import app, flags

import jaxviz
from jaxviz import figures
from jaxviz.methods.integrated_gradients import RULES
from jaxviz.methods.layers import DEFAULT_LAYERS
import common

_COMMON = common.define_common_flags('attribution')
flags.adopt_module_key_flags(common)  # --helpshort lists the shared flags too
_METHODS = flags.DEFINE_list(
    'methods', list(common.DEFAULT_METHODS), 'Attribution methods, in column order: any of '
    'jaxviz.attribution_methods() (gradient, gradient_x_input, guided_backprop, deconvnet, '
    'grad_cam, guided_grad_cam, integrated_gradients, occlusion, smoothgrad).')
_LABELS = flags.DEFINE_list(
    'labels', None, 'Class names or indices to explain, one for all images or one per '
    "image. Default: the images' labels when they have some, else the predicted class.")
_LAYER = flags.DEFINE_string('layer', None, "Grad-CAM's layer (a name of the model's "
                             'layer_names). Default: its last convolutional feature map.')
_SAMPLES = flags.DEFINE_integer('samples', 50, 'SmoothGrad: noisy copies per image.',
                                lower_bound=1)
_NOISE_LEVEL = flags.DEFINE_float('noise_level', 0.15, 'SmoothGrad: noise sigma as a '
                                  "fraction of the image's value range.", lower_bound=0.0)
_STEPS = flags.DEFINE_integer('steps', 50, 'Integrated gradients: path points.',
                              lower_bound=1)
_RULE = flags.DEFINE_enum('rule', 'gausslegendre', list(RULES),
                          'Integrated gradients: the quadrature rule.')
_WINDOW = flags.DEFINE_integer(
    'window', None, f'Occlusion: the square\'s side in pixels. Default {common.WINDOW} at '
    f'{common.REFERENCE_SIZE} px and above, scaled to smaller images.', lower_bound=1)
_STRIDE = flags.DEFINE_integer(
    'stride', None, f'Occlusion: pixels between window positions. Default {common.STRIDE} at '
    f'{common.REFERENCE_SIZE} px and above, scaled to smaller images.', lower_bound=1)
_CHUNK = flags.DEFINE_integer(
    'chunk', 32, 'At most this many noisy copies (SmoothGrad), path points (integrated '
    'gradients) or occluded images (occlusion) per pass, one image at a time: bounds '
    'memory.', lower_bound=1)
_OVERLAY = flags.DEFINE_bool('overlay', True, 'Draw the maps over the images (jet); '
                             '--nooverlay draws them alone in grey.')


def method_options(name: str, *, layer, samples, noise_level, steps, rule, window, stride,
                   chunk) -> dict:
  """The keyword arguments of `jaxviz.attribution_maps` that apply to method `name`."""
  return {
      'grad_cam': dict(layer=layer), 'guided_grad_cam': dict(layer=layer),
      'smoothgrad': dict(samples=samples, noise_level=noise_level,
                         sample_chunk=min(chunk, samples), chunk_size=1),
      'integrated_gradients': dict(steps=steps, rule=rule, step_chunk=min(chunk, steps),
                                   chunk_size=1),
      'occlusion': dict(window=window, stride=stride, window_chunk=chunk, chunk_size=1),
  }.get(name, {})


@common.one_line_errors
def main(argv):
  del argv
  common.check_flags(__name__)
  methods = common.check_names(_METHODS.value, jaxviz.attribution_methods(), '--methods',
                              'method')
  images = common.attribution_images(_COMMON)
  size = min(images.images.shape[1:3])
  window, stride, how = common.occluder(size, _WINDOW.value, _STRIDE.value)
  common.enable_compilation_cache()
  model = common.resolve_model(_COMMON.model.value, _COMMON.weights.value)
  layer = None
  if {'grad_cam', 'guided_grad_cam'} & set(methods):
    layer = _LAYER.value or DEFAULT_LAYERS.get(model.name)
    if layer is None:
      raise jaxviz.InputError(f'no default Grad-CAM layer for {model.name}: pass --layer')
    if layer not in model.layer_names:
      close = difflib.get_close_matches(layer, model.layer_names, n=3, cutoff=0.5)
      raise jaxviz.InputError(f'--layer: unknown layer {layer!r} for {model.name}; '
                              + (f'did you mean {", ".join(close)}? ' if close else '')
                              + f'it has {len(model.layer_names)} layers, from '
                              f'{model.layer_names[0]} to {model.layer_names[-1]}')
  labels, source = common.resolve_labels(model, images, _LABELS.value)
  x = model.preprocess(images.images)
  key = jax.random.key(_COMMON.seed.value)
  settings = dict(layer=layer, samples=_SAMPLES.value, noise_level=_NOISE_LEVEL.value,
                  steps=_STEPS.value, rule=_RULE.value, window=window, stride=stride,
                  chunk=_CHUNK.value)

  maps, timings = {}, {}
  for name in methods:
    start = time.perf_counter()
    maps[name] = np.asarray(jaxviz.attribution_maps(
        model, name, x, labels, key=key, **method_options(name, **settings)), np.float32)
    timings[name] = round(time.perf_counter() - start, 3)

  out = _COMMON.output_dir.value
  n = len(images.names)
  label_names = [model.class_names[k] for k in labels]
  title = (f'{model.name} attribution maps ({common.weights_label(model)}); each map '
           'clipped at its 99th percentile')
  figures.save(figures.attribution_grid_figure(
      images.images / 255.0, maps, [f'{name}\n{cls}' for name, cls in
                                    zip(images.names, label_names)], title,
      overlay=_OVERLAY.value), os.path.join(out, 'attribution.png'))
  common.save_npz(os.path.join(out, 'results.npz'), images=images.images, labels=labels,
                  label_names=label_names, names=list(images.names),
                  methods=list(methods), **{f'maps_{m}': v for m, v in maps.items()})
  common.write_manifest(out, common.script_flags(), model, label_source=source,
                        methods=list(methods), seconds=timings,
                        options={m: {k: v for k, v in method_options(m, **settings).items()
                                     if k not in ('chunk_size',)} for m in methods},
                        occlusion={'window': window, 'stride': stride, 'chosen': how})
  print(f'{model.name} ({common.weights_label(model)}): {len(methods)} attribution methods '
        f'on {n} images of {size}x{size}, classes from {source}')
  for name in methods:
    m = maps[name]
    zero = int((~m.reshape(n, -1).any(axis=1)).sum())
    detail = {'grad_cam': f'layer {layer}', 'guided_grad_cam': f'layer {layer}',
              'smoothgrad': f'{_SAMPLES.value} samples, noise {_NOISE_LEVEL.value:g}',
              'integrated_gradients': f'{_STEPS.value} steps, {_RULE.value}',
              'occlusion': f'window {window}, stride {stride} ({how})'}.get(name, '')
    print(f'  {name:<21} {timings[name]:7.2f} s (first call, compiles)  max {m.max():.3g}'
          f'{f", {zero} all-zero map(s)" if zero else ""}{f"  [{detail}]" if detail else ""}')
  print(f'wrote {out}/attribution.png, results.npz, manifest.json')


if __name__ == '__main__':
  app.run(main, flags_parser=common.parse_flags)
