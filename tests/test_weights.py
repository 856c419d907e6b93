"""weights_convert and jaxviz.checkpoint: round trip, CLI, and every kind of bad file.

Converting needs torch (the [test] extra): those tests, and the ones on a converted file,
import it themselves and skip without it; the checkpoint-only tests run anywhere.
"""

import functools
import os
import subprocess
import sys
import urllib.error

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxviz
import weights_convert
from conftest import rel_err
from jaxviz import checkpoint
from jaxviz.errors import InputError, WeightsError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _torch():
  """torch (torchvision too); skips the calling test or fixture where they are missing."""
  torch = pytest.importorskip('torch')
  pytest.importorskip('torchvision')
  import torch_helpers  # noqa: F401  (sets torch's thread count)
  return torch


@pytest.fixture(scope='module')
def squeezenet_pth(tmp_path_factory):
  torch = _torch()
  import torchvision
  torch.manual_seed(0)
  model = torchvision.models.squeezenet1_1().eval()
  path = str(tmp_path_factory.mktemp('pth') / 'squeezenet1_1.pth')
  torch.save(model.state_dict(), path)
  return path, model


def test_cli_converts_and_loads(squeezenet_pth, tmp_path):
  import torch
  pth, torch_model = squeezenet_pth
  out = str(tmp_path / 'sq.npz')
  proc = subprocess.run(
      [sys.executable, '-m', 'weights_convert', '--model=squeezenet1_1',
       f'--checkpoint={pth}', f'--output={out}'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  model = jaxviz.load_model('squeezenet1_1', out)
  assert model.metadata['source_sha256'] == checkpoint.sha256_file(pth)
  assert model.metadata['file'] == os.path.abspath(out)
  assert model.class_names == jaxviz.imagenet_class_names()
  assert model.mean == jaxviz.IMAGENET_MEAN and model.std == jaxviz.IMAGENET_STD
  x = np.random.default_rng(0).standard_normal((2, 3, 225, 250)).astype(np.float32)
  with torch.no_grad():
    expected = torch_model(torch.tensor(x)).numpy()
  got = jax.jit(model.apply)(model.params, jnp.asarray(x.transpose(0, 2, 3, 1)))
  assert rel_err(got, expected) <= 1e-5  # float32 logits, as in test_models


def test_load_from_imagenet_cache(squeezenet_pth, tmp_path, monkeypatch):
  monkeypatch.setenv('JAXVIZ_CACHE', str(tmp_path))
  with pytest.raises(WeightsError, match='python -m weights_convert --model=squeezenet1_1'):
    jaxviz.load_model('squeezenet1_1', 'imagenet')
  weights_convert.convert('squeezenet1_1', jaxviz.loading.imagenet_weights_path(
      'squeezenet1_1'), squeezenet_pth[0])
  assert jaxviz.load_model('squeezenet1_1', 'imagenet').metadata['model'] == 'squeezenet1_1'


@pytest.mark.parametrize('name,version,url', [
    ('squeezenet1_1', None, 'https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth'),
    ('alexnet', None, 'https://download.pytorch.org/models/alexnet-owt-7be5be79.pth'),
    ('resnet50', None, 'https://download.pytorch.org/models/resnet50-11ad3fa6.pth'),
    ('resnet50', 'IMAGENET1K_V1',
     'https://download.pytorch.org/models/resnet50-0676ba61.pth'),
])
def test_download_without_network_is_one_line(monkeypatch, tmp_path, name, version, url):
  torch = _torch()
  monkeypatch.setenv('TORCH_HOME', str(tmp_path))
  calls = []

  def offline(url, dst, hash_prefix=None, progress=True):
    calls.append((url, hash_prefix))
    raise urllib.error.URLError('[Errno -2] Name or service not known')

  monkeypatch.setattr(torch.hub, 'download_url_to_file', offline)
  with pytest.raises(WeightsError) as e:
    weights_convert.convert(name, str(tmp_path / 'out.npz'), torchvision_weights=version)
  message = str(e.value)
  assert '\n' not in message and 'network is unreachable' in message
  assert '--checkpoint=FILE.pth' in message
  # torchvision's URL carries the sha256 prefix that torch.hub checks the download against
  # (resnet50's default is the V2 weights).
  assert calls == [(url, url.rsplit('-', 1)[1].split('.')[0])]
  assert not os.path.exists(tmp_path / 'out.npz')


def test_unknown_torchvision_weights_are_named():
  _torch()
  with pytest.raises(WeightsError, match="no 'IMAGENET1K_V3' weights for resnet50; it has "
                     'IMAGENET1K_V1, IMAGENET1K_V2'):
    weights_convert.official_weights('resnet50', 'IMAGENET1K_V3')


class _FakeWeights:
  """Stands for a torchvision weights enum member whose file's sha256 starts `prefix`."""

  def __init__(self, prefix):
    self.url = f'https://download.pytorch.org/models/sq-{prefix}.pth'
    self.meta = {'categories': [f'class {i}' for i in range(1000)]}
    self.transforms = functools.partial(object, crop_size=224, resize_size=232)

  def __str__(self):
    return 'SqueezeNet1_1_Weights.FAKE'


def test_a_local_checkpoint_is_checked_against_the_named_weights(squeezenet_pth, tmp_path,
                                                                  monkeypatch):
  pth = squeezenet_pth[0]
  sha = checkpoint.sha256_file(pth)
  fakes = {'RIGHT': _FakeWeights(sha[:8]), 'WRONG': _FakeWeights('00000000')}
  monkeypatch.setattr(weights_convert, 'official_weights', lambda name, v: fakes[v])
  out = str(tmp_path / 'sq.npz')
  with pytest.raises(WeightsError, match=r"is not torchvision's SqueezeNet1_1_Weights\.FAKE "
                     r'\(sha256 [0-9a-f]{12}\.\.\., sq-00000000\.pth expects 00000000'):
    weights_convert.convert('squeezenet1_1', out, pth, torchvision_weights='WRONG')
  assert not os.path.exists(out)
  weights_convert.convert('squeezenet1_1', out, pth, torchvision_weights='RIGHT')
  meta = jaxviz.load_model('squeezenet1_1', out).metadata
  assert meta['torchvision_weights'] == 'SqueezeNet1_1_Weights.FAKE'
  assert (meta['input_size'], meta['resize_size']) == (224, 232)
  assert meta['class_names'][999] == 'class 999'  # the named weights' categories


def test_official_weights_carry_class_names_offline():
  _torch()
  meta = weights_convert.official_weights('vgg16').meta
  assert tuple(meta['categories']) == jaxviz.imagenet_class_names()


def _state_dict(name='squeezenet1_1'):
  """A random-init torchvision state dict; skips the calling test without torch."""
  torch = _torch()
  import torchvision
  torch.manual_seed(0)
  return torchvision.models.get_model(name).state_dict()


def test_missing_key_is_named():
  sd = _state_dict()
  del sd['features.3.squeeze.weight']
  with pytest.raises(WeightsError, match=r'lacks parameter.*features\.3\.squeeze\.kernel'):
    weights_convert.convert_state_dict('squeezenet1_1', sd)


def test_extra_key_is_named():
  torch = _torch()
  sd = _state_dict()
  sd['features.13.weight'] = torch.zeros(3, 3, 1, 1)
  with pytest.raises(WeightsError, match=r'unexpected parameter.*features\.13\.kernel'):
    weights_convert.convert_state_dict('squeezenet1_1', sd)


def test_shape_mismatch_is_named():
  torch = _torch()
  sd = _state_dict()
  sd['features.0.weight'] = torch.zeros(64, 3, 5, 5)
  with pytest.raises(WeightsError, match=r'features\.0\.kernel has shape \(5, 5, 3, 64\)'):
    weights_convert.convert_state_dict('squeezenet1_1', sd)


def test_wrong_architecture_checkpoint_fails():
  # SqueezeNet 1.0 puts its pools elsewhere, so its Fire modules sit at other indices.
  with pytest.raises(WeightsError, match=r'lacks parameter.*features\.11\.'):
    weights_convert.convert_state_dict('squeezenet1_1', _state_dict('squeezenet1_0'))


def test_batchnorm_counter_is_dropped_and_bn_converted():
  sd = {k: v for k, v in _state_dict('vgg16_bn').items()}
  params = weights_convert.convert_state_dict('vgg16_bn', sd)
  assert set(params['features'][1]) == {'scale', 'bias', 'mean', 'var'}


@pytest.fixture(scope='module')
def good_npz(squeezenet_pth, tmp_path_factory):
  out = str(tmp_path_factory.mktemp('npz') / 'sq.npz')
  return weights_convert.convert('squeezenet1_1', out, squeezenet_pth[0])


def test_wrong_model_name_on_load(good_npz):
  with pytest.raises(WeightsError, match="holds weights for 'squeezenet1_1', not 'vgg16'"):
    jaxviz.load_model('vgg16', good_npz)


def test_unknown_model_name():
  with pytest.raises(InputError, match="unknown model 'resnet9'"):
    jaxviz.load_model('resnet9', 'random')


def test_missing_file():
  with pytest.raises(WeightsError, match='weights file not found'):
    jaxviz.load_model('squeezenet1_1', '/nonexistent/w.npz')


def test_truncated_file(good_npz, tmp_path):
  data = open(good_npz, 'rb').read()
  bad = tmp_path / 'truncated.npz'
  bad.write_bytes(data[:len(data) // 2])
  with pytest.raises(WeightsError, match='corrupt or truncated'):
    jaxviz.load_model('squeezenet1_1', str(bad))


def test_corrupted_bytes_fail_the_crc(good_npz, tmp_path):
  data = bytearray(open(good_npz, 'rb').read())
  middle = len(data) // 2  # inside some parameter's raw float32 bytes
  data[middle:middle + 16] = bytes(16)
  bad = tmp_path / 'corrupt.npz'
  bad.write_bytes(bytes(data))
  with pytest.raises(WeightsError, match='corrupt or truncated'):
    jaxviz.load_model('squeezenet1_1', str(bad))


def test_npz_without_metadata(tmp_path):
  bad = tmp_path / 'plain.npz'
  np.savez(bad, a=np.zeros(3))
  with pytest.raises(WeightsError, match='not a jaxviz weights file'):
    jaxviz.load_model('squeezenet1_1', str(bad))


def test_file_with_missing_parameter(good_npz, tmp_path):
  flat, meta = checkpoint.load(good_npz)
  del flat['classifier.1.bias']
  bad = str(tmp_path / 'missing.npz')
  checkpoint.save(bad, checkpoint.unflatten(flat), meta)
  with pytest.raises(WeightsError, match=r'lacks parameter.*classifier\.1\.bias'):
    jaxviz.load_model('squeezenet1_1', bad)


def test_truncated_pth(squeezenet_pth, tmp_path):
  data = open(squeezenet_pth[0], 'rb').read()
  bad = tmp_path / 'truncated.pth'
  bad.write_bytes(data[:len(data) // 3])
  with pytest.raises(WeightsError, match='cannot read checkpoint') as e:
    weights_convert.convert('squeezenet1_1', str(tmp_path / 'o.npz'), str(bad))
  assert '\n' not in str(e.value)
  assert not os.path.exists(tmp_path / 'o.npz')


class _Evil:

  def __reduce__(self):
    return (os.system, ('echo pwned > /dev/null',))


def test_pickled_objects_are_refused(tmp_path):
  torch = _torch()
  bad = tmp_path / 'evil.pth'
  torch.save({'features.0.weight': _Evil()}, bad)  # torch.save pickles arbitrary objects
  with pytest.raises(WeightsError, match='weights_only=True'):
    weights_convert.read_checkpoint(str(bad))


def test_wrapped_and_data_parallel_state_dicts(tmp_path):
  torch = _torch()
  sd = _state_dict()
  path = tmp_path / 'wrapped.pth'
  torch.save({'epoch': 3, 'state_dict': {f'module.{k}': v for k, v in sd.items()}}, path)
  assert set(weights_convert.read_checkpoint(str(path))) == set(sd)


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
  target = tmp_path / 'w.npz'
  target.write_bytes(b'old')

  def fail(f):
    f.write(b'partial')
    raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    checkpoint.atomic_write(target, fail)
  assert target.read_bytes() == b'old'
  assert os.listdir(tmp_path) == ['w.npz']  # no temporary file left behind


def test_atomic_write_gives_the_usual_file_mode(tmp_path):
  old = os.umask(0o022)
  try:
    checkpoint.atomic_write(tmp_path / 'f', lambda f: f.write(b'x'))
  finally:
    os.umask(old)
  assert (os.stat(tmp_path / 'f').st_mode & 0o777) == 0o644


def test_float64_params_survive_save_and_load(tmp_path):
  params = {'a': {0: {'kernel': np.arange(6.0).reshape(2, 3)}}}
  checkpoint.save(tmp_path / 'p.npz', params, {'model': 'x'})
  flat, meta = checkpoint.load(tmp_path / 'p.npz')
  np.testing.assert_array_equal(checkpoint.unflatten(flat)['a'][0]['kernel'],
                                params['a'][0]['kernel'])
  assert meta['model'] == 'x'
