"""Saliency maps (Simonyan et al. 2014): figures 1-4 of the course report.

  python scripts/saliency.py [--model=squeezenet1_1] [--objective=score|cross_entropy]
      [--images=samples] [--labels=tabby,espresso,...] [--output_dir=outputs/saliency]

Writes saliency.png (images above, maps below), results.npz (images, maps, labels) and
manifest.json into --output_dir.
"""

import os

from absl import app, flags

from jaxviz import data, figures
import common

_COMMON = common.define_common_flags('saliency')
flags.adopt_module_key_flags(common)  # --helpshort lists the shared flags too
_OBJECTIVE = flags.DEFINE_enum(
    'objective', 'score', ['score', 'cross_entropy'],
    "Differentiate the class score (the paper) or the cross-entropy (the reports' variant).")
_LABELS = flags.DEFINE_list(
    'labels', None, 'Class names or indices to explain, one for all images or one per '
    "image. Default: the images' labels when they have some, else the predicted class.")


@common.one_line_errors
def main(argv):
  del argv
  common.check_flags(__name__)
  images = data.load_images(_COMMON.images.value, _COMMON.image_size.value)
  common.enable_compilation_cache()
  model = common.resolve_model(_COMMON.model.value, _COMMON.weights.value)
  n = len(images.names)
  labels, source = common.resolve_labels(model, images, _LABELS.value)

  maps, timings = common.run_saliency(model, images.images, labels, _OBJECTIVE.value)

  out = _COMMON.output_dir.value
  title = (f'{model.name} saliency ({_OBJECTIVE.value.replace("_", "-")}), '
           f'{common.weights_label(model)}')
  figures.save(common.saliency_plot(model, images.images, maps, labels, title),
               os.path.join(out, 'saliency.png'))
  common.save_npz(os.path.join(out, 'results.npz'), images=images.images, maps=maps,
                  labels=labels, label_names=[model.class_names[k] for k in labels],
                  names=list(images.names))
  common.write_manifest(out, common.script_flags(), model, timings=timings,
                        label_source=source)
  print(f'{model.name} ({common.weights_label(model)}): {n} saliency maps of '
        f'{maps.shape[1]}x{maps.shape[2]} ({_OBJECTIVE.value}), classes from {source}; '
        f'first call {timings["first_call_s"]:.2f} s (compiles), second '
        f'{timings["second_call_s"]:.3f} s')
  for name, k, m in zip(images.names, labels, maps):
    print(f'  {name:>14}: {model.class_names[k]:<24} max |grad| {m.max():.3g}')
  print(f'wrote {out}/saliency.png, results.npz, manifest.json')


if __name__ == '__main__':
  app.run(main, flags_parser=common.parse_flags)
