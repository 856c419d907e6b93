"""Convolution filters: the first layer's kernels as RGB tiles, or a deeper convolution's
kernels per (output, input) channel (the course's "visualiser les filtres"; Krizhevsky et
al. 2012, Fig. 3).

  python scripts/filters.py [--model=squeezenet1_1] [--weights=imagenet]
      [--layer=features.0|features.3.expand3x3|...] [--max_filters=N] [--max_inputs=16]
      [--scale=filter|joint] [--output_dir=outputs/filters]

--layer names a convolution of Model.layer_names (default: the first, which sees RGB; a
SqueezeNet Fire module's are 'features.3.squeeze', '.expand1x1', '.expand3x3'). The first
convolution is drawn as RGB tiles; a deeper one as a grid, rows output channels and
columns input channels. Writes filters.png, results.npz (all the layer's kernels,
(C_out, C_in, k, k), torch's layout) and manifest.json into --output_dir.
"""

import os

import numpy as np
from absl import app, flags

from jaxviz import figures, inspection
import common

_COMMON = common.define_common_flags('filters')
flags.adopt_module_key_flags(common)  # --helpshort lists the shared flags too
_LAYER = flags.DEFINE_string('layer', None, 'A convolution\'s layer name. Default: the '
                             'first convolution.')
_MAX_FILTERS = flags.DEFINE_integer(
    'max_filters', None, 'Draw the first this many filters (output channels; 0: all). '
    'Default: all for the first layer, 8 rows for a deeper one.', lower_bound=0)
_MAX_INPUTS = flags.DEFINE_integer('max_inputs', 16, 'A deeper layer: draw the first this '
                                   'many input channels per filter.', lower_bound=1)
_SCALE = flags.DEFINE_enum(
    'scale', 'filter', ['filter', 'joint'], "First layer: 'filter' maps each filter to "
    "[0, 1] by its own min-max (every pattern visible); 'joint' by the min-max of all "
    '(strengths compare). Deeper layers always use one scale symmetric about 0.')


@common.one_line_errors
def main(argv):
  del argv
  common.check_flags(__name__)
  common.enable_compilation_cache()
  model = common.resolve_model(_COMMON.model.value, _COMMON.weights.value)
  first = inspection.first_conv(model)
  layer = _LAYER.value or first
  weights = inspection.layer_filters(model, model.params, layer)  # one-line error if no conv
  out = _COMMON.output_dir.value
  total = weights.shape[0]
  limit = _MAX_FILTERS.value
  if limit is None:
    limit = 0 if layer == first else 8
  shown = min(total, limit or total)
  kernel = f'{weights.shape[2]} x {weights.shape[3]}'
  if layer == first:
    tiles = inspection.first_layer_filters(model, model.params, _SCALE.value)[:shown]
    how = {'filter': 'each scaled by its own min-max',
           'joint': 'one min-max for all'}[_SCALE.value]
    title = (f'{model.name} {layer}: {shown} of {total} first-layer filters ({kernel} x 3 '
             f'RGB), {how}; {common.weights_label(model)}')
    fig = figures.first_layer_filters_figure(tiles, title)
  else:
    title = (f'{model.name} {layer}: {total} filters of {weights.shape[1]} input channels, '
             f'{kernel}; {common.weights_label(model)}')
    fig = figures.layer_filters_figure(weights, title, max_outputs=shown,
                                       max_inputs=_MAX_INPUTS.value)
  figures.save(fig, os.path.join(out, 'filters.png'))
  norms = np.sqrt((weights.astype(np.float64) ** 2).sum(axis=(1, 2, 3)))
  common.save_npz(os.path.join(out, 'results.npz'), filters=weights, layer=layer,
                  filter_norms=norms)
  common.write_manifest(out, common.script_flags(), model, layer=layer,
                        shape=list(weights.shape), figures=['filters.png'])
  print(f'{model.name} ({common.weights_label(model)}): {layer} has {total} filters of '
        f'{weights.shape[1]} x {kernel}; L2 norms from {norms.min():.3g} to {norms.max():.3g}')
  print(f'wrote {out}/: filters.png, results.npz, manifest.json')


if __name__ == '__main__':
  app.run(main, flags_parser=common.parse_flags)
