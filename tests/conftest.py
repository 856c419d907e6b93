"""Shared fixtures: random-init torchvision models converted into jaxviz weights files."""

import functools
import os

import numpy as np
import pytest

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# Under pytest-xdist two worker processes share the cores: torch's OpenMP threads must
# sleep, not spin, while they wait, or the other worker's XLA slows torch 20-60x.
WORKERS = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
if WORKERS > 1:
  os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
# glibc reads this when a process starts, so it reaches the xdist workers and the scripts
# the tests run (this file is imported in the controlling process before they start): XLA
# allocates fresh temporary buffers per call, and transparent huge pages spare most of
# their page faults (the shapes model trains ~30% faster). See README, Performance.
os.environ.setdefault('GLIBC_TUNABLES', 'glibc.malloc.hugetlb=1')
torch = pytest.importorskip('torch')  # the equivalence tests need the [test] extra
import torchvision  # noqa: E402

import jaxviz  # noqa: E402
import weights_convert  # noqa: E402
from jaxviz import checkpoint  # noqa: E402

torch.set_num_threads(max(1, (os.cpu_count() or 1) // WORKERS))


def rel_err(a, b) -> float:
  """Relative L2 error ||a - b|| / ||b|| over the whole array; ||a|| when b is all zero."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  scale = np.linalg.norm(b)
  return float(np.linalg.norm(a - b) / (scale if scale > 0 else 1.0))


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


@pytest.fixture(scope='session')
def weights_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('weights'))


@pytest.fixture(scope='session')
def shapes_cache(tmp_path_factory):
  """A jaxviz cache holding the trained shapes model (seed 0), trained here once per
  session as load_model('shapes') does on a fresh machine. $JAXVIZ_TEST_SHAPES_CACHE names
  a folder to keep it in between sessions (for development; CI always trains)."""
  from jaxviz import training
  folder = os.environ.get('JAXVIZ_TEST_SHAPES_CACHE') or str(tmp_path_factory.mktemp('shapes'))
  previous = os.environ.get('JAXVIZ_CACHE')
  os.environ['JAXVIZ_CACHE'] = folder
  try:
    training.ensure_weights(0, progress=False)
    yield folder
  finally:
    if previous is None:
      del os.environ['JAXVIZ_CACHE']
    else:
      os.environ['JAXVIZ_CACHE'] = previous
