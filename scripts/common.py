"""What the absl scripts share: one-line errors, weights resolution, run manifests."""

import functools
import json
import os
import platform
import sys
import time

import jax
from absl import logging

import jaxviz

logging.set_verbosity(logging.WARNING)  # hide JAX's backend-probing INFO lines


def one_line_errors(main):
  """Turns jaxviz's input and weights errors into `error: ...` and exit status 1."""

  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except jaxviz.JaxvizError as e:
      sys.exit(f'error: {e}')

  return wrapped


def resolve_model(name: str, weights: str, fallback: str = 'random') -> jaxviz.Model:
  """load_model, but for 'imagenet' first converts the official weights if none are
  cached; where that fails (no network), says so in one line and uses `fallback`."""
  if weights == 'imagenet' and not os.path.isfile(jaxviz.loading.imagenet_weights_path(name)):
    try:
      import weights_convert  # needs the [torch] extra
      weights_convert.convert(name, jaxviz.loading.imagenet_weights_path(name))
    except (jaxviz.WeightsError, ImportError) as e:
      print(f'note: ImageNet weights for {name} unavailable ({e}); continuing with '
            f'{fallback} weights, so predictions are meaningless', file=sys.stderr)
      return jaxviz.load_model(name, fallback)
  return jaxviz.load_model(name, weights)


def write_manifest(output_dir: str, flags_dict: dict, model: jaxviz.Model, **extra):
  """manifest.json: what it takes to re-make this run's outputs exactly."""
  import importlib.metadata as md
  versions = {p: md.version(p) for p in ('jax', 'jaxlib', 'flax', 'optax', 'numpy')}
  manifest = {
      'jaxviz': jaxviz.__version__, 'command': sys.argv, 'flags': flags_dict,
      'model': model.name, 'weights': model.metadata, 'versions': versions,
      'python': platform.python_version(), 'devices': [str(d) for d in jax.devices()],
      'time': time.strftime('%Y-%m-%dT%H:%M:%S%z'), **extra}
  manifest['weights'] = {k: v for k, v in model.metadata.items() if k != 'class_names'}
  path = os.path.join(output_dir, 'manifest.json')
  jaxviz.checkpoint.atomic_write(path, lambda f: f.write(
      json.dumps(manifest, indent=2, default=str).encode()))
  return path
