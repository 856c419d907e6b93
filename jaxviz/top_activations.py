"""The top-N images of every channel of a layer, over a whole data set, streamed.

The "top-N patches" procedure of feature visualisation (course notes, seed 002;
Zeiler & Fergus 2014, Sec. 4, Fig. 2): pass a data set through the network, keep for each
channel of a layer the N images whose strongest unit in that channel is the largest, and
show the image patch each of those units sees (its receptive field) and what the unit
projects back to the pixels. This module does the first, expensive part over any number
of images: one pass, in fixed-size batches, that holds only the running top-N (C, N) of
every channel at once, never the data set or its activations.

Procedure, per batch:
  1. preprocess the uint8 images, run the model up to `layer`: activations (B, H, W, C);
  2. per image and channel, the maximum over space and the unit (row, col) holding it;
  3. merge those B candidates with the running top-N of each channel (an exact sort of
     the N + B candidates, keep the first N).
Steps 1-3 are one compiled program per batch shape (the last, short batch is padded, so
one program serves the whole run).

Order and ties (deterministic, whatever the batch size, device count, process count or
resumption point): a channel's entries are sorted by value, largest first; equal values
go to the lower image index first. Within an image, an equal maximum at several units
goes to the first in row-major order (lowest row, then lowest column). Zero and minus
zero are equal. An image appears at most once per channel. A unit whose activation is
NaN or infinite is never chosen (it counts as -inf), and the number of images with any
such value is kept (`TopK.nonfinite`) and reported with a `NonFiniteWarning`.

Because the merge is an exact sort on (value, index), any split of the images gives the
same result: batches, devices (the batch is split over the 'data' axis of
`jaxviz.parallel`'s mesh, parameters replicated; each device computes its images'
candidates, and the same program sorts them all), processes (with `jax.distributed`,
process p streams the batches b with b % P == p, and the per-process results are
gathered and merged at the end), and a run resumed from a checkpoint.

Sources (`open_source`): a folder of images, an .npz with `images`, 'tfds:NAME[:SPLIT[:COUNT]]'
(a tensorflow-datasets data set prepared on disk, read by random access), 'shapes:N[:SEED]'
(N generated shapes images, `jaxviz.shapes`, made batch by batch), or an array of uint8
images. Every image has a stable global index (its position in the source), which the
results name it by; `ImageSource.read(indices)` fetches images by index afterwards.

References:
  Zeiler, M. D. and Fergus, R. (2014). Visualizing and understanding convolutional
  networks. ECCV. Sec. 4 (top-9 activations per feature map, Fig. 2).
"""

import hashlib
import itertools
import json
import os
import queue
import threading
import warnings
import zipfile
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxviz import _xla_cpu, checkpoint as jcheckpoint, data, parallel
from jaxviz.checkpoint import NonFiniteWarning
from jaxviz.errors import InputError
from jaxviz.methods import layers

# The image index of an empty slot: after every real image in the (value, index) order.
EMPTY_INDEX = np.iinfo(np.int32).max
CHECKPOINT_VERSION = 1


class TopK(NamedTuple):
  """The running top-N of every channel of a layer.

  Attributes:
    values: (C, N) the N largest per-image maxima of each channel, descending; -inf in
      slots not filled yet.
    indices: (C, N) int32 global image indices of those images; EMPTY_INDEX in empty slots.
    units: (C, N, 2) int32 (row, col) of the unit holding each maximum in the layer's
      (H, W) map.
    images_seen: () int32, how many images went into this result.
    nonfinite: () int32, how many of them had a NaN or infinite activation in the layer.
  """
  values: Any
  indices: Any
  units: Any
  images_seen: Any
  nonfinite: Any

  @property
  def n(self) -> int:
    return int(self.values.shape[1])

  @property
  def channels(self) -> int:
    return int(self.values.shape[0])


def empty(channels: int, n: int, dtype=jnp.float32) -> TopK:
  """A TopK holding no image yet: every slot -inf with index EMPTY_INDEX."""
  return TopK(jnp.full((channels, n), -jnp.inf, dtype),
              jnp.full((channels, n), EMPTY_INDEX, jnp.int32),
              jnp.zeros((channels, n, 2), jnp.int32),
              jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def candidates(activations, indices):
  """Each image's maximum per channel and where it is.

  Args:
    activations: (B, H, W, C) a layer's output (or (B, C), read as H = W = 1).
    indices: (B,) int32 global image indices; a negative index marks a padded lane,
      which yields no candidate.

  Returns:
    (values (C, B), indices (C, B), units (C, B, 2), count of real images, count of real
    images with a non-finite activation).
  """
  if activations.ndim == 2:
    activations = activations[:, None, None, :]
  b, h, w, c = activations.shape
  flat = activations.reshape(b, h * w, c)
  finite = jnp.isfinite(flat)
  flat = jnp.where(finite, flat, -jnp.inf)
  unit = jnp.argmax(flat, axis=1)  # the first maximum in row-major order
  value = jnp.max(flat, axis=1)
  value = jnp.where(value == 0, jnp.zeros_like(value), value)  # -0.0 ties with 0.0
  real = indices >= 0
  value = jnp.where(real[:, None], value, -jnp.inf)
  index = jnp.broadcast_to(jnp.where(real, indices, EMPTY_INDEX).astype(jnp.int32)[:, None],
                           (b, c))
  units = jnp.stack([unit // w, unit % w], axis=-1).astype(jnp.int32)
  bad = jnp.sum(real & ~jnp.all(finite, axis=(1, 2)), dtype=jnp.int32)
  return value.T, index.T, jnp.swapaxes(units, 0, 1), jnp.sum(real, dtype=jnp.int32), bad


def merge_candidates(state: TopK, values, indices, units) -> TopK:
  """`state` with candidates (C, M) merged in: the first N of an exact sort of the
  N + M entries of each channel by (value descending, index ascending)."""
  n = state.values.shape[1]
  v = jnp.concatenate([state.values, values.astype(state.values.dtype)], axis=1)
  i = jnp.concatenate([state.indices, indices], axis=1)
  u = jnp.concatenate([state.units, units], axis=1)
  neg, i, rows, cols = jax.lax.sort((-v, i, u[..., 0], u[..., 1]), dimension=1, num_keys=2)
  return state._replace(values=-neg[:, :n], indices=i[:, :n],
                        units=jnp.stack([rows[:, :n], cols[:, :n]], axis=-1))


@jax.jit
def update(state: TopK, activations, indices) -> TopK:
  """One batch merged into the running top-N of every channel (see the module docstring
  for the order and ties).

  Args:
    state: the running TopK (C channels, N slots).
    activations: (B, H, W, C) the layer's activations of the batch.
    indices: (B,) int32 global image indices (negative: padding, ignored).

  Returns:
    The new TopK. Compiles once per (activation shape, N).
  """
  values, index, units, count, bad = candidates(activations, indices)
  merged = merge_candidates(state, values, index, units)
  return merged._replace(images_seen=state.images_seen + count, nonfinite=state.nonfinite + bad)


def merge(*states: TopK) -> TopK:
  """The exact top-N of the union of several results over disjoint images (devices,
  processes): the same as one pass over all their images."""
  first = states[0]
  if any(s.values.shape != first.values.shape for s in states):
    raise InputError(f'cannot merge top-N results of shapes '
                     f'{sorted({tuple(s.values.shape) for s in states})}')
  rest = [jnp.concatenate([jnp.asarray(getattr(s, f)) for s in states[1:]], axis=1)
          for f in ('values', 'indices', 'units')]
  merged = merge_candidates(jax.tree.map(jnp.asarray, first), *rest)
  return merged._replace(images_seen=sum(jnp.asarray(s.images_seen) for s in states),
                         nonfinite=sum(jnp.asarray(s.nonfinite) for s in states))


# ----------------------------------------------------------------------------------------
# Sources


class ImageSource:
  """Images by global index, read in batches: the data set a top-N pass streams.

  Attributes:
    spec: a string naming the source (recorded in checkpoints and manifests).
    length: how many images.
    image_size: the side of the square images it yields.
  """

  def __init__(self, spec: str, length: int, image_size: int,
               read_fn: Callable[[np.ndarray], np.ndarray], names=None, digest: str = ''):
    self.spec, self.length, self.image_size = spec, int(length), int(image_size)
    self._read, self._names, self.digest = read_fn, names, digest

  def __len__(self) -> int:
    return self.length

  def name(self, index: int) -> str:
    """The image's file name (folders) or 'SPEC#INDEX'."""
    if self._names is not None:
      return self._names[int(index)]
    return f'{self.spec}#{int(index)}'

  def read(self, indices) -> np.ndarray:
    """uint8 (len(indices), S, S, 3) images at these global indices."""
    indices = np.asarray(indices, np.int64).reshape(-1)
    if indices.size and (indices.min() < 0 or indices.max() >= self.length):
      raise InputError(f'image indices must lie in [0, {self.length}) for {self.spec}, '
                       f'got [{indices.min()}, {indices.max()}]')
    images = np.asarray(self._read(indices))
    return images.reshape(len(indices), self.image_size, self.image_size, 3)

  def batches(self, batch_size: int, first: int = 0, every: int = 1
              ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(batch number, global indices, uint8 images) for batches first, first + every, ...

    Batch b holds images [b * batch_size, (b + 1) * batch_size) (the last may be short).
    """
    for b in range(first, num_batches(self.length, batch_size), every):
      idx = np.arange(b * batch_size, min((b + 1) * batch_size, self.length))
      yield b, idx, self.read(idx)


def num_batches(length: int, batch_size: int) -> int:
  return -(-length // batch_size)


def _array_source(images, spec: str | None = None) -> ImageSource:
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != images.shape[2]:
    raise InputError(f'images has shape {images.shape}: expected (N, S, S, 3) square RGB')
  if images.dtype != np.uint8:
    raise InputError(f'images must be uint8, got {images.dtype}')
  if not len(images):
    raise InputError('the image source is empty')
  digest = hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()
  return ImageSource(spec or f'array{images.shape}', len(images), images.shape[1],
                     lambda idx: images[idx], digest=digest)


def _shapes_source(spec: str, image_size: int) -> ImageSource:
  from jaxviz import shapes
  parts = spec.split(':')[1:]
  if not parts or len(parts) > 2 or not all(p.isdigit() for p in parts):
    raise InputError(f'expected shapes:COUNT[:SEED], got {spec!r}')
  count, seed = int(parts[0]), int(parts[1]) if len(parts) > 1 else 7
  if count < 1:
    raise InputError(f'{spec}: the image source is empty')
  if image_size < 32:
    raise InputError(f'shapes images are at least 32 pixels, the model takes {image_size}')
  key = jax.random.key(shapes.seed_int(seed))
  chunk = 64  # shapes.generate's compiled shape: the same images, bit for bit

  def read(idx):
    labels = shapes.labels_for(int(idx.max()) + 1, seed)[idx]
    out = []
    for s in range(0, len(idx), chunk):
      part = idx[s:s + chunk].astype(np.int32)
      pad = chunk - len(part)
      im, _ = shapes.sample(key, np.pad(part, (0, pad)), np.pad(labels[s:s + chunk], (0, pad)),
                            image_size)
      out.append(np.asarray(im)[:len(part)])
    return np.concatenate(out)

  return ImageSource(f'shapes:{count}:{seed}', count, image_size, read,
                     digest=f'shapes/{count}/{seed}/{image_size}')


def _folder_source(folder: str, image_size: int) -> ImageSource:
  if not os.path.isdir(folder):
    raise InputError(f'image folder not found: {folder}')
  files = sorted(f for f in os.listdir(folder) if f.lower().endswith(data.IMAGE_EXTENSIONS))
  if not files:
    raise InputError(f'no image files ({", ".join(data.IMAGE_EXTENSIONS)}) in {folder}')
  digest = hashlib.sha256('\n'.join(files).encode()).hexdigest()
  return ImageSource(os.path.abspath(folder), len(files), image_size,
                     lambda idx: np.stack([data.load_image(os.path.join(folder, files[i]),
                                                           image_size) for i in idx]),
                     names=tuple(files), digest=digest)


def _tfds_source(spec: str, image_size: int, data_dir: str | None = None) -> ImageSource:
  parts = spec.split(':')[1:]
  if not parts or not parts[0] or len(parts) > 3 or (len(parts) == 3 and not parts[2].isdigit()):
    raise InputError(f'expected tfds:NAME[:SPLIT[:COUNT]], got {spec!r}')
  name, split = parts[0], parts[1] if len(parts) > 1 else 'validation'
  try:
    import tensorflow_datasets as tfds
    # download=False: never download or prepare implicitly.
    source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except Exception as e:  # tfds raises many types for a dataset that is not there
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise InputError(f'tfds dataset {name}:{split} is not prepared ({reason[:160]}); '
                     f'prepare it first (tfds build {name} --file_format=array_record) or '
                     'pass a folder of images') from None
  length = min(len(source), int(parts[2])) if len(parts) == 3 else len(source)
  if length < 1:
    raise InputError(f'{spec}: the image source is empty')

  def read(idx):
    from PIL import Image
    return np.stack([np.asarray(data.resize_center_crop(data.to_rgb(Image.fromarray(
        np.asarray(source[int(i)]['image']).squeeze())), image_size), np.uint8) for i in idx])

  return ImageSource(f'tfds:{name}:{split}:{length}', length, image_size, read,
                     digest=f'tfds/{name}/{split}/{length}/{image_size}')


def open_source(source, image_size: int) -> ImageSource:
  """An `ImageSource` from a spec: a folder, an .npz with `images`, 'shapes:N[:SEED]',
  'tfds:NAME[:SPLIT[:COUNT]]', a uint8 (N, S, S, 3) array, or an ImageSource (as is).

  Folder and tfds images are resized and centre-cropped to `image_size` as they are
  read; generated shapes are made at that size; .npz and array images must have it.
  """
  if isinstance(source, ImageSource):
    found = source
  elif isinstance(source, (np.ndarray, jax.Array)):
    found = _array_source(source)
  elif not isinstance(source, str) or not source:
    raise InputError(f'source must be a folder, an .npz, shapes:N or tfds:NAME, got {source!r}')
  elif source.startswith('shapes:'):
    found = _shapes_source(source, image_size)
  elif source.startswith('tfds:'):
    found = _tfds_source(source, image_size)
  elif source.endswith('.npz'):
    found = _array_source(data.load_npz(source).images, os.path.abspath(source))
  else:
    found = _folder_source(source, image_size)
  if found.image_size != image_size:
    raise InputError(f'{found.spec} holds {found.image_size}-pixel images; the model takes '
                     f'{image_size}')
  return found


class _Prefetch:
  """Reads the next batch on a background thread while the current one runs."""

  def __init__(self, iterator, depth: int = 2):
    self._queue = queue.Queue(depth)
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, args=(iterator,), daemon=True)
    self._thread.start()

  def _run(self, iterator):
    try:
      for item in iterator:
        while not self._stop.is_set():
          try:
            self._queue.put(('item', item), timeout=0.1)
            break
          except queue.Full:
            continue
        if self._stop.is_set():
          return
      self._queue.put(('done', None))
    except BaseException as e:  # re-raised in the consumer
      self._queue.put(('error', e))

  def __iter__(self):
    while True:
      kind, item = self._queue.get()
      if kind == 'done':
        return
      if kind == 'error':
        raise item
      yield item

  def close(self):
    self._stop.set()


# ----------------------------------------------------------------------------------------
# Checkpoints


def params_digest(params) -> str:
  """sha256 of every parameter's path, dtype, shape and bytes."""
  h = hashlib.sha256()
  for path, leaf in sorted(jax.tree_util.tree_flatten_with_path(params)[0],
                           key=lambda kv: jax.tree_util.keystr(kv[0])):
    a = np.asarray(leaf)
    h.update(f'{jax.tree_util.keystr(path)}|{a.dtype}|{a.shape}|'.encode())
    h.update(np.ascontiguousarray(a).tobytes())
  return h.hexdigest()


def fingerprint(model, params, source: ImageSource, layer: str, n: int, batch_size: int,
                process_index: int = 0, process_count: int = 1) -> dict:
  """What a checkpoint must agree on to be resumed: the same model, weights, layer,
  images, N and batch size (and process share)."""
  return {'version': CHECKPOINT_VERSION, 'model': model.name,
          'weights': params_digest(params), 'layer': layer, 'source': source.spec,
          'source_length': source.length, 'source_digest': source.digest,
          'image_size': source.image_size, 'n': int(n), 'batch_size': int(batch_size),
          'process_index': int(process_index), 'process_count': int(process_count)}


def process_checkpoint_path(path: str, process_index: int, process_count: int) -> str:
  """One checkpoint file per process: 'top.npz' -> 'top.process0-of-2.npz' when P > 1."""
  if process_count == 1:
    return path
  root, ext = os.path.splitext(path)
  return f'{root}.process{process_index}-of-{process_count}{ext or ".npz"}'


def save_checkpoint(path: str, state: TopK, next_batch: int, fp: dict) -> None:
  """Writes the running state atomically (`jaxviz.checkpoint.atomic_write`)."""
  arrays = {f: np.asarray(getattr(state, f)) for f in TopK._fields}
  arrays['next_batch'] = np.asarray(next_batch, np.int64)
  arrays['fingerprint'] = np.frombuffer(json.dumps(fp, sort_keys=True).encode(), np.uint8)
  jcheckpoint.atomic_write(path, lambda f: np.savez(f, **arrays))


def load_checkpoint(path: str, fp: dict | None = None) -> tuple[TopK, int, dict]:
  """(state, next batch number, fingerprint) from a checkpoint; with `fp`, a one-line
  InputError unless the checkpoint's fingerprint equals it."""
  try:
    with np.load(path, allow_pickle=False) as npz:
      arrays = {k: npz[k] for k in npz.files}
    saved = json.loads(arrays['fingerprint'].tobytes().decode())
    state = TopK(*(arrays[f] for f in TopK._fields))
    next_batch = int(arrays['next_batch'])
  except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError,
          UnicodeDecodeError) as e:
    reason = ' '.join(str(e).split())[:120]
    raise InputError(f'checkpoint {path} is corrupt or not a top-activations checkpoint '
                     f'({type(e).__name__}: {reason}); delete it to start over') from None
  if fp is not None and saved != fp:
    keys = sorted(k for k in set(saved) | set(fp) if saved.get(k) != fp.get(k))
    diffs = ', '.join(f'{k} {saved.get(k)!r} there, {fp.get(k)!r} here'
                      if k not in ('weights', 'source_digest') else f'{k} differ'
                      for k in keys)
    raise InputError(f'checkpoint {path} belongs to another run ({diffs}); delete it or '
                     'pass another checkpoint path')
  return state, next_batch, saved


# ----------------------------------------------------------------------------------------
# The pass


def _step_program(model, layer: str, mesh):
  """jit((params, state, images uint8, indices) -> state) for this model, layer, mesh."""

  def local(params, images, indices):  # one device's images -> its candidates
    _, act = layers.layer_activation(model, params, model.preprocess(images), layer)
    return act

  def program(params, state, images, indices):
    act = parallel.data_parallel(local, mesh, (False, True, True))(params, images, indices)
    values, index, units, count, bad = candidates(act, indices)
    merged = merge_candidates(state, values, index, units)
    return merged._replace(images_seen=state.images_seen + count,
                           nonfinite=state.nonfinite + bad)

  return program


_PROGRAMS: dict = {}


def _compiled(model, layer, mesh, cpu_kernels):
  key = (id(model), layer, mesh, cpu_kernels)
  if key not in _PROGRAMS or _PROGRAMS[key][0] is not model:
    variants = _xla_cpu.jit_variants(_step_program(model, layer, mesh))
    _PROGRAMS[key] = (model, variants(cpu_kernels, mesh))
  return _PROGRAMS[key][1]


def layer_channels(model, params, layer: str, image_size: int) -> tuple[int, Any]:
  """(channel count, dtype) of `layer`'s output for `image_size` inputs, traced only."""
  x = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.uint8)
  act = jax.eval_shape(lambda p, x: layers.layer_activation(model, p, model.preprocess(x),
                                                            layer)[1], params, x)
  if act.ndim not in (2, 4):
    raise InputError(f'layer {layer!r} has output shape {act.shape}: expected (N, H, W, C) '
                     'or (N, C)')
  return int(act.shape[-1]), act.dtype


def _progress_reporter(progress, total: int, done: int):
  """(report(done), close()) from progress=True (tqdm), False/None, or a callable."""
  if progress is None or progress is False:
    return (lambda d: None), (lambda: None)
  if callable(progress):
    return (lambda d: progress(d, total)), (lambda: None)
  try:
    from tqdm.auto import tqdm
  except ImportError:
    return (lambda d: None), (lambda: None)
  bar = tqdm(total=total, initial=done, desc='top activations', unit='img', leave=False)
  return (lambda d: bar.update(d - bar.n)), bar.close


def top_activations(model, params, source, layer: str | None = None, *, n: int = 9,
                    batch_size: int = 64, devices: parallel.Devices = None,
                    checkpoint: str | None = None, checkpoint_every: int = 100,
                    progress: bool | Callable[[int, int], Any] = True,
                    cpu_kernels: str | None = None) -> TopK:
  """The top-N images of every channel of `layer` over a whole image source.

  Streams the source in batches through the model; see the module docstring for the
  procedure, the order and the tie rule. With `jax.distributed` initialised
  (jax.process_count() > 1), each process streams batches b with b % P == its index,
  over its own local devices, and every process returns the exact merged result.

  Args:
    model: a `jaxviz.Model` (its `preprocess`, `hooked_apply` and `layer_names`).
    params: its parameters.
    source: a folder, an .npz, 'shapes:N[:SEED]', 'tfds:NAME[:SPLIT[:COUNT]]', a uint8
      (N, S, S, 3) array or an `ImageSource` (`open_source`).
    layer: a name in model.layer_names (None: the model's default layer).
    n: how many images to keep per channel.
    batch_size: images per compiled step (split over the devices; the last batch is
      padded).
    devices: None (every local device), a sequence of devices or a Mesh with a 'data'
      axis (`jaxviz.parallel.resolve_mesh`).
    checkpoint: a .npz path; the running state is saved there every `checkpoint_every`
      batches and at the end (atomically). If it exists and was written by the same run
      (model, weights, layer, source, n, batch size, process share), the pass resumes
      after the images it holds; if it belongs to another run, or is unreadable, a
      one-line InputError. With several processes, each writes its own file
      (`process_checkpoint_path`).
    checkpoint_every: batches between saves.
    progress: True for a tqdm bar (images and images/s, on stderr, when tqdm is
      installed), False for none, or a callable progress(images done, images total) of
      this process, called after each batch (and its checkpoint, if due).
    cpu_kernels: XLA:CPU convolution kernels, 'xla' (None) or 'eigen'
      (`Model.cpu_kernels`).

  Returns:
    A `TopK` of numpy arrays: values (C, N) descending, indices (C, N), units (C, N, 2),
    images_seen, nonfinite.

  Raises:
    InputError: unknown layer, n < 1 or more than the source's images, an empty or
      missing source, a checkpoint of another run or a corrupt one.

  References:
    Zeiler and Fergus (2014), Sec. 4 and Fig. 2 (top-9 activations per feature map).
  """
  layer = layers.resolve_layer(model, layer, 'top_activations')
  for value, name in ((n, 'n'), (batch_size, 'batch_size'),
                      (checkpoint_every, 'checkpoint_every')):
    if isinstance(value, bool) or int(value) != value or value < 1:
      raise InputError(f'{name} must be a positive integer, got {value}')
  n, batch_size, checkpoint_every = int(n), int(batch_size), int(checkpoint_every)
  _xla_cpu.check_kernels(cpu_kernels)
  src = open_source(source, model.image_size)
  if n > src.length:
    raise InputError(f'n={n} but {src.spec} has only {src.length} images')
  channels, dtype = layer_channels(model, params, layer, src.image_size)

  pid, procs = jax.process_index(), jax.process_count()
  fp = fingerprint(model, params, src, layer, n, batch_size, pid, procs)
  path = None if checkpoint is None else process_checkpoint_path(os.fspath(checkpoint), pid,
                                                                  procs)
  total_batches = num_batches(src.length, batch_size)
  mine = list(range(pid, total_batches, procs))
  state, first = empty(channels, n, dtype), pid
  if path is not None and os.path.exists(path):
    saved, first, _ = load_checkpoint(path, fp)
    if saved.values.shape != (channels, n):
      raise InputError(f'checkpoint {path} holds shape {saved.values.shape}, expected '
                       f'{(channels, n)}; delete it to start over')
    state = TopK(*(jnp.asarray(a) for a in saved))

  mesh = parallel.resolve_mesh(devices)
  lanes = -(-batch_size // parallel.mesh_size(mesh)) * parallel.mesh_size(mesh)
  run = _compiled(model, layer, mesh, cpu_kernels)
  if mesh is not None:
    params = parallel.replicate(params, mesh)
    state = parallel.replicate(state, mesh)
    batch_sharding = NamedSharding(mesh, P(parallel.DATA_AXIS))

  def size_of(b):
    return min(batch_size, src.length - b * batch_size)

  total = sum(size_of(b) for b in mine)
  done = sum(size_of(b) for b in mine if b < first)
  report, close = _progress_reporter(progress, total, done)
  prefetch = _Prefetch(src.batches(batch_size, first, procs))
  since_save = 0
  try:
    for b, idx, images in prefetch:
      pad = lanes - len(idx)
      images = np.concatenate([images, np.repeat(images[-1:], pad, axis=0)]) if pad else images
      idx = np.pad(idx.astype(np.int32), (0, pad), constant_values=-1)
      if mesh is not None:
        images, idx = jax.device_put((images, idx), batch_sharding)
      state = run(params, state, images, idx)
      done += size_of(b)
      since_save += 1
      if path is not None and (since_save >= checkpoint_every or b + procs >= total_batches):
        save_checkpoint(path, state, b + procs, fp)
        since_save = 0
      else:
        jax.block_until_ready(state.values)
      report(done)
  finally:
    prefetch.close()
    close()

  result = jax.tree.map(np.asarray, state)
  if procs > 1:
    result = _merge_processes(result)
  if int(result.nonfinite):
    warnings.warn(f'{int(result.nonfinite)} of {int(result.images_seen)} images have NaN '
                  f'or infinite activations in {layer}; those units were never chosen',
                  NonFiniteWarning, stacklevel=2)
  return result


# How long a process waits at the merge for the others to finish their share of the
# stream (their shares differ by a batch, and a slow host may lag far more than that).
MERGE_TIMEOUT_S = 3600
_MERGES = itertools.count()


def _wait_for_every_process():
  """A barrier through jax.distributed's coordination service before the gather.

  On CPU the gather's collective goes through gloo, which gives up when a peer is not
  there within ~30 s of the first: a process that finished its share early must not
  enter it alone. The coordination service's barrier waits up to MERGE_TIMEOUT_S. Its
  client is not public API: where it is missing, the gather goes ahead unguarded.
  """
  try:
    from jax._src import distributed
    client = distributed.global_state.client
  except ImportError:
    return
  if client is not None and hasattr(client, 'wait_at_barrier'):
    # A barrier id serves once: every process merges in the same order, so counting the
    # merges names each one alike on all of them.
    client.wait_at_barrier(f'jaxviz_top_activations_merge_{next(_MERGES)}',
                           MERGE_TIMEOUT_S * 1000)


def _merge_processes(state: TopK) -> TopK:
  """Every process's TopK gathered (`process_allgather`) and merged exactly."""
  from jax.experimental import multihost_utils
  _wait_for_every_process()
  gathered = multihost_utils.process_allgather(tuple(state))
  per_process = [TopK(*(np.asarray(a[p]) for a in gathered))
                 for p in range(jax.process_count())]
  return jax.tree.map(np.asarray, merge(*per_process))


def brute_force(activations, n: int) -> TopK:
  """The top-N of every channel from all activations at once (numpy; for tests and
  small sets): per channel, a lexicographic sort of (-max over space, image index)."""
  a = np.asarray(activations)
  if a.ndim == 2:
    a = a[:, None, None, :]
  b, h, w, c = a.shape
  flat = np.where(np.isfinite(a), a, -np.inf).reshape(b, h * w, c)
  unit = flat.argmax(axis=1)
  value = flat.max(axis=1) + 0.0  # -0.0 -> 0.0
  vals, idxs, units = [], [], []
  for ch in range(c):
    order = np.lexsort((np.arange(b), -value[:, ch]))[:n]
    vals.append(value[order, ch])
    idxs.append(order)
    units.append(np.stack([unit[order, ch] // w, unit[order, ch] % w], axis=-1))
  nonfinite = int((~np.isfinite(a).reshape(b, -1).all(axis=1)).sum())
  return TopK(np.stack(vals), np.stack(idxs).astype(np.int32), np.stack(units).astype(np.int32),
              np.asarray(b, np.int32), np.asarray(nonfinite, np.int32))
