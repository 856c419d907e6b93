"""XLA:CPU workarounds, in one place; the method drivers apply them on CPU only.

Three things make XLA:CPU slower than it needs to be for input-gradient methods, and
none of them belongs in a method's mathematics:

- **Convolution kernels** (`KERNELS`, `jit_variants`, `preferred_kernels`). XLA:CPU hands
  convolutions to its YNNPACK fusions by default ('xla'). The compile option
  `xla_cpu_experimental_ynn_fusion_type=''` leaves them to XLA's Eigen kernels ('eigen'),
  which run SqueezeNet-sized layers' (and the ResNets') input gradients faster, and
  batched VGG16's and AlexNet's and every float64 program slower (docs/performance.md).
  The choice is per compiled
  program and an explicit setting: the methods take `cpu_kernels=` ('xla' by default),
  and `Model.cpu_kernels` is the choice measured fastest for a loaded model.
- **Canonical convolutions in loop bodies** (`canonical`): XLA:CPU puts convolutions into
  its fast kernels' layout only in the entry computation, so a gradient inside a
  `while_loop`, `scan` or `lax.map` body ran on slow generic loops. `loop_gradient` and
  `loop_body` rewrite them.
- **Loop batching** (`loop_chunk_size`): on CPU an iterative method runs one image per loop.
"""

import jax
import numpy as np

from jaxviz._xla_cpu.canonical import canonical_convs, canonical_convs_ahead
from jaxviz.errors import InputError

KERNELS = ('xla', 'eigen')
EIGEN_OPTIONS = {'xla_cpu_experimental_ynn_fusion_type': ''}
# float32 programs of these architectures measured faster on Eigen's kernels.
EIGEN_ARCHITECTURES = frozenset({'squeezenet1_0', 'squeezenet1_1', 'shapes', 'resnet18',
                                 'resnet50'})


def preferred_kernels(architecture: str, dtype) -> str:
  """The kernels measured fastest for a model's float programs on CPU: 'xla' or 'eigen'."""
  if architecture in EIGEN_ARCHITECTURES and np.dtype(dtype) == np.float32:
    return 'eigen'
  return 'xla'


def check_kernels(cpu_kernels: str | None) -> str:
  """'xla' or 'eigen' from a `cpu_kernels=` argument (None: 'xla'); InputError otherwise."""
  if cpu_kernels is None:
    return 'xla'
  if cpu_kernels not in KERNELS:
    raise InputError(f'cpu_kernels must be None, {" or ".join(map(repr, KERNELS))}, '
                     f'got {cpu_kernels!r}')
  return cpu_kernels


def platform(mesh=None) -> str:
  """The platform a program runs on: the mesh's devices', else the default backend's."""
  return mesh.devices.flat[0].platform if mesh is not None else jax.default_backend()


def jit_variants(fn, **jit_kwargs):
  """`jax.jit(fn, **jit_kwargs)` once per kernel choice: returns
  `variant(kernels, mesh, nested)`.

  Off CPU the kernel choice is ignored: there is one program, XLA's default. So it is
  when `nested` (the call is inside the caller's own jit): compile options belong to the
  outermost program, which the caller compiles (`compiler_options` gives them).
  """
  variants = {'xla': jax.jit(fn, **jit_kwargs),
              'eigen': jax.jit(fn, **jit_kwargs, compiler_options=EIGEN_OPTIONS)}

  def variant(cpu_kernels: str | None, mesh=None, nested: bool = False):
    kernels = check_kernels(cpu_kernels)
    return variants[kernels if platform(mesh) == 'cpu' and not nested else 'xla']

  return variant


def loop_body(fn, mesh=None):
  """`fn` as a loop body: its convolutions made canonical on CPU (see `canonical`)."""
  return canonical_convs(fn) if platform(mesh) == 'cpu' else fn


def loop_gradient(fn, invariant, *example_args):
  """`body(*args) = fn(invariant, *args)` for a loop in which `invariant` (the params) is
  fixed: on CPU with canonical convolutions whose kernels are laid out once, ahead of the
  loop (see `canonical.canonical_convs_ahead`)."""
  if jax.default_backend() == 'cpu':
    return canonical_convs_ahead(fn, invariant, *example_args)
  return lambda *args: fn(invariant, *args)


def loop_chunk_size(mesh=None) -> int | None:
  """The iterative methods' default `chunk_size`: 1 on CPU, all at once elsewhere.

  On XLA:CPU a loop body gains little from batching at 112-224 px (docs/performance.md);
  one image per loop also stops each image as soon as it is done, and makes each
  image's result independent, bit for bit, of the batch it came in and of the device
  count. On GPUs and TPUs the batch is what fills the device.
  """
  return 1 if platform(mesh) == 'cpu' else None


def compiler_options(cpu_kernels: str | None) -> dict | None:
  """`jax.jit(..., compiler_options=...)` for a kernel choice on CPU (None: XLA's default)."""
  return EIGEN_OPTIONS if check_kernels(cpu_kernels) == 'eigen' else None
