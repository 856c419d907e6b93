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

  def __init__(self, kernel: int, stride: int, padding: int = 0, ceil_mode: bool = False):
    self.kernel, self.stride, self.padding, self.ceil_mode = kernel, stride, padding, ceil_mode

  def __call__(self, x):
    return ops.max_pool2d(x, self.kernel, self.stride, self.padding, self.ceil_mode)


class AdaptiveAvgPool2d(nnx.Module):

  def __init__(self, output_size: tuple[int, int]):
    self.output_size = tuple(output_size)

  def __call__(self, x):
    return ops.adaptive_avg_pool2d(x, self.output_size)


def conv(cin: int, cout: int, kernel: int, *, stride: int = 1, padding: int = 0,
         kernel_init, bias_init=nnx.initializers.zeros, bias: bool = True,
         rngs: nnx.Rngs) -> nnx.Conv:
  """A torch-like Conv2d: explicit padding (nnx.Conv defaults to 'SAME'); zero bias unless
  `bias_init` says otherwise, none with bias=False (ResNet's convolutions before BN)."""
  return nnx.Conv(cin, cout, (kernel, kernel), strides=(stride, stride),
                  padding=((padding, padding), (padding, padding)), use_bias=bias,
                  kernel_init=kernel_init, bias_init=bias_init, rngs=rngs)


# torch's default init of Conv2d and Linear weights, kaiming_uniform_(a=sqrt(5)):
# U(-1/sqrt(fan_in), 1/sqrt(fan_in)), i.e. variance 1/(3 fan_in).
TORCH_DEFAULT_KERNEL_INIT = nnx.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform')


def torch_default_bias_init(fan_in: int):
  """torch's default bias init of Conv2d and Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / fan_in ** 0.5
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype,
                                                                   -bound, bound)


def batch_norm(channels: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
  """torch's BatchNorm2d in eval mode (running statistics, eps 1e-5)."""
  return nnx.BatchNorm(channels, use_running_average=True, epsilon=1e-5, rngs=rngs)


def chain(x, steps, prefix: str, hooks: Hooks | None):
  """Applies (name, fn) steps in order, offering each output to the hooks as PREFIX.name
  (plain `name` when prefix is empty): the straight-line part of a torch forward()."""
  for name, fn in steps:
    x = hook(hooks, f'{prefix}.{name}' if prefix else name, fn(x))
  return x


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


class FeaturesPoolClassifier(nnx.Module):
  """torchvision's `features -> avgpool -> flatten -> classifier` layout (AlexNet, VGG):
  subclasses set the three; torch flattens in (C, H, W) order."""

  def __call__(self, x, hooks: Hooks | None = None):
    x = hook(hooks, 'features', run_sequential(self.features, x, 'features', hooks))
    x = hook(hooks, 'avgpool', self.avgpool(x))
    x = run_sequential(self.classifier, ops.flatten_nchw(x), 'classifier', hooks)
    return hook(hooks, 'classifier', x)
