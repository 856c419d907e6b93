"""python -m weights_convert --model=NAME [--checkpoint=FILE.pth] [--output=PATH]
    [--torchvision_weights=IMAGENET1K_V1]

Without --checkpoint, fetches torchvision's ImageNet weights (hash-checked, cached): its
default ones, or those --torchvision_weights names.
Without --output, writes to the cache that jaxviz.load_model(NAME, 'imagenet') reads.
A checkpoint holding NaN or inf is refused unless --allow_nonfinite. Ctrl-C leaves the
output as it was (the file is written atomically).
"""

import sys
import warnings

from absl import app, flags

import jaxviz
from jaxviz import checkpoint
from weights_convert import convert

_MODEL = flags.DEFINE_enum('model', None, sorted(jaxviz.ARCHITECTURES), 'Architecture.')
_CHECKPOINT = flags.DEFINE_string(
    'checkpoint', None, 'A torch state_dict .pth; default: download torchvision\'s.')
_OUTPUT = flags.DEFINE_string('output', None, 'Output .npz; default: the jaxviz cache.')
_CLASS_NAMES = flags.DEFINE_string(
    'class_names', None, 'Text file, one class name per line (default: ImageNet).')
_ALLOW_NONFINITE = flags.DEFINE_bool(
    'allow_nonfinite', False, 'Convert a checkpoint holding NaN or inf, with a warning, '
    'instead of refusing it; jaxviz.load_model then loads the file with a warning too.')
_TORCHVISION_WEIGHTS = flags.DEFINE_string(
    'torchvision_weights', None, "torchvision's weights to download, by name "
    '(IMAGENET1K_V1, IMAGENET1K_V2; default: its DEFAULT, e.g. V2 for resnet50). With '
    '--checkpoint: check that the file is those weights (its sha256 prefix).')
flags.mark_flag_as_required('model')


def main(argv):
  del argv
  output = _OUTPUT.value or jaxviz.loading.imagenet_weights_path(_MODEL.value)
  class_names = None
  try:
    if _CLASS_NAMES.value:
      with open(_CLASS_NAMES.value) as f:
        class_names = [line.strip() for line in f if line.strip()]
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter('always', checkpoint.NonFiniteWarning)
      convert(_MODEL.value, output, _CHECKPOINT.value, class_names,
              allow_nonfinite=_ALLOW_NONFINITE.value,
              torchvision_weights=_TORCHVISION_WEIGHTS.value)
  except (jaxviz.JaxvizError, OSError) as e:
    sys.exit(f'error: {e}')
  except KeyboardInterrupt:  # atomic_write has removed its temporary file
    sys.exit('error: interrupted; nothing written')
  for w in caught:
    if issubclass(w.category, checkpoint.NonFiniteWarning):
      print(f'warning: {w.message}', file=sys.stderr)
    else:  # others (torch's, say) as Python shows them
      warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
  print(f'wrote {output}')


if __name__ == '__main__':
  app.run(main)
