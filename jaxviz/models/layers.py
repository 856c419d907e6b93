"""Stateless layers and the hook mechanism shared by the torchvision ports.

Every layer's output can be read or rewritten by name through `hooks`, a mapping from a
torch-style module name ('features.3.squeeze_activation', 'classifier.1') to a function of
that output. Capturing activations, Grad-CAM (add a zero perturbation and differentiate)
and single-neuron visualisation (zero all but one unit) are all hooks.
"""

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
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
  channelwise = True  # acts on each channel alone: see run_sequential

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
  """Runs an nnx.List like torch's nn.Sequential, offering each output to the hooks.

  A layer whose output is a channel concatenation can say so with a `branches(x, name,
  hooks)` method returning the parts (SqueezeNet's Fire). When a `channelwise` layer
  (max-pool) follows it and no hook asks for the concatenated output, the pool is applied
  to each part and the pooled parts are concatenated: the same values and gradients,
  since a channelwise op commutes with concatenation, but XLA then fuses each pool's
  backward into one pass; pooling the concatenation made it materialise one full-size
  buffer per pool tap (the concatenation's transpose splits the pool's gradient between
  two consumers), and SqueezeNet's gradient step ran 15-25% slower (measured on CPU).
  """
  i = 0
  while i < len(layers):
    layer, name = layers[i], f'{prefix}.{i}'
    after = layers[i + 1] if i + 1 < len(layers) else None
    if hasattr(layer, 'branches') and getattr(after, 'channelwise', False):
      parts = layer.branches(x, name, hooks)
      fn = hooks.get(name) if hooks is not None else None
      if fn is None:
        x = hook(hooks, f'{prefix}.{i + 1}', jnp.concatenate([after(p) for p in parts], -1))
        i += 2
      else:
        x = fn(jnp.concatenate(parts, axis=-1))
        i += 1
      continue
    x = layer(x, name, hooks) if getattr(layer, 'takes_hooks', False) else layer(x)
    x = hook(hooks, name, x)
    i += 1
  return x
