"""Where jaxviz keeps the files it makes: converted weights and the trained shapes model."""

import os


def cache_dir() -> str:
  """The cache folder: $JAXVIZ_CACHE, else ~/.cache/jaxviz."""
  return os.environ.get('JAXVIZ_CACHE') or os.path.join(
      os.path.expanduser('~'), '.cache', 'jaxviz')


def imagenet_weights_path(name: str) -> str:
  """The converted ImageNet weights of architecture `name`."""
  return os.path.join(cache_dir(), f'{name}_imagenet.npz')


def shapes_weights_path(seed: int = 0) -> str:
  """The trained shapes model of training seed `seed`."""
  return os.path.join(cache_dir(), f'shapes_seed{seed}.npz')
