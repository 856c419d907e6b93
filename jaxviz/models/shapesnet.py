"""ShapesNet: a small SqueezeNet-style classifier for the synthetic shapes (jaxviz.shapes).

SqueezeNet 1.1's design scaled to 64x64 inputs and ten classes: a stride-2 3x3 stem, Fire
modules between ceil-mode max-pools, a 1x1 convolution to class maps and a global average.
Two deliberate differences:
- batch norm after every convolution but the last: without it this network sits at chance
  for a thousand steps before it finds the small objects (measured), which would blow the
  training budget; in eval mode it is a fixed per-channel affine map, so every gradient
  method sees a plain conv-ReLU network;
- no ReLU on the class maps: SqueezeNet's final ReLU gives a class whose map is negative
  everywhere a logit of exactly 0 and a zero input gradient, which stalls gradient methods
  (FoolingResult.stalled); a model trained to evaluate those methods should not have that
  blind spot.
"""

import jax.numpy as jnp
from flax import nnx

from jaxviz.models import layers as L

_KAIMING_UNIFORM = nnx.initializers.variance_scaling(2.0, 'fan_in', 'uniform')
_FINAL_INIT = nnx.initializers.normal(0.01)


def _bn(channels: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
  return nnx.BatchNorm(channels, use_running_average=True, momentum=0.9, epsilon=1e-5,
                       rngs=rngs)


class ConvBN(nnx.Module):
  """conv -> batch norm -> ReLU; hooks see 'NAME' (conv + BN) and 'NAME_activation'."""

  def __init__(self, cin: int, cout: int, kernel: int, *, stride: int = 1, padding: int = 0,
               rngs: nnx.Rngs):
    self.conv = L.conv(cin, cout, kernel, stride=stride, padding=padding,
                       kernel_init=_KAIMING_UNIFORM, rngs=rngs)
    self.bn = _bn(cout, rngs)

  def __call__(self, x, name: str, hooks: L.Hooks | None):
    x = L.hook(hooks, name, self.bn(self.conv(x)))
    return L.hook(hooks, f'{name}_activation', nnx.relu(x))


class FireBN(nnx.Module):
  """SqueezeNet's Fire module with batch norm: squeeze, then 1x1 and 3x3 expands."""
  takes_hooks = True

  def __init__(self, inplanes: int, squeeze: int, expand1x1: int, expand3x3: int, *,
               rngs: nnx.Rngs):
    self.squeeze = ConvBN(inplanes, squeeze, 1, rngs=rngs)
    self.expand1x1 = ConvBN(squeeze, expand1x1, 1, rngs=rngs)
    self.expand3x3 = ConvBN(squeeze, expand3x3, 3, padding=1, rngs=rngs)

  def branches(self, x, name: str, hooks: L.Hooks | None):
    """The two expand activations, whose channel concatenation is the module's output
    (run_sequential pools each before concatenating, as for SqueezeNet's Fire)."""
    s = self.squeeze(x, f'{name}.squeeze', hooks)
    return (self.expand1x1(s, f'{name}.expand1x1', hooks),
            self.expand3x3(s, f'{name}.expand3x3', hooks))

  def __call__(self, x, name: str, hooks: L.Hooks | None):
    return jnp.concatenate(self.branches(x, name, hooks), axis=-1)


class Stem(ConvBN):
  takes_hooks = True


class ShapesNet(nnx.Module):
  """NHWC logits; hookable layer names follow SqueezeNet's (features.N...)."""

  def __init__(self, num_classes: int = 10, *, rngs: nnx.Rngs):
    pool = lambda: L.MaxPool2d(3, 2, ceil_mode=True)
    self.features = nnx.List([
        Stem(3, 32, 3, stride=2, padding=1, rngs=rngs), pool(),               # 64 -> 32 -> 16
        FireBN(32, 16, 32, 32, rngs=rngs), FireBN(64, 16, 32, 32, rngs=rngs), pool(),   # 8
        FireBN(64, 32, 64, 64, rngs=rngs), FireBN(128, 32, 64, 64, rngs=rngs), pool(),  # 4
        FireBN(128, 48, 96, 96, rngs=rngs),
    ])
    self.classifier = nnx.List([
        L.Dropout(),
        L.conv(192, num_classes, 1, kernel_init=_FINAL_INIT, rngs=rngs),
        L.AdaptiveAvgPool2d((1, 1)),
    ])

  def __call__(self, x, hooks: L.Hooks | None = None):
    x = L.hook(hooks, 'features', L.run_sequential(self.features, x, 'features', hooks))
    x = L.hook(hooks, 'classifier',
               L.run_sequential(self.classifier, x, 'classifier', hooks))
    return x.reshape(x.shape[0], -1)
