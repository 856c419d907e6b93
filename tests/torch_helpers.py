"""The torch side of the equivalence tests: random-init torchvision models, converted into
jaxviz weights files, and NCHW torch tensors as NHWC arrays.

Needs the [test] extra's torch and torchvision: a test module imports this only after
`pytest.importorskip('torch')` (and 'torchvision'), so that it skips without them.
"""

import functools
import os

import torch
import torchvision

import jaxviz
import weights_convert
from conftest import WORKERS
from jaxviz import checkpoint

# The xdist workers share the cores (conftest: OMP_WAIT_POLICY).
torch.set_num_threads(max(1, (os.cpu_count() or 1) // WORKERS))


def to_nhwc(t):
  """A copy (torchvision's in-place ReLUs would otherwise rewrite captured outputs)."""
  return t.detach().cpu().numpy().transpose(0, 2, 3, 1).copy()


@functools.cache
def torch_model(name: str, seed: int):
  """A random-init torchvision model in eval mode (float64), cached per process.

  torchvision initialises BN to the identity; give it non-trivial statistics so the
  conversion of mean/var/scale/bias is actually exercised.
  """
  torch.manual_seed(seed)
  model = torchvision.models.get_model(name, weights=None)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.uniform_(-0.5, 0.5)
        m.running_var.uniform_(0.5, 2.0)
        m.weight.uniform_(0.5, 1.5)
        m.bias.uniform_(-0.2, 0.2)
  return model.eval().double()


@functools.cache
def converted_weights(name: str, seed: int, directory: str) -> str:
  """Writes the converted weights of torch_model(name, seed) into `directory`."""
  path = os.path.join(directory, f'{name}_seed{seed}.npz')
  params = weights_convert.convert_state_dict(name, torch_model(name, seed).state_dict())
  checkpoint.save(path, params, {
      'model': name, 'source': 'random-init torchvision', 'source_sha256': '',
      'class_names': list(jaxviz.imagenet_class_names()),
      'mean': list(jaxviz.IMAGENET_MEAN), 'std': list(jaxviz.IMAGENET_STD)})
  return path
