"""Bad input to the converter and the weights files: one-line errors, no silent NaN, no
traceback, and no temporary file left behind (tests/test_weights.py has the rest).

State dicts are built from jaxviz's abstract SqueezeNet 1.1 in torch layout, as numpy
arrays (convert_state_dict takes those too), so most of these tests run without torch;
the ones that need a real .pth or torch tensors import torch themselves and skip without.
"""

import functools
import importlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import jaxviz
import weights_convert
from jaxviz import checkpoint, models
from jaxviz.errors import WeightsError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = 'squeezenet1_1'


def _torch():
  """torch (no torchvision: these tests only cast, save and load tensors), or a skip."""
  return pytest.importorskip('torch')


@functools.cache
def _shapes(name=NAME) -> dict[str, tuple[int, ...]]:
  abstract = models.functionalize(models.build_abstract(name, 1000))[2]
  return {k: v.shape for k, v in checkpoint.flatten(abstract).items()}


def _jax_params(name=NAME, seed=0) -> dict[str, np.ndarray]:
  """Small random float32 values in jaxviz's flat layout ('features.0.kernel', HWIO)."""
  rng = np.random.default_rng(seed)
  return {k: (0.05 * rng.standard_normal(shape)).astype(np.float32)
          for k, shape in _shapes(name).items()}


def _state_dict(name=NAME) -> dict[str, np.ndarray]:
  """The same values under torch keys and in torch layout (OIHW, (out, in))."""
  sd = {}
  for key, value in _jax_params(name).items():
    *path, leaf = key.split('.')
    if leaf == 'kernel':
      value = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T
    leaf = {'kernel': 'weight', 'scale': 'weight', 'mean': 'running_mean',
            'var': 'running_var'}.get(leaf, leaf)
    sd['.'.join(path + [leaf])] = np.ascontiguousarray(value)
  return sd


def _metadata(**extra):
  return dict({'model': NAME, 'source': 'test', 'class_names': list(
      jaxviz.imagenet_class_names()), 'mean': list(jaxviz.IMAGENET_MEAN),
      'std': list(jaxviz.IMAGENET_STD)}, **extra)


def _raises_one_line(exc_type, match, fn, *args, **kwargs):
  with pytest.raises(exc_type, match=match) as e:
    fn(*args, **kwargs)
  assert '\n' not in str(e.value), str(e.value)
  return e


def test_state_dict_helper_is_torch_layout():
  """The helper inverts the converter exactly (else the tests below test nothing)."""
  params = checkpoint.flatten(weights_convert.convert_state_dict(NAME, _state_dict()))
  expected = _jax_params()
  assert params.keys() == expected.keys()
  for k in expected:
    np.testing.assert_array_equal(params[k], expected[k])


# --- 1. NaN and inf -------------------------------------------------------------------


def _nonfinite_state_dict():
  sd = _state_dict()
  sd['features.0.weight'][0, 0, 0, :2] = [np.nan, np.inf]
  sd['classifier.1.bias'][5] = -np.inf
  return sd


def test_convert_refuses_nonfinite_values():
  e = _raises_one_line(WeightsError, r'NaN or inf in .*--allow_nonfinite',
                       weights_convert.convert_state_dict, NAME, _nonfinite_state_dict())
  assert 'features.0.weight (2 of 1728 values)' in str(e.value)
  assert 'classifier.1.bias (1 of 1000 values)' in str(e.value)


def test_convert_allow_nonfinite_converts_with_a_warning():
  with pytest.warns(checkpoint.NonFiniteWarning,
                    match=r'features\.0\.weight \(2 of 1728 values\)') as record:
    params = weights_convert.convert_state_dict(NAME, _nonfinite_state_dict(),
                                                allow_nonfinite=True)
  assert all('\n' not in str(w.message) for w in record)
  kernel = params['features'][0]['kernel']  # HWIO: torch's [0, 0, 0, :2] is [0, :2, 0, 0]
  assert np.isnan(kernel[0, 0, 0, 0]) and np.isposinf(kernel[0, 1, 0, 0])
  assert np.isneginf(params['classifier'][1]['bias'][5])


def test_float64_overflowing_float32_is_refused():
  sd = {k: v.astype(np.float64) for k, v in _state_dict().items()}
  sd['classifier.1.bias'][0] = 1e300  # finite in float64, inf in float32
  _raises_one_line(WeightsError, r'NaN or inf in classifier\.1\.bias \(1 of 1000',
                   weights_convert.convert_state_dict, NAME, sd)


def _save_params(path, flat, **meta):
  checkpoint.save(path, checkpoint.unflatten(flat), _metadata(**meta))
  return str(path)


def test_load_refuses_nonfinite_parameters(tmp_path):
  flat = _jax_params()
  flat['features.3.squeeze.kernel'][0, 0, 5, 1] = np.nan
  path = _save_params(tmp_path / 'nan.npz', flat)
  _raises_one_line(WeightsError, r'nan\.npz: NaN or inf in features\.3\.squeeze\.kernel '
                   r'\(1 of 1024 values\)', jaxviz.load_model, NAME, path)


def test_load_of_a_file_converted_with_allow_nonfinite_warns(tmp_path):
  flat = _jax_params()
  flat['classifier.1.bias'][7] = np.inf
  path = _save_params(tmp_path / 'inf.npz', flat, allow_nonfinite=True)
  with pytest.warns(checkpoint.NonFiniteWarning,
                    match=r'classifier\.1\.bias \(1 of 1000 values\)') as record:
    model = jaxviz.load_model(NAME, path)
  assert all('\n' not in str(w.message) for w in record)
  assert np.isposinf(np.asarray(model.params['classifier'][1]['bias'])[7])


def test_convert_records_allow_nonfinite_and_load_then_warns(tmp_path, monkeypatch):
  """The whole path: convert (allowed) -> metadata -> load_model warns, not refuses."""
  pth = tmp_path / 'nan.pth'
  pth.write_bytes(b'stands in for a torch file')
  monkeypatch.setattr(weights_convert, 'read_checkpoint', lambda path: _nonfinite_state_dict())
  out = str(tmp_path / 'out.npz')
  with pytest.warns(checkpoint.NonFiniteWarning):
    weights_convert.convert(NAME, out, str(pth), allow_nonfinite=True)
  assert checkpoint.load(out)[1]['allow_nonfinite'] is True
  with pytest.warns(checkpoint.NonFiniteWarning, match=r'features\.0\.kernel \(2 of 1728'):
    jaxviz.load_model(NAME, out)
  _raises_one_line(WeightsError, 'NaN or inf', weights_convert.convert, NAME,
                   str(tmp_path / 'refused.npz'), str(pth))
  assert sorted(os.listdir(tmp_path)) == ['nan.pth', 'out.npz']


def test_real_pth_with_nan_is_refused(tmp_path):
  torch = _torch()
  pth = tmp_path / 'nan.pth'
  torch.save({k: torch.from_numpy(v) for k, v in _nonfinite_state_dict().items()}, pth)
  _raises_one_line(WeightsError, r'NaN or inf in .*features\.0\.weight \(2 of 1728',
                   weights_convert.convert, NAME, str(tmp_path / 'o.npz'), str(pth))
  assert os.listdir(tmp_path) == ['nan.pth']


# --- 2. dtypes ------------------------------------------------------------------------


@pytest.mark.parametrize('dtype', ['int64', 'int32', 'uint8', 'bool'])
def test_integer_arrays_are_refused(dtype):
  sd = _state_dict()
  sd['features.0.weight'] = sd['features.0.weight'].astype(dtype)
  _raises_one_line(WeightsError, rf'features\.0\.weight has dtype {dtype}\b',
                   weights_convert.convert_state_dict, NAME, sd)


@pytest.mark.parametrize('dtype', ['int64', 'bool', 'uint8', 'complex64'])
def test_non_float_tensors_are_refused(dtype):
  torch = _torch()
  sd = {k: torch.from_numpy(v) for k, v in _state_dict().items()}
  sd['classifier.1.bias'] = sd['classifier.1.bias'].to(getattr(torch, dtype))
  _raises_one_line(WeightsError, rf'classifier\.1\.bias has dtype {dtype}\b',
                   weights_convert.convert_state_dict, NAME, sd)


@pytest.mark.parametrize('dtype', ['float16', 'bfloat16', 'float64'])
def test_float_tensors_are_cast_to_float32(dtype):
  torch = _torch()
  sd = {k: torch.from_numpy(v) for k, v in _state_dict().items()}
  sd['features.0.weight'] = sd['features.0.weight'].to(getattr(torch, dtype))
  sd['classifier.1.bias'] = sd['classifier.1.bias'].to(getattr(torch, dtype))
  sd['features.1.num_batches_tracked'] = torch.tensor(7)  # an int64 counter: still dropped
  params = weights_convert.convert_state_dict(NAME, sd)
  kernel, bias = params['features'][0]['kernel'], params['classifier'][1]['bias']
  assert kernel.dtype == bias.dtype == np.float32
  # float16 and bfloat16 widen exactly; float64 rounds to nearest, as numpy's cast does.
  np.testing.assert_array_equal(
      kernel, sd['features.0.weight'].double().numpy().astype(np.float32).transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(bias, sd['classifier.1.bias'].double().numpy().astype(np.float32))


@pytest.mark.parametrize('dtype', ['float16', 'float64'])
def test_float_arrays_are_cast_to_float32(dtype):
  sd = _state_dict()
  sd['classifier.1.weight'] = sd['classifier.1.weight'].astype(dtype)
  params = weights_convert.convert_state_dict(NAME, sd)
  assert params['classifier'][1]['kernel'].dtype == np.float32
  np.testing.assert_array_equal(params['classifier'][1]['kernel'],
                                sd['classifier.1.weight'].astype(np.float32).T)


# --- 3. Ctrl-C in python -m weights_convert --------------------------------------------


@pytest.fixture
def cli(tmp_path, monkeypatch):
  """runs `python -m weights_convert ARGS` in-process; returns (SystemExit code, stderr).

  read_checkpoint is replaced by a state dict (the conversion itself runs), so that this
  needs no torch.
  """
  from absl import flags
  from absl.testing import flagsaver
  main = importlib.import_module('weights_convert.__main__')
  pth = tmp_path / 'in' / 'model.pth'
  pth.parent.mkdir()
  pth.write_bytes(b'stands in for a torch file')
  state = {'sd': _state_dict()}
  monkeypatch.setattr(weights_convert, 'read_checkpoint', lambda path: state['sd'])

  def run(*args, capsys):
    was_parsed = flags.FLAGS.is_parsed()
    with flagsaver.flagsaver():
      flags.FLAGS(['weights_convert', f'--model={NAME}', f'--checkpoint={pth}', *args])
      try:
        main.main([])
        code = None
      except SystemExit as e:
        code = e.code
      except KeyboardInterrupt:
        pytest.fail('KeyboardInterrupt escaped from main')
    if not was_parsed:
      flags.FLAGS.unparse_flags()
    return code, capsys.readouterr()

  run.state = state
  return run


def _interrupt(*args, **kwargs):
  raise KeyboardInterrupt


def test_cli_interrupted_while_converting(cli, tmp_path, monkeypatch, capsys):
  out = tmp_path / 'out'
  monkeypatch.setattr(weights_convert, 'convert_state_dict', _interrupt)
  code, std = cli(f'--output={out / "w.npz"}', capsys=capsys)
  assert code == 'error: interrupted; nothing written'  # sys.exit(str): stderr, status 1
  assert not out.exists() or os.listdir(out) == []


def test_cli_interrupted_while_writing(cli, tmp_path, monkeypatch, capsys):
  out = tmp_path / 'out'
  out.mkdir()

  def savez_then_interrupt(f, **arrays):
    f.write(b'PK\x03\x04 half of a zip')
    assert [n for n in os.listdir(out) if n.endswith('.tmp')]  # the temporary exists
    raise KeyboardInterrupt

  monkeypatch.setattr(np, 'savez', savez_then_interrupt)
  code, std = cli(f'--output={out / "w.npz"}', capsys=capsys)
  assert code == 'error: interrupted; nothing written'
  assert os.listdir(out) == []


def test_cli_allow_nonfinite_flag(cli, tmp_path, capsys):
  out = tmp_path / 'w.npz'
  cli.state['sd'] = _nonfinite_state_dict()
  code, std = cli(f'--output={out}', capsys=capsys)
  assert isinstance(code, str) and code.startswith('error: ') and '\n' not in code
  assert 'features.0.weight (2 of 1728 values)' in code and not out.exists()
  code, std = cli(f'--output={out}', '--allow_nonfinite', capsys=capsys)
  assert code is None and out.exists()
  warning_lines = [line for line in std.err.splitlines() if line.startswith('warning: ')]
  assert len(warning_lines) == 1, std.err
  assert 'features.0.weight (2 of 1728 values)' in warning_lines[0]
  assert 'classifier.1.bias (1 of 1000 values)' in warning_lines[0]
  assert std.out.strip() == f'wrote {out}'


# --- 4. SIGTERM while writing, and temporaries of dead writers --------------------------


@pytest.mark.skipif(os.name != 'posix', reason='SIGTERM and os.kill(pid, 0) are POSIX')
def test_sigterm_while_writing_leaves_no_temporary(tmp_path):
  target, marker = tmp_path / 'w.npz', tmp_path / 'started'
  child = subprocess.Popen([sys.executable, '-c', textwrap.dedent(f'''
      import time
      from jaxviz import checkpoint
      def write(f):
        f.write(b'half of a file')
        f.flush()
        open({str(marker)!r}, 'w').close()
        time.sleep(60)
      checkpoint.atomic_write({str(target)!r}, write)
      ''')], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  try:
    deadline = time.monotonic() + 120  # importing jaxviz (jax) takes seconds on a busy CPU
    while not marker.exists():
      assert child.poll() is None, child.stdout.read().decode()
      assert time.monotonic() < deadline, 'the child never started writing'
      time.sleep(0.05)
    temporaries = [n for n in os.listdir(tmp_path) if n.endswith('.tmp')]
    assert len(temporaries) == 1 and temporaries[0].startswith(f'.w.npz.{child.pid}.')
    child.send_signal(signal.SIGTERM)
    child.wait(timeout=30)
  finally:
    if child.poll() is None:
      child.kill()
      child.wait()
  # It still dies of SIGTERM, as without the handler: no traceback, no exit code of ours.
  assert child.returncode == -signal.SIGTERM, child.stdout.read().decode()
  assert child.stdout.read() == b''
  assert sorted(os.listdir(tmp_path)) == ['started']


@pytest.mark.skipif(os.name != 'posix', reason='os.kill(pid, 0) probes a PID on POSIX only')
def test_temporaries_of_dead_writers_are_removed(tmp_path):
  pid_max = int(open('/proc/sys/kernel/pid_max').read()) if os.path.exists(
      '/proc/sys/kernel/pid_max') else 4194304
  dead, alive = pid_max + 1, os.getpid()  # no process can have a PID above pid_max
  names = {
      'dead': f'.w.npz.{dead}.abc_12x.tmp',
      'alive': f'.w.npz.{alive}.zz9.tmp',
      'other target': f'.v.npz.{dead}.abc.tmp',
      'other target w.npz.5': f'.w.npz.5.{dead}.abc.tmp',
  }
  for name in names.values():
    (tmp_path / name).write_bytes(b'stale')
  checkpoint.atomic_write(tmp_path / 'w.npz', lambda f: f.write(b'new'))
  assert (tmp_path / 'w.npz').read_bytes() == b'new'
  assert sorted(os.listdir(tmp_path)) == sorted(
      ['w.npz', names['alive'], names['other target'], names['other target w.npz.5']])


def test_atomic_write_restores_the_sigterm_handler(tmp_path):
  original = signal.signal(signal.SIGTERM, signal.SIG_DFL)
  try:
    seen = []
    checkpoint.atomic_write(tmp_path / 'a', lambda f: seen.append(
        signal.getsignal(signal.SIGTERM)))
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert callable(seen[0])  # a handler that raises, while the temporary exists

    def graceful(signum, frame):  # a program's own handler is left to do its job
      raise SystemExit(3)

    signal.signal(signal.SIGTERM, graceful)
    with pytest.raises(SystemExit):
      checkpoint.atomic_write(tmp_path / 'b', lambda f: signal.raise_signal(signal.SIGTERM))
    assert signal.getsignal(signal.SIGTERM) is graceful
  finally:
    signal.signal(signal.SIGTERM, original)
  assert sorted(os.listdir(tmp_path)) == ['a']


# --- 5. cases handled before: still one-line WeightsErrors -----------------------------


def _write(path, content):
  path.write_bytes(content)
  return str(path)


def _npz_with(tmp_path, change):
  flat = _jax_params()
  meta = _metadata(format_version=checkpoint.FORMAT_VERSION)
  change(flat, meta)
  path = tmp_path / 'w.npz'
  arrays = dict(flat, __metadata__=np.frombuffer(json.dumps(meta).encode(), np.uint8))
  np.savez(path, **arrays)
  return str(path)


WEIGHTS_FILE_CASES = {
    'empty file': (lambda p: _write(p / 'e.npz', b''), 'corrupt or truncated'),
    'text file': (lambda p: _write(p / 't.npz', b'not a zip\n'), 'corrupt or truncated'),
    'extra key': (lambda p: _npz_with(p, lambda f, m: f.update(
        {'features.13.kernel': np.zeros((1, 1, 3, 3), np.float32)})),
        r'unexpected parameter.*features\.13\.kernel'),
    'mis-shaped key': (lambda p: _npz_with(p, lambda f, m: f.update(
        {'classifier.1.bias': np.zeros(10, np.float32)})),
        r'classifier\.1\.bias has shape \(10,\), the model expects \(1000,\)'),
    'integer parameter': (lambda p: _npz_with(p, lambda f, m: f.update(
        {'classifier.1.bias': np.zeros(1000, np.int64)})),
        r'classifier\.1\.bias has dtype int64'),
    'other format version': (lambda p: _npz_with(p, lambda f, m: m.update(
        format_version=99)), 'has format version 99'),
    'metadata not JSON': (lambda p: _write(p / 'm.npz', _npz_bytes(
        p, __metadata__=np.frombuffer(b'{not json', np.uint8))), 'unreadable metadata'),
    'a directory': (lambda p: str(p), 'weights file not found'),
}


def _npz_bytes(folder, **arrays):
  path = folder / 'tmp_npz_bytes.npz'
  np.savez(path, **arrays)
  data = path.read_bytes()
  path.unlink()
  return data


@pytest.mark.parametrize('case', WEIGHTS_FILE_CASES)
def test_bad_weights_file_is_one_line(case, tmp_path):
  make, match = WEIGHTS_FILE_CASES[case]
  path = make(tmp_path)
  _raises_one_line(WeightsError, match, jaxviz.load_model, NAME, path)


def test_weight_with_no_conversion_rule():
  sd = _state_dict()
  sd['features.0.weight'] = sd['features.0.weight'][0]
  _raises_one_line(WeightsError, r'features\.0\.weight has 3 dims; no conversion rule',
                   weights_convert.convert_state_dict, NAME, sd)


class _Evil:

  def __reduce__(self):
    return (os.system, ('echo pwned > /dev/null',))


CHECKPOINT_CASES = {
    'missing file': (lambda p, torch: str(p / 'absent.pth'), 'checkpoint not found'),
    'empty file': (lambda p, torch: _write(p / 'e.pth', b''), 'cannot read checkpoint'),
    'text file': (lambda p, torch: _write(p / 't.pth', b'hello\n'), 'cannot read checkpoint'),
    'pickle that runs code': (lambda p, torch: _torch_save(
        torch, {'features.0.weight': _Evil()}, p / 'evil.pth'),
        r'cannot read checkpoint.*weights_only=True'),
    'a list, not a state_dict': (lambda p, torch: _torch_save(
        torch, [torch.zeros(3)], p / 'l.pth'), 'does not hold a state_dict'),
    'a dict of non-tensors': (lambda p, torch: _torch_save(
        torch, {'features.0.weight': 3}, p / 'd.pth'), 'does not hold a state_dict'),
}


def _torch_save(torch, obj, path):
  torch.save(obj, path)
  return str(path)


@pytest.mark.parametrize('case', CHECKPOINT_CASES)
def test_bad_checkpoint_is_one_line(case, tmp_path):
  torch = _torch()
  make, match = CHECKPOINT_CASES[case]
  inputs = tmp_path / 'in'
  inputs.mkdir()
  path = make(inputs, torch)
  out = tmp_path / 'out'
  _raises_one_line(WeightsError, match, weights_convert.convert, NAME, str(out / 'w.npz'), path)
  assert not out.exists()


# --- 6. Image files and .npz images: converted to RGB, or a one-line error --------------

import jax  # noqa: E402  (sections 6-8)
from jaxviz import data, evaluation, metrics, training  # noqa: E402


def _png16_rgb(path, rgb16):
  """A 16-bit RGB PNG, written by hand: Pillow reads them but cannot write them."""
  import struct
  import zlib
  h, w, _ = rgb16.shape
  raw = b''.join(b'\x00' + rgb16[y].astype('>u2').tobytes() for y in range(h))

  def chunk(kind, data):
    return (struct.pack('>I', len(data)) + kind + data
            + struct.pack('>I', zlib.crc32(kind + data)))

  path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 16, 2,
                                                                     0, 0, 0))
                   + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))
  return path


def _saved(path, image, **kwargs):
  image.save(path, **kwargs)
  return path


_LEVELS = np.array([[0, 100, 200, 255]], np.uint8).repeat(4, axis=0)  # 4x4, 4 grey levels
_RED_BLUE = np.zeros((4, 4, 3), np.uint8)
_RED_BLUE[:, :2, 0] = 255
_RED_BLUE[:, 2:, 2] = 255


def _cmyk_red_blue():
  from PIL import Image
  cmyk = np.zeros((4, 4, 4), np.uint8)
  cmyk[:, :2] = (0, 255, 255, 0)  # red
  cmyk[:, 2:] = (255, 255, 0, 0)  # blue
  return Image.fromarray(cmyk, 'CMYK')


def _rgba_file(path):
  from PIL import Image
  rgba = np.zeros((4, 4, 4), np.uint8)
  rgba[:, :2] = (255, 0, 0, 255)  # opaque red
  rgba[:, 2:] = (0, 0, 255, 0)  # transparent: the white background shows
  return _saved(path, Image.fromarray(rgba, 'RGBA'))


# name: (writes the file into a folder, the RGB it must load as, tolerance)
IMAGE_FILE_CASES = {
    'grayscale PNG': (lambda p: _saved(p / 'g.png', __import__('PIL.Image').Image.fromarray(
        _LEVELS, 'L')), np.repeat(_LEVELS[..., None], 3, -1), 0),
    'grayscale 16-bit PNG': (lambda p: _saved(p / 'g16.png', __import__('PIL.Image').Image
                                              .fromarray(_LEVELS.astype(np.uint16) * 257)),
                             np.repeat(_LEVELS[..., None], 3, -1), 0),
    'grayscale 16-bit TIFF': (lambda p: _saved(p / 'g16.tif', __import__('PIL.Image').Image
                                               .fromarray(_LEVELS.astype(np.uint16) * 257)),
                              np.repeat(_LEVELS[..., None], 3, -1), 0),
    'RGB 16-bit PNG': (lambda p: _png16_rgb(p / 'rgb16.png', _RED_BLUE.astype(np.uint16) * 257),
                       _RED_BLUE, 0),
    'RGBA PNG': (lambda p: _rgba_file(p / 'rgba.png'),
                 np.where(np.arange(4)[None, :, None] < 2, _RED_BLUE, 255), 0),
    'CMYK JPEG': (lambda p: _saved(p / 'cmyk.jpg', _cmyk_red_blue(), quality=100),
                  _RED_BLUE, 8),  # JPEG is lossy: a few levels at the colour edge
    'CMYK TIFF': (lambda p: _saved(p / 'cmyk.tif', _cmyk_red_blue()), _RED_BLUE, 0),
}


@pytest.mark.parametrize('case', IMAGE_FILE_CASES)
def test_image_files_are_converted_to_rgb(case, tmp_path):
  make, expected, tolerance = IMAGE_FILE_CASES[case]
  path = make(tmp_path)
  image = data.load_image(str(path), None)
  assert image.dtype == np.uint8 and image.shape == (4, 4, 3)
  np.testing.assert_allclose(image.astype(int), expected.astype(int), atol=tolerance)
  # And through --images' reader, resized like any other file.
  assert data.load_images(str(path), 16).images.shape == (1, 16, 16, 3)


def test_image_file_of_an_unreadable_kind_is_one_line(tmp_path):
  from PIL import Image
  floats = np.full((4, 4), 7.5, np.float32)  # a float TIFF outside [0, 1]
  path = _saved(tmp_path / 'f.tif', Image.fromarray(floats, 'F'))
  _raises_one_line(jaxviz.InputError, 'float', data.load_image, str(path), None)
  in_range = _saved(tmp_path / 'f01.tif', Image.fromarray(np.full((4, 4), 0.5, np.float32)))
  assert (data.load_image(str(in_range), None) == 128).all()


def _images_npz(tmp_path, images, name='images.npz'):
  path = tmp_path / name
  np.savez(path, images=images)
  return str(path)


@pytest.mark.parametrize('value', [np.nan, np.inf, -np.inf])
def test_npz_images_holding_nan_or_inf_are_refused(value, tmp_path):
  images = np.full((3, 8, 8, 3), 0.5, np.float32)
  images[1, 2, 3, 0] = value
  images[2, 0, 0, 2] = value
  path = _images_npz(tmp_path, images)
  _raises_one_line(jaxviz.InputError, r'image\(s\) \[1, 2\] hold NaN or inf',
                   data.load_images, path)


@pytest.mark.parametrize('scale, match', [
    (255.0, r'image\(s\) \[0, 1\] .*outside \[0, 1\]'),  # 0-255 floats: not guessed
    (-1.0, r'image\(s\) \[0, 1\] .*outside \[0, 1\]'),
])
def test_npz_float_images_out_of_range_name_the_images(scale, match, tmp_path):
  images = np.full((2, 8, 8, 3), 0.5, np.float32) * scale
  path = _images_npz(tmp_path, images)
  _raises_one_line(jaxviz.InputError, match, data.load_images, path)


def test_npz_with_no_images_is_one_line(tmp_path):
  path = _images_npz(tmp_path, np.zeros((0, 8, 8, 3), np.uint8))
  _raises_one_line(jaxviz.InputError, 'no images', data.load_images, path)
  path = _images_npz(tmp_path, np.zeros((0, 8, 8, 3), np.float32), 'f.npz')
  _raises_one_line(jaxviz.InputError, 'no images', data.load_images, path)


# --- 7. Metrics, the evaluation, figures: NaN, empty batches, shapes, ranges ----------


def _linear_model(h=8, w=8, classes=4):
  weights = np.random.default_rng(0).standard_normal((h * w * 3, classes)).astype(np.float32)
  return (lambda params, x: x.reshape(x.shape[0], -1) @ params['w']), {'w': weights}


def _maps(n=2, h=8, w=8):
  return np.random.default_rng(1).random((n, h, w)).astype(np.float32)


def _nan_maps():
  maps = _maps()
  maps[1, 2, 3] = np.nan
  return maps


METRIC_CASES = {
    'deletion_insertion steps=nan': (
        lambda m: m.deletion_insertion(*_linear_model(), np.zeros((2, 8, 8, 3), np.float32),
                                       _maps(), [0, 1], steps=float('nan')), 'steps'),
    'deletion_insertion chunk_size=nan': (
        lambda m: m.deletion_insertion(*_linear_model(), np.zeros((2, 8, 8, 3), np.float32),
                                       _maps(), [0, 1], chunk_size=float('nan')), 'chunk_size'),
    'deletion_insertion baseline holding NaN': (
        lambda m: m.deletion_insertion(*_linear_model(), np.zeros((2, 8, 8, 3), np.float32),
                                       _maps(), [0, 1], steps=4, deletion_baseline=np.full(
                                           (2, 8, 8, 3), np.nan, np.float32)),
        'deletion_baseline.*NaN or inf'),
    'pointing_game tolerance=nan': (
        lambda m: m.pointing_game(_maps(), np.ones((2, 8, 8), bool), float('nan')),
        'tolerance'),
    'saliency_ranks of NaN maps': (lambda m: m.saliency_ranks(_nan_maps()),
                                   r'image\(s\) \[1\] contain NaN or inf'),
    'saliency_ranks of an empty batch': (
        lambda m: m.saliency_ranks(np.zeros((0, 8, 8), np.float32)), 'empty'),
    'normalize_maps of NaN maps': (lambda m: m.normalize_maps(_nan_maps()),
                                   r'image\(s\) \[1\] contain NaN or inf'),
    'normalize_maps of one 2-D map': (lambda m: m.normalize_maps(_maps()[0]),
                                      r'expected \(N, H, W\)'),
    'average_ranks of a 2-D array': (lambda m: m.average_ranks(_maps()[0]),
                                     r'expected \(M,\)'),
    'average_ranks of NaN': (lambda m: m.average_ranks(np.array([1.0, np.nan], np.float32)),
                             'NaN or inf'),
    'cascading_randomization of NaN images': (
        lambda m: m.cascading_randomization(
            m.input_gradient_fn(_linear_model()[0]), _linear_model()[1],
            np.full((2, 8, 8, 3), np.nan, np.float32), [0, 1], jax.random.key(0)),
        r'image\(s\) \[0, 1\] contain NaN or inf'),
}


@pytest.mark.parametrize('case', METRIC_CASES)
def test_metrics_refuse_bad_input_in_one_line(case):
  call, match = METRIC_CASES[case]
  _raises_one_line(jaxviz.InputError, match, call, metrics)


@pytest.mark.parametrize('field, value', [
    ('saliency_images', 0), ('deletion_steps', 0), ('fooling_images', -1),
    ('fooling_learning_rate', float('nan')), ('fooling_learning_rate', 0.0),
    ('classviz_iterations', 0), ('classviz_classes', -1), ('sanity_images', 0),
    ('stability_noise', float('inf')), ('seed', -1),
])
def test_eval_config_refuses_out_of_range_values(field, value):
  _raises_one_line(jaxviz.InputError, field, evaluation.EvalConfig, **{field: value})


def test_figures_refuse_nan_and_empty_batches():
  from jaxviz import figures
  images = np.full((2, 8, 8, 3), 0.5, np.float32)
  maps = _nan_maps()
  _raises_one_line(jaxviz.InputError, r'maps of image\(s\) \[1\] contain NaN or inf',
                   figures.saliency_figure, images, maps, ['a', 'b'])
  images[0, 1, 1] = np.inf
  _raises_one_line(jaxviz.InputError, r'image\(s\) \[0\] contain NaN or inf',
                   figures.class_visualization_figure, images, ['a', 'b'])
  _raises_one_line(jaxviz.InputError, 'nothing to draw', figures.class_visualization_figure,
                   np.zeros((0, 8, 8, 3), np.float32), [])


# --- 8. The scripts: bad flags and output folders, one line before any model loads ------
#
# Each script's absl main runs in this process (fast: no interpreter, no imports), with
# its flags parsed as the script parses them (common.parse_flags, its app.run parser).
# Loading a model, training, importing torch and even enabling the compilation cache are
# replaced by stand-ins that fail the test: every check must come before them.

SCRIPTS = os.path.join(REPO, 'scripts')


class _TooLate(Exception):
  """What the stand-ins raise: the bad input got past the checks."""


def _too_late(what):
  def reached(*args, **kwargs):
    raise _TooLate(f'{what} was reached: the bad input was not caught before it')
  return reached


@pytest.fixture
def script(monkeypatch):
  """run(name, *args) -> the SystemExit code of scripts/NAME.py's main (None if it
  returned).

  absl's flags are global: flags that other modules defined (weights_convert's CLI,
  above) are set aside while the script's are defined, and put back afterwards; the
  script's flags are then removed, so each run imports its script afresh.
  """
  from absl import flags
  from absl.testing import flagsaver
  monkeypatch.syspath_prepend(SCRIPTS)
  common = importlib.import_module('common')
  for owner, attr in ((common, 'enable_compilation_cache'), (common, 'resolve_model'),
                      (jaxviz, 'load_model'), (training, 'train')):
    monkeypatch.setattr(owner, attr, _too_late(f'{owner.__name__}.{attr}'))
  monkeypatch.setitem(sys.modules, 'torch', None)  # `import torch` raises ImportError
  fv = flags.FLAGS

  def run(name, *args):
    was_parsed = fv.is_parsed()
    with flagsaver.flagsaver():
      others = {n: fv[n] for n in list(fv)
                if not (fv.find_module_defining_flag(n) or '').startswith('absl')}
      for n in others:
        delattr(fv, n)
      before = set(fv)
      sys.modules.pop(name, None)
      try:
        module = importlib.import_module(name)
        try:
          module.main(common.parse_flags([name, *args]))
          code = None
        except SystemExit as e:
          code = e.code
      finally:
        for n in set(fv) - before:
          delattr(fv, n)
        sys.modules.pop(name, None)
        for n, flag in others.items():
          fv[n] = flag
    if not was_parsed:
      fv.unparse_flags()
    return code

  return run


def _out_args(name: str, out) -> list[str]:
  """Every run writes (if it ever did) under `out`: its folder, or its one file."""
  if name == 'benchmark':
    return [f'--output_json={out / "benchmark.json"}']
  if name == 'train_shapes':
    return [f'--output={out / "shapes.npz"}']
  return [f'--output_dir={out}']


# name: (script, flags, what the error line says). {file} is an existing file, {folder} an
# existing empty folder, {nan_npz} an .npz of float images with a NaN pixel in image 1
# (and the masks and labels evaluate.py needs).
SCRIPT_CASES = {
    # NaN and inf: float flags, NaN pixels, and NaN given to an integer flag.
    'adversarial --learning_rate=nan': (
        'adversarial', ['--learning_rate=nan'],
        '--learning_rate must be a positive finite number, got nan'),
    'adversarial --learning_rate=inf': (
        'adversarial', ['--learning_rate=inf'], '--learning_rate must be a positive finite'),
    'class_visualization --learning_rate=nan': (
        'class_visualization', ['--learning_rate=nan'],
        '--learning_rate must be a positive finite number, got nan'),
    'class_visualization --l2_reg=nan': (
        'class_visualization', ['--l2_reg=nan'], '--l2_reg must be a non-negative finite'),
    'class_visualization --blur_sigma=inf': (
        'class_visualization', ['--blur_sigma=inf'], '--blur_sigma must be a positive finite'),
    'train_shapes --input_noise=nan': (
        'train_shapes', ['--input_noise=nan'], '--input_noise must be a non-negative finite'),
    'benchmark --fooling_lr=nan': (
        'benchmark', ['--fooling_lr=nan'], '--fooling_lr must be a positive finite'),
    'saliency NaN pixel in --images': (
        'saliency', ['--images={nan_npz}'], r'image(s) [1] hold NaN or inf'),
    'class_visualization NaN pixel in --init': (
        'class_visualization', ['--init={nan_npz}'], r'image(s) [1] hold NaN or inf'),
    'evaluate NaN pixel in --data': (
        'evaluate', ['--data={nan_npz}'], r'image(s) [1] hold NaN or inf'),
    'demo --top=nan': ('demo', ['--top=nan'], '--top=nan'),
    'make_figures --iterations_divisor=nan': (
        'make_figures', ['--iterations_divisor=nan'], '--iterations_divisor=nan'),
    'evaluate --deletion_steps=nan': ('evaluate', ['--deletion_steps=nan'],
                                      '--deletion_steps=nan'),
    # Empty arguments.
    'saliency --labels=': ('saliency', ['--labels='], '--labels is empty'),
    'adversarial --target=': ('adversarial', ['--target='], '--target is empty'),
    'class_visualization --targets=': ('class_visualization', ['--targets='],
                                       '--targets is empty'),
    'class_visualization --targets=gorilla,,tabby': (
        'class_visualization', ['--targets=gorilla,,tabby'], '--targets has an empty item'),
    'demo --classes=': ('demo', ['--classes='], '--classes is empty'),
    'make_figures --models=': ('make_figures', ['--models='], '--models is empty'),
    'evaluate --data=': ('evaluate', ['--data='], '--data is empty'),
    'train_shapes --output=': ('train_shapes', ['--output='], '--output is empty'),
    'benchmark --batch_sizes=': ('benchmark', ['--batch_sizes='], '--batch_sizes is empty'),
    'saliency --output_dir=': ('saliency', ['--output_dir='], '--output_dir is empty'),
    # Out of range, unknown or missing.
    'adversarial --learning_rate=0': ('adversarial', ['--learning_rate=0'],
                                      '--learning_rate must be a positive finite number'),
    'adversarial --learning_rate=-1': ('adversarial', ['--learning_rate=-1'],
                                       '--learning_rate must be a positive finite number'),
    'adversarial --max_iterations=-1': ('adversarial', ['--max_iterations=-1'],
                                        '--max_iterations=-1'),
    'adversarial missing --images file': ('adversarial', ['--images={folder}/absent.png'],
                                          'image not found'),
    'class_visualization --snapshot_every=50 with 10 steps': (
        'class_visualization', ['--num_iterations=10', '--snapshot_every=50'],
        '--snapshot_every=50 is more than --num_iterations=10'),
    'class_visualization --l2_reg=-1': ('class_visualization', ['--l2_reg=-1'],
                                        '--l2_reg must be a non-negative finite number'),
    'class_visualization --blur_sigma=0': ('class_visualization', ['--blur_sigma=0'],
                                           '--blur_sigma must be a positive finite number'),
    'saliency --image_size=8': ('saliency', ['--image_size=8'], '--image_size=8'),
    'saliency unknown flag': ('saliency', ['--objectiv=score'], 'objectiv'),
    'demo --top=0': ('demo', ['--top=0'], '--top=0'),
    'make_figures --models=resnet50': ('make_figures', ['--models=resnet50'], 'resnet50'),
    'evaluate --saliency_images=0': ('evaluate', ['--saliency_images=0'],
                                     '--saliency_images=0'),
    'evaluate missing --data file': ('evaluate', ['--data={folder}/absent.npz'],
                                     'an existing .npz'),
    'train_shapes --input_noise=-0.1': ('train_shapes', ['--input_noise=-0.1'],
                                        '--input_noise=-0.1'),
    'benchmark --repeats=0': ('benchmark', ['--repeats=0'], '--repeats=0'),
    'benchmark --batch_sizes=4,0': ('benchmark', ['--batch_sizes=4,0'], '--batch_sizes'),
    'benchmark --models=resnet9': ('benchmark', ['--models=resnet9'], 'resnet9'),
    # Output folders and files that cannot be written.
    'saliency --output_dir is a file': ('saliency', ['--output_dir={file}'],
                                        'is a file, not a folder'),
    'adversarial --output_dir under a file': ('adversarial', ['--output_dir={file}/sub'],
                                              'is a file, not a folder'),
    'class_visualization --output_dir under a file': (
        'class_visualization', ['--output_dir={file}/sub'], 'is a file, not a folder'),
    'demo --output_dir is a file': ('demo', ['--output_dir={file}'], 'is a file, not a folder'),
    'make_figures --output_dir under a file': ('make_figures', ['--output_dir={file}/sub'],
                                               'is a file, not a folder'),
    'evaluate --output_dir is a file': ('evaluate', ['--output_dir={file}'],
                                        'is a file, not a folder'),
    'evaluate --output_json is a folder': ('evaluate', ['--output_json={folder}'],
                                           'is a folder, not a file'),
    'train_shapes --output under a file': ('train_shapes', ['--output={file}/w.npz'],
                                           'is a file, not a folder'),
    'benchmark --output_json under a file': ('benchmark', ['--output_json={file}/b.json'],
                                             'is a file, not a folder'),
}


@pytest.fixture
def script_inputs(tmp_path):
  a_file = tmp_path / 'a_file.txt'
  a_file.write_text('not a folder\n')
  folder = tmp_path / 'a_folder'
  folder.mkdir()
  images = np.full((2, 16, 16, 3), 0.5, np.float32)
  images[1, 3, 4, 1] = np.nan
  masks = np.zeros((2, 16, 16), bool)
  masks[:, 4:8, 4:8] = True
  np.savez(tmp_path / 'nan.npz', images=images, labels=np.array(['0', '1']), masks=masks)
  return {'file': str(a_file), 'folder': str(folder), 'nan_npz': str(tmp_path / 'nan.npz')}


@pytest.mark.parametrize('case', SCRIPT_CASES)
def test_script_bad_input_is_one_line_before_any_model(case, script, script_inputs, tmp_path,
                                                       capsys):
  name, args, message = SCRIPT_CASES[case]
  out = tmp_path / 'out'
  code = script(name, *_out_args(name, out), *[a.format(**script_inputs) for a in args])
  # sys.exit(str): Python prints the string on stderr and exits with status 1.
  assert isinstance(code, str), f'exit code {code!r}, not an error line'
  assert code.startswith('error: ') and '\n' not in code, code
  assert message in code, code
  assert 'Traceback' not in capsys.readouterr().err
  # Nothing written: no output folder, the existing file and folder untouched.
  assert not out.exists() or not os.listdir(out)
  assert open(script_inputs['file']).read() == 'not a folder\n'
  assert not os.listdir(script_inputs['folder'])


def test_script_output_dir_that_cannot_be_written(script, tmp_path, monkeypatch):
  """An existing folder without write permission: found by writing a probe file, as
  permissions mean nothing to root (who runs these tests in CI)."""
  folder = tmp_path / 'read_only'
  folder.mkdir()
  if os.geteuid() != 0:
    folder.chmod(0o500)
  else:  # root writes anywhere: make the probe fail as a read-only folder would
    import tempfile

    def refuse(*args, dir=None, **kwargs):
      if dir is not None and os.path.abspath(dir).startswith(str(folder)):
        raise PermissionError(13, 'Permission denied', dir)
      return real(*args, dir=dir, **kwargs)

    real = tempfile.mkstemp
    monkeypatch.setattr(tempfile, 'mkstemp', refuse)
  try:
    for target in (folder, folder / 'new'):
      code = script('saliency', f'--output_dir={target}')
      assert isinstance(code, str) and code.startswith('error: ') and '\n' not in code, code
      assert 'not writable' in code and 'Permission denied' in code, code
    assert not os.listdir(folder)
  finally:
    folder.chmod(0o700)


def test_parse_flags_turns_absl_errors_into_one_line(script):
  # Through app.run's parser, not main: the flag never reaches the script.
  code = script('class_visualization', '--num_iterations=0')
  assert isinstance(code, str) and code.startswith('error: ') and '\n' not in code, code
  assert '--num_iterations=0' in code
  code = script('adversarial', '--learning_rate=abc')
  assert isinstance(code, str) and code.startswith('error: ') and '\n' not in code, code
