"""The top-N images of a layer's channels over a whole data set, their receptive-field
patches and DeconvNet projections (course notes, seed 002; Zeiler & Fergus 2014, Fig. 2).

  python scripts/top_images.py [--model=shapes] [--weights=...] [--layer=features.8]
      [--channels=0-7] [--n=9] [--source=shapes:10000] [--batch_size=64]
      [--checkpoint=PATH --checkpoint_every=50] [--noprojection]
      [--output_dir=outputs/top_images]

One streamed pass over --source finds, for every channel of --layer at once, the N
images whose strongest unit is largest (jaxviz.top_activations: exact, ties to the lower
image index). --source is 'shapes:N[:SEED]' (generated shapes, made batch by batch), a
folder of images, an .npz with `images`, or 'tfds:NAME[:SPLIT[:COUNT]]' (a prepared
tensorflow-datasets set). With --checkpoint the running state is saved every
--checkpoint_every batches (atomically): a run killed at any point, even with kill -9,
resumes from it when started again with the same flags; a checkpoint of other settings
is refused in one line. Batches are split over every local device; under jax.distributed
(several hosts) each process streams its share and all get the merged result.

Writes into --output_dir: top_images.png (rows: the --channels; columns: the N crops of
each unit's receptive field in its image, each with the unit's DeconvNet projection
beside it), results.npz (every channel's values, image indices and units; the drawn
channels' crops and projections), results.json (the same numbers and images/s) and
manifest.json.
"""

import importlib
import json
import os
import signal
import sys
import time

import numpy as np
from absl import app, flags

import jaxviz
from jaxviz import figures, top_activations as ta
from jaxviz.methods import layers as layer_methods
import common

_MODEL = flags.DEFINE_enum('model', 'shapes', sorted(jaxviz.ARCHITECTURES) + ['shapes'],
                           'Architecture.')
_WEIGHTS = flags.DEFINE_string(
    'weights', None, "'trained' (shapes, the default there), 'imagenet' (the default "
    "for the others; converted on first use), 'random', or a converted .npz file.")
_LAYER = flags.DEFINE_string('layer', None, "A name in Model.layer_names (default: the "
                             "model's last convolutional layer, features.8 for shapes).")
_CHANNELS = flags.DEFINE_string('channels', '0-7', "Channels to draw: '0-7', '0,5,9', "
                                "or 'all'. The pass ranks every channel regardless.")
_N = flags.DEFINE_integer('n', 9, 'Images per channel.', lower_bound=1)
_SOURCE = flags.DEFINE_string('source', 'shapes:10000', "'shapes:N[:SEED]', a folder, an "
                              ".npz with `images`, or 'tfds:NAME[:SPLIT[:COUNT]]'.")
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 64, 'Images per compiled step.',
                                   lower_bound=1)
_CHECKPOINT = flags.DEFINE_string('checkpoint', None, 'A .npz path for the running state: '
                                  'resumed from when it exists (same flags), else written.')
_CHECKPOINT_EVERY = flags.DEFINE_integer('checkpoint_every', 50, 'Batches between '
                                         'checkpoint saves.', lower_bound=1)
_PROJECTION = flags.DEFINE_bool('projection', True, 'Draw each patch\'s DeconvNet '
                                'projection beside it (Zeiler & Fergus 2014).')
_OUTPUT_DIR = flags.DEFINE_string('output_dir', os.path.join('outputs', 'top_images'),
                                  'Where the figure, results and manifest go.')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, 'Several hosts: HOST:PORT of process 0; with '
    '--num_processes and --process_id, calls jax.distributed.initialize before anything '
    'runs. Each process streams every P-th batch; process 0 writes the outputs.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'With --coordinator_address: '
                                      'how many processes.', lower_bound=1)
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'With --coordinator_address: this '
                                   "process's index, 0 to num_processes - 1.", lower_bound=0)
_DISTRIBUTED = flags.DEFINE_bool('distributed', False, 'Call jax.distributed.initialize() '
                                 'without arguments (cluster auto-detection: TPU pods, SLURM, '
                                 'Open MPI).')
_STOP_AFTER_BATCHES = flags.DEFINE_integer(
    'stop_after_batches', 0, 'For testing resumption: after this many batches of this '
    'run the process kills itself with SIGKILL, as kill -9 would (0: never).',
    lower_bound=0)


def parse_channels(spec: str, count: int | None = None) -> list[int]:
  """'0-7', '3', '0,5,9-11' or 'all' -> channel list; with `count`, range-checked."""
  spec = spec.strip()
  if spec == 'all':
    if count is None:
      return []
    return list(range(count))
  channels = []
  for part in spec.split(','):
    lo, sep, hi = part.strip().partition('-')
    if not lo.isdigit() or (sep and not hi.isdigit()):
      raise jaxviz.InputError(f"--channels={spec!r}: expected 'all' or integers and ranges "
                              "such as 0-7,12")
    lo, hi = int(lo), int(hi) if sep else int(lo)
    if hi < lo:
      raise jaxviz.InputError(f'--channels={spec!r}: range {lo}-{hi} is empty')
    channels.extend(range(lo, hi + 1))
  if len(set(channels)) != len(channels):
    raise jaxviz.InputError(f'--channels={spec!r} names a channel twice')
  if count is not None and max(channels) >= count:
    raise jaxviz.InputError(f'--channels={spec!r}: channel {max(channels)} out of range '
                            f'[0, {count}) for this layer')
  return channels


class _Progress:
  """The pass's progress callback: a tqdm bar, batch times (for images/s), and the
  test-only hard stop."""

  def __init__(self, stop_after: int):
    self.stop_after, self.batches, self.times, self.done = stop_after, 0, [], []
    self.bar = None

  def __call__(self, done: int, total: int):
    now = time.perf_counter()
    if self.bar is None:
      from tqdm.auto import tqdm
      self.bar = tqdm(total=total, initial=done, desc='top activations', unit='img',
                      leave=False, file=sys.stderr)
    self.bar.update(done - self.bar.n)
    self.times.append(now)
    self.done.append(done)
    self.batches += 1
    if self.stop_after and self.batches >= self.stop_after:
      sys.stderr.flush()
      os.kill(os.getpid(), signal.SIGKILL)

  def rate(self) -> float | None:
    """Images per second after the first batch of this run (which includes compiling)."""
    if len(self.times) < 2:
      return None
    return (self.done[-1] - self.done[0]) / (self.times[-1] - self.times[0])

  def close(self):
    if self.bar is not None:
      self.bar.close()


def _patches(model, result, source, layer: str, channels: list[int], projection: bool):
  """(crops (R, N, S, S, 3) uint8, projections (R, N, S, S, 3) float32 or None, field)
  of the drawn channels' top units. Without a receptive field (a layer after a global
  pool), whole images and no projection."""
  # By module path: the package exports functions and modules of the same names.
  rf = importlib.import_module('jaxviz.receptive_field')
  projection_module = importlib.import_module('jaxviz.methods.projection')
  try:
    field = rf.receptive_field(model, layer)
  except jaxviz.InputError as e:
    print(f'note: {e}; drawing whole images', file=sys.stderr)
    field = None
  crops, projections = [], []
  for c in channels:
    images = source.read(result.indices[c])
    units = result.units[c]
    if field is None:
      crops.append(images)
      continue
    grey = 128  # outside the image: mid-grey, not mistaken for a dark patch
    crops.append(np.stack([rf.crop(im, field, i, j, pad_value=grey)
                           for im, (i, j) in zip(images, units)]))
    if projection:
      maps = np.asarray(projection_module.unit_projection(
          model, model.params, model.preprocess(images), layer, c, unit=units,
          cpu_kernels=model.cpu_kernels))
      projections.append(np.stack([rf.crop(m, field, i, j, pad_value=0.0)
                                   for m, (i, j) in zip(maps, units)]))
  return (np.stack(crops), np.stack(projections).astype(np.float32) if projections else None,
          field)


def _initialize_distributed():
  """jax.distributed.initialize from the flags (before any JAX computation), or nothing."""
  import jax
  given = [_COORDINATOR.value is not None, _NUM_PROCESSES.value is not None,
           _PROCESS_ID.value is not None]
  if any(given) and not all(given):
    raise jaxviz.InputError('--coordinator_address, --num_processes and --process_id go '
                            'together: give all three')
  if all(given):
    if _PROCESS_ID.value >= _NUM_PROCESSES.value:
      raise jaxviz.InputError(f'--process_id={_PROCESS_ID.value} must be below '
                              f'--num_processes={_NUM_PROCESSES.value}')
    # CPU processes gather their results through gloo (only the CPU backend reads this;
    # asking which backend runs would start it, which must come after initialize).
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value,
                               process_id=_PROCESS_ID.value)
  elif _DISTRIBUTED.value:
    jax.distributed.initialize()


@common.one_line_errors
def main(argv):
  del argv
  common.check_flags(__name__)
  parse_channels(_CHANNELS.value)  # syntax, before anything is loaded
  _initialize_distributed()
  out = _OUTPUT_DIR.value
  common.enable_compilation_cache()
  model = common.resolve_model(_MODEL.value, _WEIGHTS.value)
  layer = layer_methods.resolve_layer(model, _LAYER.value, 'top_images')
  source = ta.open_source(_SOURCE.value, model.image_size)
  count, _ = ta.layer_channels(model, model.params, layer, model.image_size)
  channels = parse_channels(_CHANNELS.value, count)
  if _N.value > len(source):
    raise jaxviz.InputError(f'--n={_N.value} but {source.spec} has only {len(source)} images')

  import jax
  ckpt = _CHECKPOINT.value
  if ckpt is not None:
    mine = ta.process_checkpoint_path(ckpt, jax.process_index(), jax.process_count())
    if os.path.exists(mine):
      state, next_batch, _ = ta.load_checkpoint(mine)
      print(f'resuming from {mine}: {int(state.images_seen)} images done', file=sys.stderr)
  progress = _Progress(_STOP_AFTER_BATCHES.value)
  start = time.perf_counter()
  try:
    result = ta.top_activations(model, model.params, source, layer, n=_N.value,
                                batch_size=_BATCH_SIZE.value, checkpoint=ckpt,
                                checkpoint_every=_CHECKPOINT_EVERY.value, progress=progress)
  finally:
    progress.close()
  seconds = time.perf_counter() - start
  rate = progress.rate()
  if jax.process_index() != 0:  # every process has the result; one writes it
    return

  crops, projections, field = _patches(model, result, source, layer, channels,
                                       _PROJECTION.value)
  values = result.values[channels]
  title = (f'{model.name} {layer}: top {_N.value} of {len(source)} images ({source.spec}) '
           f'per channel; {common.weights_label(model)}'
           + ('; each patch with its DeconvNet projection' if projections is not None else ''))
  cells = [[f'{v:.3g} #{i}' for v, i in zip(values[r], result.indices[c])]
           for r, c in enumerate(channels)]
  fig = figures.top_patches_figure(
      crops / 255.0, None if projections is None else np.stack(
          [[figures.signed_rgb01(p) for p in row] for row in projections]),
      [f'ch {c}' for c in channels], cells, title)
  figures.save(fig, os.path.join(out, 'top_images.png'))
  field_info = None if field is None else {'size': field.size, 'jump': field.jump,
                                           'start': field.start}
  common.save_npz(os.path.join(out, 'results.npz'), values=result.values,
                  indices=result.indices, units=result.units, channels=np.asarray(channels),
                  crops=crops, projections=projections,
                  images_seen=result.images_seen, nonfinite=result.nonfinite)
  summary = {
      'model': model.name, 'layer': layer, 'source': source.spec, 'images': len(source),
      'images_seen': int(result.images_seen), 'n': _N.value, 'batch_size': _BATCH_SIZE.value,
      'channels': channels, 'receptive_field': field_info,
      'values': result.values[channels].tolist(),
      'indices': result.indices[channels].tolist(),
      'names': [[source.name(i) for i in result.indices[c]] for c in channels],
      'units': result.units[channels].tolist(),
      'images_per_second': rate, 'seconds': seconds, 'devices': jax.local_device_count(),
      'processes': jax.process_count(), 'nonfinite_images': int(result.nonfinite)}
  jaxviz.checkpoint.atomic_write(os.path.join(out, 'results.json'), lambda f: f.write(
      json.dumps(summary, indent=1).encode()))
  common.write_manifest(out, common.script_flags(), model, layer=layer,
                        images_per_second=rate, seconds=seconds)
  speed = f'{rate:.0f} images/s after the first batch' if rate else 'one batch'
  print(f'{model.name} {layer}: top {_N.value} of {int(result.images_seen)} images per channel '
        f'({count} channels) in {seconds:.1f} s ({speed}); wrote {out}')


if __name__ == '__main__':
  app.run(main, flags_parser=common.parse_flags)
