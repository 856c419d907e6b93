"""python -m weights_convert --model=NAME [--checkpoint=FILE.pth] [--output=PATH]

Without --checkpoint, fetches torchvision's ImageNet weights (hash-checked, cached).
Without --output, writes to the cache that jaxviz.load_model(NAME, 'imagenet') reads.
"""

import sys

from absl import app, flags

import jaxviz
from weights_convert import convert

_MODEL = flags.DEFINE_enum('model', None, sorted(jaxviz.ARCHITECTURES), 'Architecture.')
_CHECKPOINT = flags.DEFINE_string(
    'checkpoint', None, 'A torch state_dict .pth; default: download torchvision\'s.')
_OUTPUT = flags.DEFINE_string('output', None, 'Output .npz; default: the jaxviz cache.')
_CLASS_NAMES = flags.DEFINE_string(
    'class_names', None, 'Text file, one class name per line (default: ImageNet).')
flags.mark_flag_as_required('model')


def main(argv):
  del argv
  output = _OUTPUT.value or jaxviz.loading.imagenet_weights_path(_MODEL.value)
  class_names = None
  try:
    if _CLASS_NAMES.value:
      with open(_CLASS_NAMES.value) as f:
        class_names = [line.strip() for line in f if line.strip()]
    convert(_MODEL.value, output, _CHECKPOINT.value, class_names)
  except (jaxviz.JaxvizError, OSError) as e:
    sys.exit(f'error: {e}')
  print(f'wrote {output}')


if __name__ == '__main__':
  app.run(main)
