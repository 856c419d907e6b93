"""AlexNet (Krizhevsky et al. 2012), equal to torchvision's `alexnet` in eval mode.

torchvision's variant is the "one weird trick" single-GPU AlexNet (Krizhevsky 2014):
64-192-384-256-256 channels, no local response normalisation, no grouped convolutions.
It is the nearest ImageNet model to Zeiler & Fergus's network (their 7x7 stride-2 stem is
the fix they derived from visualising AlexNet's 11x11 stride-4 one).

Porting traps: an 11x11 stride-4 stem with padding 2; floor-mode max-pools (3x3, stride
2) that drop trailing rows at odd sizes; an adaptive average pool to 6x6 that averages
overlapping bins, or repeats cells when the map is smaller (any input under 223 px);
torch's (C, H, W) flatten; dropout first in the classifier, the identity in eval mode.
"""

from flax import nnx

from jaxviz.models import layers as L


class AlexNet(L.FeaturesPoolClassifier):
  """NHWC AlexNet returning logits; parameter paths mirror torchvision's keys."""

  def __init__(self, num_classes: int = 1000, *, rngs: nnx.Rngs):
    # torchvision leaves AlexNet at torch's default init (kaiming_uniform_(a=sqrt(5))).
    def conv(cin, cout, kernel, **kw):
      return L.conv(cin, cout, kernel, kernel_init=L.TORCH_DEFAULT_KERNEL_INIT,
                    bias_init=L.torch_default_bias_init(cin * kernel * kernel), rngs=rngs,
                    **kw)

    def linear(cin, cout):
      return nnx.Linear(cin, cout, kernel_init=L.TORCH_DEFAULT_KERNEL_INIT,
                        bias_init=L.torch_default_bias_init(cin), rngs=rngs)

    pool = lambda: L.MaxPool2d(3, 2)
    self.features = nnx.List([
        conv(3, 64, 11, stride=4, padding=2), L.ReLU(), pool(),
        conv(64, 192, 5, padding=2), L.ReLU(), pool(),
        conv(192, 384, 3, padding=1), L.ReLU(),
        conv(384, 256, 3, padding=1), L.ReLU(),
        conv(256, 256, 3, padding=1), L.ReLU(), pool(),
    ])
    self.avgpool = L.AdaptiveAvgPool2d((6, 6))
    self.classifier = nnx.List([
        L.Dropout(), linear(256 * 6 * 6, 4096), L.ReLU(),
        L.Dropout(), linear(4096, 4096), L.ReLU(),
        linear(4096, num_classes),
    ])
