"""Trains the shapes model (jaxviz.training) and writes it where load_model('shapes') looks.

  python scripts/train_shapes.py [--seed=0] [--steps=2500] [--input_noise=0.03]
      [--output=PATH] [--force]

load_model('shapes') and the scripts train it on first use anyway; this script is for
choosing the seed, the step count or the training noise, retraining, or writing the file
elsewhere.
"""

import os

from absl import app, flags

from jaxviz import checkpoint, training
import common

_SEED = flags.DEFINE_integer('seed', 0, 'Init and data seed.')
_STEPS = flags.DEFINE_integer('steps', training.ShapesTraining.steps, 'Optimiser steps.',
                              lower_bound=1)
_NOISE = flags.DEFINE_float('input_noise', training.ShapesTraining.input_noise,
                            'Std of the uniform noise added to training pixels ([0, 1] '
                            'units; 0 for none).', lower_bound=0.0)
_OUTPUT = flags.DEFINE_string('output', None, 'Weights file (default: the cache that '
                              "load_model('shapes', seed=SEED) reads).")
_FORCE = flags.DEFINE_bool('force', False, 'Retrain even if the file exists.')


@common.one_line_errors
def main(argv):
  del argv
  common.check_flags(__name__)  # --input_noise >= 0 and finite, --output writable
  path = _OUTPUT.value or training.weights_path(_SEED.value)
  if os.path.isfile(path) and not _FORCE.value:
    print(f'{path} exists (use --force to retrain)')
    return
  common.check_output_file(path, '--output')
  params, metadata = training.train(
      training.ShapesTraining(seed=_SEED.value, steps=_STEPS.value,
                              input_noise=_NOISE.value))
  checkpoint.save(path, params, metadata)
  print(f'held-out accuracy {metadata["test_accuracy"]:.1%} after {_STEPS.value} steps '
        f'({metadata["train_seconds"]:.0f} s); wrote {path}')


if __name__ == '__main__':
  app.run(main, flags_parser=common.parse_flags)
