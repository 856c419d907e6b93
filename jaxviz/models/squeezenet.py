"""SqueezeNet 1.0 and 1.1 (Iandola et al. 2016), equal to torchvision's in eval mode.

Porting traps: every max-pool uses ceil_mode=True (224 never shows it, odd sizes do); the
classifier applies a ReLU to the class map *before* the global average pool, so a class
whose map is negative everywhere has logit exactly 0 and zero input gradient.
"""

from flax import nnx
import jax.numpy as jnp

from jaxviz.models import layers as L

# torchvision: kaiming_uniform_ (gain sqrt(2)) for every conv but the last, N(0, 0.01) there.
_KAIMING_UNIFORM = nnx.initializers.variance_scaling(2.0, 'fan_in', 'uniform')
_FINAL_INIT = nnx.initializers.normal(0.01)


class Fire(nnx.Module):
  takes_hooks = True

  def __init__(self, inplanes: int, squeeze: int, expand1x1: int, expand3x3: int, *,
               rngs: nnx.Rngs):
    kw = dict(kernel_init=_KAIMING_UNIFORM, rngs=rngs)
    self.squeeze = L.conv(inplanes, squeeze, 1, **kw)
    self.expand1x1 = L.conv(squeeze, expand1x1, 1, **kw)
    self.expand3x3 = L.conv(squeeze, expand3x3, 3, padding=1, **kw)

  def branches(self, x, name: str, hooks: L.Hooks | None):
    """The two expand activations, whose channel concatenation is the module's output."""
    relu = lambda y, sub: L.hook(hooks, f'{name}.{sub}_activation',
                                 nnx.relu(L.hook(hooks, f'{name}.{sub}', y)))
    s = relu(self.squeeze(x), 'squeeze')
    return relu(self.expand1x1(s), 'expand1x1'), relu(self.expand3x3(s), 'expand3x3')

  def __call__(self, x, name: str, hooks: L.Hooks | None):
    return jnp.concatenate(self.branches(x, name, hooks), axis=-1)


class SqueezeNet(nnx.Module):
  """NHWC SqueezeNet returning logits; parameter paths mirror torchvision's keys."""

  def __init__(self, version: str = '1_1', num_classes: int = 1000, *, rngs: nnx.Rngs):
    pool = lambda: L.MaxPool2d(3, 2, ceil_mode=True)
    kw = dict(kernel_init=_KAIMING_UNIFORM, rngs=rngs)
    if version == '1_0':
      stem = [L.conv(3, 96, 7, stride=2, **kw), L.ReLU(), pool()]
      body = [Fire(96, 16, 64, 64, rngs=rngs), Fire(128, 16, 64, 64, rngs=rngs),
              Fire(128, 32, 128, 128, rngs=rngs), pool(),
              Fire(256, 32, 128, 128, rngs=rngs), Fire(256, 48, 192, 192, rngs=rngs),
              Fire(384, 48, 192, 192, rngs=rngs), Fire(384, 64, 256, 256, rngs=rngs), pool(),
              Fire(512, 64, 256, 256, rngs=rngs)]
    elif version == '1_1':
      stem = [L.conv(3, 64, 3, stride=2, **kw), L.ReLU(), pool()]
      body = [Fire(64, 16, 64, 64, rngs=rngs), Fire(128, 16, 64, 64, rngs=rngs), pool(),
              Fire(128, 32, 128, 128, rngs=rngs), Fire(256, 32, 128, 128, rngs=rngs), pool(),
              Fire(256, 48, 192, 192, rngs=rngs), Fire(384, 48, 192, 192, rngs=rngs),
              Fire(384, 64, 256, 256, rngs=rngs), Fire(512, 64, 256, 256, rngs=rngs)]
    else:
      raise ValueError(f'unknown SqueezeNet version {version!r}: use 1_0 or 1_1')
    self.features = nnx.List(stem + body)
    self.classifier = nnx.List([
        L.Dropout(),
        L.conv(512, num_classes, 1, kernel_init=_FINAL_INIT, rngs=rngs),
        L.ReLU(),
        L.AdaptiveAvgPool2d((1, 1)),
    ])

  def __call__(self, x, hooks: L.Hooks | None = None):
    x = L.hook(hooks, 'features', L.run_sequential(self.features, x, 'features', hooks))
    x = L.hook(hooks, 'classifier',
               L.run_sequential(self.classifier, x, 'classifier', hooks))
    return x.reshape(x.shape[0], -1)
