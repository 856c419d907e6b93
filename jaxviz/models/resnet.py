"""ResNet-18 and ResNet-50 (He et al. 2016), equal to torchvision's in eval mode.

torchvision's ResNet is "v1.5": a bottleneck block strides in its 3x3 convolution, not
in the first 1x1 as the paper's v1 does. Porting traps: convolutions have no bias (batch
norm follows each); the stem's max-pool pads by 1 (with -inf, so padding never wins);
batch norm uses its running statistics (eps 1e-5); a block's downsample branch (1x1
convolution and batch norm) exists only where the stride or the width changes; torch adds
the shortcut in place into bn3's output (a trap for forward hooks, not for the port).

Layer names are torchvision's module names, for hooks and Grad-CAM: `conv1`, `bn1`,
`relu`, `maxpool`, `layer1` ... `layer4` and their blocks (`layer4.2`) and sub-layers
(`layer4.2.conv3`, `layer4.2.bn3`, `layer4.0.downsample`, `layer4.0.downsample.1`),
`avgpool`, `fc`. A block calls its one ReLU module several times, so a torch forward hook
on `layer4.2.relu` fires once per call; jaxviz names each call: `layer4.2.relu1` and
`layer4.2.relu2` after bn1 and bn2, and `layer4.2.relu` the last one, after the shortcut
is added (the block's output, and what a hook keeping the latest call ends up holding).
"""

from flax import nnx
import jax

from jaxviz.models import layers as L

# torchvision: kaiming_normal_(mode='fan_out') for convs, BN to the identity, torch's
# default init for the final Linear.
_CONV_INIT = nnx.initializers.variance_scaling(2.0, 'fan_out', 'normal')

# name: (block, blocks per stage)
CONFIGS = {
    'resnet18': ('basic', (2, 2, 2, 2)),
    'resnet50': ('bottleneck', (3, 4, 6, 3)),
}
_EXPANSION = {'basic': 1, 'bottleneck': 4}


def _conv(cin, cout, kernel, rngs, stride=1, padding=0):
  return L.conv(cin, cout, kernel, stride=stride, padding=padding, bias=False,
                kernel_init=_CONV_INIT, rngs=rngs)


class Block(nnx.Module):
  """torchvision's BasicBlock (two 3x3 convolutions) or Bottleneck (1x1, 3x3, 1x1)."""
  takes_hooks = True

  def __init__(self, kind: str, inplanes: int, planes: int, stride: int, *,
               rngs: nnx.Rngs):
    out = planes * _EXPANSION[kind]
    if kind == 'basic':
      specs = [(inplanes, planes, 3, stride, 1), (planes, planes, 3, 1, 1)]
    else:  # v1.5: the stride is on the 3x3 convolution
      specs = [(inplanes, planes, 1, 1, 0), (planes, planes, 3, stride, 1),
               (planes, out, 1, 1, 0)]
    for i, (cin, cout, k, s, p) in enumerate(specs, 1):
      setattr(self, f'conv{i}', _conv(cin, cout, k, rngs, stride=s, padding=p))
      setattr(self, f'bn{i}', L.batch_norm(cout, rngs))
    self.depth = len(specs)
    self.downsample = (nnx.List([_conv(inplanes, out, 1, rngs, stride=stride),
                                 L.batch_norm(out, rngs)])
                       if stride != 1 or inplanes != out else None)

  def __call__(self, x, name: str, hooks: L.Hooks | None):
    steps = []
    for i in range(1, self.depth + 1):
      steps += [(f'conv{i}', getattr(self, f'conv{i}')), (f'bn{i}', getattr(self, f'bn{i}'))]
      if i < self.depth:
        steps.append((f'relu{i}', jax.nn.relu))
    out = L.chain(x, steps, name, hooks)
    identity = x
    if self.downsample is not None:
      identity = L.hook(hooks, f'{name}.downsample',
                        L.run_sequential(self.downsample, x, f'{name}.downsample', hooks))
    return L.hook(hooks, f'{name}.relu', jax.nn.relu(out + identity))


class ResNet(nnx.Module):
  """NHWC ResNet returning logits; parameter paths mirror torchvision's keys."""

  def __init__(self, config: str = 'resnet50', num_classes: int = 1000, *,
               rngs: nnx.Rngs):
    kind, depths = CONFIGS[config]
    self.conv1 = _conv(3, 64, 7, rngs, stride=2, padding=3)
    self.bn1 = L.batch_norm(64, rngs)
    self.maxpool = L.MaxPool2d(3, 2, padding=1)
    inplanes = 64
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), depths), 1):
      stride = 1 if stage == 1 else 2
      stage_blocks = []
      for b in range(blocks):
        stage_blocks.append(Block(kind, inplanes, planes, stride if b == 0 else 1,
                                  rngs=rngs))
        inplanes = planes * _EXPANSION[kind]
      setattr(self, f'layer{stage}', nnx.List(stage_blocks))
    self.avgpool = L.AdaptiveAvgPool2d((1, 1))
    self.fc = nnx.Linear(inplanes, num_classes, kernel_init=L.TORCH_DEFAULT_KERNEL_INIT,
                         bias_init=L.torch_default_bias_init(inplanes), rngs=rngs)

  def __call__(self, x, hooks: L.Hooks | None = None):
    x = L.chain(x, [('conv1', self.conv1), ('bn1', self.bn1), ('relu', jax.nn.relu),
                    ('maxpool', self.maxpool)], '', hooks)
    for stage in range(1, 5):
      name = f'layer{stage}'
      x = L.hook(hooks, name, L.run_sequential(getattr(self, name), x, name, hooks))
    x = L.hook(hooks, 'avgpool', self.avgpool(x))
    return L.hook(hooks, 'fc', self.fc(x.reshape(x.shape[0], -1)))
