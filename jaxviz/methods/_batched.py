"""The batched-method driver: a per-example function in, a batched method out.

A method supplies only its mathematics, a per-example function

    example_fn(apply_fn, params, **batched, **replicated, **options) -> per-example pytree

and declares which keyword arguments carry one value per example (`batched`: images,
labels, keys, per-image hyperparameters) and which are shared by all (`replicated`:
traced scalars or arrays such as a pixel box). `options` are static Python values (an
objective's name, a step count, an optax transformation); each distinct set compiles
once. The driver does the rest, identically for every method:

- compiles once per (apply_fn, shapes, options, chunk_size, devices, kernels);
- splits the batch over devices (`jaxviz.parallel`), pads it, and trims the results;
- runs each device's slice at most `chunk_size` examples at a time (`lax.map`);
- applies the XLA:CPU workarounds on CPU only (`jaxviz._xla_cpu`): the convolution
  kernels asked for, canonical convolutions in loop bodies, one example per loop for
  iterative methods by default;
- for iterative methods given `progress`, passes `on_step(t)` to the per-example function
  and reports, on the host, how far the whole run is;
- with `broadcast`, passes a batched argument given for one example (one image for many
  labels) unbatched to every example, so that `vmap` computes what depends on it alone
  (the forward pass through the image) once for all of them.

Input checks that depend on the method stay with the method's public function; the driver
checks what it owns (chunk_size, devices, cpu_kernels, agreeing batch sizes).
"""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from jaxviz import _xla_cpu, parallel, validation
from jaxviz.errors import InputError


def _progress_callback(progress: Callable, num_steps: int, position, size):
  """`on_step(t)` for the chunk holding examples `position` of a device's `size`.

  Reports the step index of the device's whole run that step t of this chunk completes,
  so that a bar over num_steps fills once, at the very end, however the examples are
  chunked (with one chunk it is t itself).
  """
  first = position[0]
  count = jnp.minimum(position.shape[0], size - first)
  return lambda t: jax.debug.callback(
      progress, jnp.maximum((first * num_steps + count * (t + 1)) // size - 1, 0))


class BatchedMethod:
  """A per-example function run over a batch by the driver; see the module docstring.

  Args:
    example_fn: the per-example function.
    batched: names of its keyword arguments with one value per example.
    replicated: names of its keyword arguments shared by all examples (traced).
    iterative: the function runs a loop (default chunk_size 1 on CPU, progress).
  """

  def __init__(self, example_fn: Callable, *, batched: Sequence[str],
               replicated: Sequence[str] = (), iterative: bool = False):
    self.example_fn = example_fn
    self.batched, self.replicated = tuple(batched), tuple(replicated)
    self.iterative = iterative
    self._compiled = _xla_cpu.jit_variants(
        self._program,
        static_argnames=('apply_fn', 'options', 'chunk_size', 'mesh', 'progress', 'num_steps',
                         'names'))

  def _program(self, apply_fn, params, batch, shared, *, options, chunk_size, mesh,
               progress, num_steps, names):
    options = dict(options)
    batched_names, shared_names = names

    def local(params, batch, shared):  # one device's slice of the batch
      size = parallel.batch_size(batch)

      def chunk(xs):  # a vmap over at most chunk_size examples
        batch, position = xs
        kwargs = dict(options, **dict(zip(shared_names, shared)))
        if progress is not None:
          kwargs['on_step'] = _progress_callback(progress, num_steps, position, size)

        def one(*values):
          return self.example_fn(apply_fn, params, **dict(zip(batched_names, values)), **kwargs)

        return jax.vmap(one)(*batch)

      return parallel.map_chunks(chunk, (batch, jnp.arange(size)), chunk_size)

    return parallel.data_parallel(local, mesh, (False, True, False))(params, batch, shared)

  def __call__(self, apply_fn, params, *, chunk_size: int | None = None,
               devices: parallel.Devices = None, cpu_kernels: str | None = None,
               progress: Callable | None = None, num_steps: int | None = None,
               options: dict | None = None, broadcast: Sequence[str] = (), **arrays):
    """Runs the method over a batch.

    Args:
      apply_fn, params: the model.
      chunk_size, devices, cpu_kernels: see the methods' docstrings.
      progress: for iterative methods, called on the host with a step index in
        [0, num_steps) as the run advances.
      num_steps: the loop's step count (for progress).
      options: static keyword arguments of the per-example function.
      broadcast: names in `batched` whose arrays hold one example (leading size 1) for
        all the others: each example gets that one value, unbatched.
      **arrays: one per name in `batched` and `replicated`.

    Returns:
      The per-example function's pytree, batched.
    """
    missing = set(self.batched + self.replicated) - set(arrays)
    if missing or set(arrays) - set(self.batched + self.replicated):
      raise TypeError(f'expected arrays {self.batched + self.replicated}, got {sorted(arrays)}')
    chunk_size = validation.check_chunk_size(chunk_size)
    mesh = parallel.resolve_mesh(devices)
    if chunk_size is None and self.iterative:
      chunk_size = _xla_cpu.loop_chunk_size(mesh)
    if progress is not None and not (self.iterative and num_steps):
      raise InputError('progress needs an iterative method and its step count')
    broadcast = tuple(broadcast)
    if set(broadcast) - set(self.batched):
      raise TypeError(f'broadcast {broadcast} must name batched arrays {self.batched}')
    batched_names = tuple(name for name in self.batched if name not in broadcast)
    shared_names = self.replicated + broadcast
    for name in broadcast:
      if {leaf.shape[0] for leaf in jax.tree.leaves(arrays[name])} != {1}:
        raise InputError(f'{name}: broadcast needs one example, got shape '
                         f'{[leaf.shape for leaf in jax.tree.leaves(arrays[name])]}')
    batch = tuple(arrays[name] for name in batched_names)
    shared = tuple(arrays[name] for name in self.replicated) + tuple(
        jax.tree.map(lambda leaf: leaf[0], arrays[name]) for name in broadcast)
    if not batched_names:
      raise TypeError('broadcast leaves nothing batched')
    if parallel.batch_size(batch) == 0:
      raise InputError('the batch is empty')
    nested = any(isinstance(leaf, jax.core.Tracer)
                 for leaf in jax.tree.leaves((params, batch, shared)))
    run = self._compiled(cpu_kernels, mesh, nested)
    static = dict(options=tuple(sorted((options or {}).items())), chunk_size=chunk_size,
                  progress=progress, num_steps=num_steps, names=(batched_names, shared_names))
    if mesh is None:
      return run(apply_fn, params, batch, shared, mesh=None, **static)
    batch, n = parallel.shard_batch(batch, mesh)
    return parallel.unpad(
        run(apply_fn, parallel.replicate(params, mesh), batch, shared, mesh=mesh, **static), n)
