"""Batched experiments over every local device, and in memory-bounded chunks.

Two independent knobs, which every batched method takes (the driver in
`jaxviz.methods._batched` applies them):

- **Devices** (`devices=`): the batch is split over a 1-D `jax.sharding.Mesh` whose axis is
  named 'data'; parameters are replicated. By default that is every local device when
  there is more than one (8 GPUs, the chips of a TPU host, or CPU devices forced with
  `XLA_FLAGS=--xla_force_host_platform_device_count=N`), so the same script uses them all
  unchanged; with one device nothing changes. Each device runs the unchanged per-device
  program on its slice (`jax.shard_map`): no communication, and each device's loops stop
  when its own images are done.
- **Chunks** (`chunk_size=`): each device works through its slice at most `chunk_size`
  examples at a time (`lax.map` over chunks inside the compiled program), so that methods
  which expand one image into many (SmoothGrad, Integrated Gradients, occlusion, deletion
  curves) or run big batches keep a bounded working set.

Padding: a batch that does not divide evenly (5 images on 4 devices, or into chunks of 2)
is padded by repeating its last example, and every output is trimmed back to the real
examples. Repeating a real example (rather than zeros) keeps the padded lanes valid: their
labels are in range, they cannot produce NaNs, and a fooling loop's copy stops exactly when
its original does, so padding never lengthens a loop. The cost is the padded lanes'
compute: at most (devices - 1) examples, plus (chunk_size - 1) per device.

Multi-host runs (a TPU pod slice with several processes): these helpers shard over the
*local* devices of each process; give each process its own share of the images.

Example:
  mesh = jaxviz.parallel.data_mesh()               # every local device, axis 'data'
  params = jaxviz.parallel.replicate(model.params, mesh)  # once, not per call
  maps = jaxviz.saliency_maps(model.apply, params, images, labels, devices=mesh,
                              chunk_size=32)
"""

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxviz import _xla_cpu
from jaxviz.errors import InputError

DATA_AXIS = 'data'

Devices = Mesh | Sequence[jax.Device] | None


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh with axis 'data' over `devices` (default: every local device)."""
  devices = list(jax.local_devices() if devices is None else devices)
  if not devices:
    raise InputError('devices is empty: give at least one device')
  return Mesh(np.array(devices), (DATA_AXIS,))


def resolve_mesh(devices: Devices = None) -> Mesh | None:
  """The mesh a method shards its batch over; None means one device, no sharding.

  Args:
    devices: None for every local device (None again when there is only one, so that
      single-device runs compile exactly the program they always did); a sequence of
      devices; or a `Mesh` with a 'data' axis (other axes replicate).
  """
  if isinstance(devices, Mesh):
    if DATA_AXIS not in devices.axis_names:
      raise InputError(f"the mesh has axes {devices.axis_names}: it needs a '{DATA_AXIS}' "
                       'axis to split the batch over')
    return devices
  if devices is None and jax.local_device_count() == 1:
    return None
  return data_mesh(devices)


def mesh_size(mesh: Mesh | None) -> int:
  """How many slices the batch is split into (1 without a mesh)."""
  return 1 if mesh is None else mesh.shape[DATA_AXIS]


def batch_size(tree) -> int:
  """The common leading size of a pytree's leaves (an InputError if they disagree)."""
  sizes = {int(leaf.shape[0]) for leaf in jax.tree.leaves(tree)}
  if len(sizes) != 1:
    raise InputError(f'batched inputs disagree on the batch size: {sorted(sizes)}')
  return sizes.pop()


def pad_batch(tree, multiple: int):
  """Pads every leaf's leading axis to a multiple of `multiple` by repeating the last example.

  Returns:
    (padded tree, the original batch size).
  """
  n = batch_size(tree)
  extra = -n % multiple
  if not extra:
    return tree, n

  def pad(a):
    return jnp.concatenate([a, jnp.repeat(a[-1:], extra, axis=0)], axis=0)

  return jax.tree.map(pad, tree), n


def unpad(tree, n: int):
  """The first `n` examples of every leaf (undoes `pad_batch` on outputs)."""
  return jax.tree.map(lambda a: a if a.shape[0] == n else a[:n], tree)


def shard_batch(tree, mesh: Mesh):
  """Pads a batch to a multiple of the device count and splits it over the 'data' axis.

  Returns:
    (tree placed with NamedSharding(mesh, P('data')), the original batch size); trim
    outputs with `unpad`.
  """
  tree, n = pad_batch(tree, mesh_size(mesh))
  return jax.device_put(tree, NamedSharding(mesh, P(DATA_AXIS))), n


def replicate(tree, mesh: Mesh):
  """Places a pytree (model parameters) in full on every device of `mesh`.

  Already-replicated arrays are not copied: replicate parameters once and pass them to
  every call rather than paying a host-to-device copy per call.
  """
  return jax.device_put(tree, NamedSharding(mesh, P()))


def data_parallel(fn: Callable, mesh: Mesh | None, batched: Sequence[bool]) -> Callable:
  """`fn` run on each device's slice of its batched arguments (`jax.shard_map`).

  For use inside `jit`. Arguments flagged in `batched` are split along their leading axis
  over the 'data' axis (its size must divide them: see `shard_batch`); the others are
  replicated. Every output must be batched along its leading axis. Without a mesh, `fn`
  itself.
  """
  if mesh is None:
    return fn
  specs = tuple(P(DATA_AXIS) if b else P() for b in batched)
  # check_vma=False: the per-device loops (while_loop with per-device trip counts) are
  # deliberately not replicated across devices.
  return jax.shard_map(fn, mesh=mesh, in_specs=specs, out_specs=P(DATA_AXIS),
                       check_vma=False)


def map_chunks(fn: Callable[[Any], Any], xs, chunk_size: int | None):
  """`fn(xs)`, computed at most `chunk_size` examples at a time.

  `fn` maps a batch (a pytree of arrays with a common leading axis) to a pytree of
  per-example results with the same leading size. With `chunk_size` None, or at least the
  batch, this is `fn(xs)`. Otherwise the batch is split into the fewest chunks of at most
  `chunk_size`, as even as possible (50 examples at chunk_size 32: two chunks of 25, not
  64 with 14 copies), padded where they do not divide it (repeating the last example),
  and `lax.map` runs `fn` on one chunk after the other inside the compiled program, so
  only one chunk's intermediates are alive at a time; results are trimmed to the real
  examples. Usable inside `jit`, `shard_map` and `data_parallel`.

  On CPU the loop body's convolutions are kept on XLA:CPU's fast path
  (`jaxviz._xla_cpu.loop_body`): a gradient inside `lax.map` is otherwise several times
  slower there.

  Args:
    fn: batch -> batch of results.
    xs: the batch.
    chunk_size: the most examples per chunk, or None for all at once.
  """
  n = batch_size(xs)
  if chunk_size is None or chunk_size >= n:
    return fn(xs)
  if int(chunk_size) != chunk_size or chunk_size < 1:
    raise InputError(f'chunk_size must be a positive integer or None, got {chunk_size}')
  chunks = math.ceil(n / chunk_size)
  size = math.ceil(n / chunks)  # <= chunk_size; pads fewer than `chunks` examples
  padded, _ = pad_batch(xs, size)
  split = jax.tree.map(lambda a: a.reshape(chunks, size, *a.shape[1:]), padded)
  out = jax.lax.map(_xla_cpu.loop_body(fn), split)
  return jax.tree.map(lambda a: a.reshape(chunks * size, *a.shape[2:])[:n], out)

