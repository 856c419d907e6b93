"""Pickle-free weights files: an .npz of arrays plus JSON metadata, written atomically.

Layout: one array per parameter, keyed by its dotted path in jaxviz's parameter tree
('features.3.squeeze.kernel', in JAX layout: conv HWIO, linear (in, out)), and a uint8
array '__metadata__' holding UTF-8 JSON (model name, source file and sha256, class names,
mean/std, ...). Read with allow_pickle=False, so loading never runs code. The zip
container's CRC32 per array catches corrupted bytes; a truncated file fails to open.
"""

import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Mapping

import numpy as np

from jaxviz.errors import WeightsError

FORMAT_VERSION = 1
_METADATA_KEY = '__metadata__'


def sha256_file(path: str | os.PathLike) -> str:
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      h.update(block)
  return h.hexdigest()


def atomic_write(path: str | os.PathLike, write_fn) -> None:
  """Calls write_fn(file) on a temporary file beside `path`, then renames it into place.

  An interrupted run leaves either the old file or none, never a half-written one.
  """
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix='.' + os.path.basename(path) + '.',
                             suffix='.tmp')
  try:
    with os.fdopen(fd, 'wb') as f:
      write_fn(f)
      f.flush()
      os.fsync(f.fileno())
    umask = os.umask(0)  # mkstemp makes 0600; give the file the mode open() would
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def flatten(tree: Mapping, prefix: str = '') -> dict[str, np.ndarray]:
  """Nested dict -> {'features.3.squeeze.kernel': array}."""
  flat = {}
  for key, value in tree.items():
    name = f'{prefix}{key}'
    if isinstance(value, Mapping):
      flat.update(flatten(value, name + '.'))
    else:
      flat[name] = value
  return flat


def unflatten(flat: Mapping[str, np.ndarray]) -> dict:
  """Inverse of `flatten`; integer path parts (list indices) become ints."""
  tree: dict = {}
  for name, value in flat.items():
    *parents, leaf = [int(p) if p.isdigit() else p for p in name.split('.')]
    node = tree
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def save(path: str | os.PathLike, params: Mapping, metadata: Mapping) -> None:
  """Writes a nested params dict and its metadata to `path` atomically."""
  arrays = {k: np.asarray(v) for k, v in flatten(params).items()}
  meta = dict(metadata, format_version=FORMAT_VERSION)
  arrays[_METADATA_KEY] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
  atomic_write(path, lambda f: np.savez(f, **arrays))


def load(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
  """Reads a weights file; returns (flat arrays, metadata). Fails loudly on any damage."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise WeightsError(f'weights file not found: {path}')
  try:
    with np.load(path, allow_pickle=False) as npz:
      arrays = {k: npz[k] for k in npz.files}  # reading each member checks its CRC32
  except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
    raise WeightsError(f'{path} is corrupt or truncated ({type(e).__name__}: {e}); '
                       're-create it with python -m weights_convert') from None
  if _METADATA_KEY not in arrays:
    raise WeightsError(f'{path} is not a jaxviz weights file (no metadata)')
  try:
    meta = json.loads(arrays.pop(_METADATA_KEY).tobytes().decode())
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise WeightsError(f'{path} has unreadable metadata: {e}') from None
  if meta.get('format_version') != FORMAT_VERSION:
    raise WeightsError(f'{path} has format version {meta.get("format_version")}, '
                       f'this jaxviz reads version {FORMAT_VERSION}')
  return arrays, meta
