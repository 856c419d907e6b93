"""Which convolution kernels XLA:CPU compiles a method's program with, chosen per program.

By default XLA:CPU hands convolutions to its YNNPACK fusions ('xla' here). The compile
option `xla_cpu_experimental_ynn_fusion_type=''` (an empty list) leaves them to XLA's Eigen
kernels ('eigen'), which run SqueezeNet-sized layers' input gradients faster and VGG16's
batched ones slower. Measured (input-gradient step, float32, 2-core AMD EPYC, both variants
in one process; README, Performance): SqueezeNet 1.1 1.42x / 1.46x / 1.62x faster with
Eigen at batch 1 / 4 / 25, SqueezeNet 1.0 1.43x-1.71x, the shapes model 1.27x-1.61x at
batch 1-200; VGG16 1.04x at batch 1 but 0.77x at batch 4; in float64 Eigen is 3x
(SqueezeNet) to 23-27x (VGG16) slower.

So the methods take `cpu_kernels='auto'`: Eigen for float32 programs of the architectures
measured faster with it (`EIGEN_ARCHITECTURES`; `jaxviz.load_model` registers its apply
functions), XLA's default for everything else (other dtypes, other backends, apply functions
jaxviz did not make). 'eigen' and 'xla' force one. The option is per compiled program: it
leaves every other program of the process alone (training the shapes model, which Eigen
slows 2x, keeps XLA's default), and the two variants differ only by float rounding.
"""

import weakref

import jax
import numpy as np

from jaxviz.errors import InputError

CHOICES = ('auto', 'xla', 'eigen')
EIGEN_OPTIONS = {'xla_cpu_experimental_ynn_fusion_type': ''}
EIGEN_ARCHITECTURES = frozenset({'squeezenet1_0', 'squeezenet1_1', 'shapes'})

_preferred: 'weakref.WeakKeyDictionary' = weakref.WeakKeyDictionary()


def register(apply_fn, architecture: str) -> None:
  """Records the kernels `apply_fn` (a model's apply) runs fastest on, by architecture."""
  _preferred[apply_fn] = 'eigen' if architecture in EIGEN_ARCHITECTURES else 'xla'


def resolve(cpu_kernels: str, apply_fn, dtype) -> str:
  """'xla' or 'eigen': what `cpu_kernels` means for this apply function and input dtype."""
  if cpu_kernels not in CHOICES:
    raise InputError(f'cpu_kernels must be one of {", ".join(map(repr, CHOICES))}, '
                     f'got {cpu_kernels!r}')
  if cpu_kernels != 'auto':
    return cpu_kernels
  if jax.default_backend() != 'cpu' or np.dtype(dtype) != np.float32:
    return 'xla'
  try:
    return _preferred.get(apply_fn, 'xla')
  except TypeError:  # an unhashable callable: not one of ours
    return 'xla'


def jit(fn, **jit_kwargs):
  """`jax.jit(fn, **jit_kwargs)` once per kernel choice: returns `variant(kernels)`."""
  variants = {'xla': jax.jit(fn, **jit_kwargs),
              'eigen': jax.jit(fn, **jit_kwargs, compiler_options=EIGEN_OPTIONS)}

  def variant(kernels: str):
    return variants[kernels]

  return variant
