"""VGG (Simonyan & Zisserman 2015), equal to torchvision's vgg* in eval mode.

Porting traps: an adaptive average pool to 7x7 sits before the classifier (it really
averages, over overlapping bins, when the feature map is not 7x7, and repeats cells when
it is smaller); torch flattens in (C, H, W) order; dropout is the identity in eval mode;
batch norm uses its running statistics (eps 1e-5, as torch).
"""

from flax import nnx

from jaxviz.models import layers as L

CONFIGS = {
    'vgg11': (64, 'M', 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'),
    'vgg13': (64, 64, 'M', 128, 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'),
    'vgg16': (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M',
              512, 512, 512, 'M'),
    'vgg19': (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M', 512, 512, 512, 512, 'M',
              512, 512, 512, 512, 'M'),
}

# torchvision: kaiming_normal_(mode='fan_out') for convs, N(0, 0.01) for linears.
_CONV_INIT = nnx.initializers.variance_scaling(2.0, 'fan_out', 'normal')
_LINEAR_INIT = nnx.initializers.normal(0.01)


class VGG(L.FeaturesPoolClassifier):
  """NHWC VGG returning logits; parameter paths mirror torchvision's keys."""

  def __init__(self, config: str = 'vgg16', batch_norm: bool = False,
               num_classes: int = 1000, *, rngs: nnx.Rngs):
    features, cin = [], 3
    for v in CONFIGS[config]:
      if v == 'M':
        features.append(L.MaxPool2d(2, 2))
        continue
      features.append(L.conv(cin, v, 3, padding=1, kernel_init=_CONV_INIT, rngs=rngs))
      if batch_norm:
        features.append(L.batch_norm(v, rngs))
      features.append(L.ReLU())
      cin = v
    self.features = nnx.List(features)
    self.avgpool = L.AdaptiveAvgPool2d((7, 7))
    linear = lambda i, o: nnx.Linear(i, o, kernel_init=_LINEAR_INIT,
                                     bias_init=nnx.initializers.zeros, rngs=rngs)
    self.classifier = nnx.List([
        linear(512 * 7 * 7, 4096), L.ReLU(), L.Dropout(),
        linear(4096, 4096), L.ReLU(), L.Dropout(),
        linear(4096, num_classes),
    ])
