"""Pickle-free weights files: an .npz of arrays plus JSON metadata, written atomically.

Layout: one array per parameter, keyed by its dotted path in jaxviz's parameter tree
('features.3.squeeze.kernel', in JAX layout: conv HWIO, linear (in, out)), and a uint8
array '__metadata__' holding UTF-8 JSON (model name, source file and sha256, class names,
mean/std, ...). Read with allow_pickle=False, so loading never runs code. The zip
container's CRC32 per array catches corrupted bytes; a truncated file fails to open.
"""

import contextlib
import hashlib
import json
import os
import re
import signal
import tempfile
import threading
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


class NonFiniteWarning(RuntimeWarning):
  """Parameters holding NaN or inf, converted or loaded because the caller allowed it."""


def count_nonfinite(flat: Mapping[str, np.ndarray]) -> dict[str, tuple[int, int]]:
  """{key: (how many values are NaN or inf, how many values)} for the arrays with any."""
  counts = {}
  for key, value in flat.items():
    array = np.asarray(value)
    if array.dtype.kind in 'fc':
      bad = array.size - int(np.count_nonzero(np.isfinite(array)))
      if bad:
        counts[key] = (bad, array.size)
  return counts


def describe_nonfinite(counts: Mapping[str, tuple[int, int]], limit: int = 5) -> str:
  """'features.0.weight (2 of 1728 values), ...' for `count_nonfinite`'s result."""
  items = [f'{key} ({bad} of {size} values)' for key, (bad, size) in counts.items()]
  more = f' and {len(items) - limit} more' if len(items) > limit else ''
  return ', '.join(items[:limit]) + more


class _Terminated(BaseException):
  """SIGTERM arrived while `atomic_write` held a temporary file."""


@contextlib.contextmanager
def _sigterm_raises():
  """While active, SIGTERM raises _Terminated instead of ending the process at once.

  Only in the main thread (the only one that runs Python signal handlers, and the only
  one allowed to set them) and only over the default handler: a program's own handler
  is left alone (an exception it raises unwinds through the cleanup anyway), and an
  ignored SIGTERM stays ignored.
  """
  if (threading.current_thread() is not threading.main_thread()
      or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL):
    yield
    return

  def on_sigterm(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the cleanup
    raise _Terminated

  signal.signal(signal.SIGTERM, on_sigterm)
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _is_live_process(pid: int) -> bool:
  try:
    os.kill(pid, 0)  # signal 0: checks that the process exists, sends nothing
  except (ProcessLookupError, OverflowError):
    return False
  except OSError:  # PermissionError: it exists, under another user
    return True
  return True


def _remove_stale_temporaries(directory: str, name: str) -> None:
  """Removes `atomic_write`'s temporaries of `name` whose writer's PID is not a live
  process (one killed with SIGKILL, or by a power cut). A live writer's stays."""
  if os.name != 'posix':  # os.kill(pid, 0) is a probe on POSIX only
    return
  pattern = re.compile(re.escape(f'.{name}.') + r'(\d+)\.[a-z0-9_]+\.tmp')
  try:
    entries = os.listdir(directory)
  except OSError:
    return
  for entry in entries:
    match = pattern.fullmatch(entry)
    if match and not _is_live_process(int(match.group(1))):
      with contextlib.suppress(OSError):  # another writer may have removed it first
        os.remove(os.path.join(directory, entry))


def atomic_write(path: str | os.PathLike, write_fn) -> None:
  """Calls write_fn(file) on a temporary file beside `path`, then renames it into place.

  An interrupted run leaves either the old file or none, never a half-written one:

  - An exception in write_fn (KeyboardInterrupt included) removes the temporary.
  - SIGTERM while writing, in the main thread with SIGTERM's default handler, is turned
    into an exception by a temporary handler, so the temporary is removed; the previous
    (default) handler is then restored and the signal raised again, so the process still
    ends as SIGTERM ends it. A program's own SIGTERM handler is left in place.
  - SIGKILL cannot be caught: the temporary, `.NAME.<pid>.<random>.tmp`, stays, and the
    next write of the same `path` removes it once no process has that PID. A live
    writer's temporary is never removed (on a folder shared between machines, a PID is
    checked on this machine only).

  Args:
    path: the file to write.
    write_fn: called with the temporary file, open for binary writing.
  """
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  name = os.path.basename(path)
  os.makedirs(directory, exist_ok=True)
  _remove_stale_temporaries(directory, name)
  try:
    with _sigterm_raises():
      tmp = None
      try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f'.{name}.{os.getpid()}.',
                                   suffix='.tmp')
        with os.fdopen(fd, 'wb') as f:
          write_fn(f)
          f.flush()
          os.fsync(f.fileno())
        umask = os.umask(0)  # mkstemp makes 0600; give the file the mode open() would
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
      except BaseException:
        if tmp is not None and os.path.exists(tmp):
          os.remove(tmp)
        raise
  except _Terminated:
    signal.raise_signal(signal.SIGTERM)  # the default handler is back: this ends the process
    raise SystemExit(128 + signal.SIGTERM) from None  # not reached


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
