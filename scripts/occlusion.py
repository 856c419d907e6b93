"""Occlusion sensitivity (Zeiler & Fergus 2014, sec. 4.2 and Fig. 7): slide a square
over each image and record the class's probability, its score drop and the predicted
class at every position.

  python scripts/occlusion.py [--model=squeezenet1_1] [--images=samples]
      [--labels=tabby,espresso,...] [--window=16] [--stride=8] [--fill=0]
      [--output_dir=outputs/occlusion]

Writes occlusion_<image name>.png per image (the occluder, the label's probability and
score drop by occluder position, the predicted class by position, and the per-pixel
attribution), results.npz (images, labels, and the jaxviz.Occlusion fields probability,
score_drop, predicted (N, gh, gw) and attribution (N, H, W)) and manifest.json into
--output_dir. Unset, --window and --stride are 16 and 8 px at 224 px and scaled to
smaller images (5 and 2 px on the 64-px shapes images). On the shapes model the default
--images=samples becomes generated shapes images.
"""

import os
import re
import time

import jax
import numpy as np
from absl import app, flags

import jaxviz
from jaxviz import figures
import common

_COMMON = common.define_common_flags('occlusion')
flags.adopt_module_key_flags(common)  # --helpshort lists the shared flags too
_LABELS = flags.DEFINE_list(
    'labels', None, 'Class names or indices to explain, one for all images or one per '
    "image. Default: the images' labels when they have some, else the predicted class.")
_WINDOW = flags.DEFINE_integer(
    'window', None, f"The square's side in pixels. Default {common.WINDOW} at "
    f'{common.REFERENCE_SIZE} px '
    'and above, scaled to smaller images.', lower_bound=1)
_STRIDE = flags.DEFINE_integer(
    'stride', None, f'Pixels between window positions. Default {common.STRIDE} at '
    f'{common.REFERENCE_SIZE} px and above, scaled to smaller images.', lower_bound=1)
_FILL = flags.DEFINE_float('fill', 0.0, "The square's value in normalised space (0: the "
                           "dataset's mean colour, the paper's grey square).")
_CHUNK = flags.DEFINE_integer('chunk', 32, 'At most this many occluded images per forward '
                              'pass, one image at a time: bounds memory.', lower_bound=1)


def file_names(names) -> list[str]:
  """occlusion_<name>.png per image: the name's odd characters replaced, and made unique."""
  files, seen = [], set()
  for i, name in enumerate(names):
    stem = re.sub(r'[^A-Za-z0-9_.-]+', '_', str(name)).strip('._') or f'image{i}'
    file = f'occlusion_{stem}.png'
    if file in seen:
      file = f'occlusion_{stem}_{i}.png'
    seen.add(file)
    files.append(file)
  return files


@common.one_line_errors
def main(argv):
  del argv
  common.check_flags(__name__)
  images = common.attribution_images(_COMMON)
  size = min(images.images.shape[1:3])
  window, stride, how = common.occluder(size, _WINDOW.value, _STRIDE.value)
  common.enable_compilation_cache()
  model = common.resolve_model(_COMMON.model.value, _COMMON.weights.value)
  labels, source = common.resolve_labels(model, images, _LABELS.value)
  x = model.preprocess(images.images)

  start = time.perf_counter()
  result = jax.tree.map(np.asarray, jaxviz.occlusion(
      model, model.params, x, labels, window=window, stride=stride, fill=_FILL.value,
      window_chunk=_CHUNK.value, chunk_size=1, cpu_kernels=model.cpu_kernels))
  seconds = round(time.perf_counter() - start, 3)
  clean = np.asarray(jax.nn.softmax(jax.jit(model.apply)(model.params, x)))
  clean = clean[np.arange(len(labels)), labels]

  out = _COMMON.output_dir.value
  files = file_names(images.names)
  for i, (name, file) in enumerate(zip(images.names, files)):
    title = (f'{model.name} occlusion of {name!r}, label {model.class_names[labels[i]]!r} '
             f'(p = {clean[i]:.3g} unoccluded; {common.weights_label(model)})')
    figures.save(figures.occlusion_figure(
        images.images[i] / 255.0, jax.tree.map(lambda a, i=i: a[i], result),
        model.class_names, labels[i], window, stride, title), os.path.join(out, file))
  common.save_npz(os.path.join(out, 'results.npz'), images=images.images, labels=labels,
                  label_names=[model.class_names[k] for k in labels],
                  names=list(images.names), clean_probability=clean, window=window,
                  stride=stride, fill=_FILL.value, **result._asdict())
  common.write_manifest(out, common.script_flags(), model, label_source=source,
                        seconds=seconds, figures=files,
                        occlusion={'window': window, 'stride': stride, 'chosen': how,
                                   'grid': list(result.probability.shape[1:])})
  gh, gw = result.probability.shape[1:]
  print(f'{model.name} ({common.weights_label(model)}): occlusion of {len(labels)} images '
        f'of {size}x{size}, window {window} px, stride {stride} ({how}): {gh}x{gw} '
        f'positions each, {seconds:.2f} s (compiles); classes from {source}')
  for i, name in enumerate(images.names):
    r, c = np.unravel_index(int(np.argmax(result.score_drop[i])), (gh, gw))
    classes, counts = np.unique(result.predicted[i], return_counts=True)
    print(f'  {name:>14}: {model.class_names[labels[i]]:<22} p {clean[i]:.3g} -> min '
          f'{result.probability[i].min():.3g}; largest drop '
          f'{result.score_drop[i].max():.3g} at rows {r * stride}-{r * stride + window - 1}, '
          f'cols {c * stride}-{c * stride + window - 1}; mostly predicted '
          f'{model.class_names[classes[np.argmax(counts)]]!r}')
  print(f'wrote {out}/{files[0]}{" ..." if len(files) > 1 else ""}, results.npz, '
        'manifest.json')


if __name__ == '__main__':
  app.run(main, flags_parser=common.parse_flags)
