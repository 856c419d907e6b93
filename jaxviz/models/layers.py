"""Stateless layers and the hook mechanism shared by the torchvision ports.

Every layer's output can be read or rewritten by name through `hooks`, a mapping from a
torch-style module name ('features.3.squeeze_activation', 'classifier.1') to a function of
that output. Capturing activations, Grad-CAM (add a zero perturbation and differentiate)
and single-neuron visualisation (zero all but one unit) are all hooks.
"""

from collections.abc import Callable, Mapping

import jax
from flax import nnx

from jaxviz import ops

Hooks = Mapping[str, Callable[[jax.Array], jax.Array]]


def hook(hooks: Hooks | None, name: str, x: jax.Array) -> jax.Array:
  fn = hooks.get(name) if hooks is not None else None
  return x if fn is None else fn(x)


class ReLU(nnx.Module):

  def __call__(self, x):
    return jax.nn.relu(x)


class Dropout(nnx.Module):
  """Eval-mode dropout: the identity. Kept so later layers keep their torch index."""

  def __call__(self, x):
    return x


class MaxPool2d(nnx.Module):

  def __init__(self, kernel: int, stride: int, ceil_mode: bool = False):
    self.kernel, self.stride, self.ceil_mode = kernel, stride, ceil_mode

  def __call__(self, x):
    return ops.max_pool2d(x, self.kernel, self.stride, ceil_mode=self.ceil_mode)


class AdaptiveAvgPool2d(nnx.Module):

  def __init__(self, output_size: tuple[int, int]):
    self.output_size = tuple(output_size)

  def __call__(self, x):
    return ops.adaptive_avg_pool2d(x, self.output_size)


def conv(cin: int, cout: int, kernel: int, *, stride: int = 1, padding: int = 0,
         kernel_init, rngs: nnx.Rngs) -> nnx.Conv:
  """A torch-like Conv2d: explicit padding (nnx.Conv defaults to 'SAME'), zero bias."""
  return nnx.Conv(cin, cout, (kernel, kernel), strides=(stride, stride),
                  padding=((padding, padding), (padding, padding)),
                  kernel_init=kernel_init, bias_init=nnx.initializers.zeros, rngs=rngs)


def run_sequential(layers, x, prefix: str, hooks: Hooks | None):
  """Runs an nnx.List like torch's nn.Sequential, offering each output to the hooks."""
  for i, layer in enumerate(layers):
    name = f'{prefix}.{i}'
    x = layer(x, name, hooks) if getattr(layer, 'takes_hooks', False) else layer(x)
    x = hook(hooks, name, x)
  return x
