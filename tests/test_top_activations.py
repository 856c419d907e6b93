"""The streamed top-N images per channel (jaxviz.top_activations) against a brute-force
pass, over devices, over processes, across an interruption, and its one-line errors.

Every comparison is exact (np.testing.assert_array_equal): the merge is a sort on
(value, image index), so any split of the images into batches, devices or processes
must give the same entries in the same order; and the activations themselves do not
depend on the batch they were computed in on XLA:CPU (checked below, by the brute force
that computes them in batches of another size than the stream's).
"""

import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxviz
from conftest import XLA_CACHE
from jaxviz import shapes, top_activations as ta

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYER, N = 'features.5', 9
FIELDS = ('values', 'indices', 'units', 'images_seen', 'nonfinite')


def _equal(a, b, what=''):
  for f in FIELDS:
    np.testing.assert_array_equal(np.asarray(getattr(a, f)), np.asarray(getattr(b, f)),
                                  err_msg=f'{what}: {f}')


@pytest.fixture(scope='module')
def model():
  return jaxviz.load_model('shapes', 'random')


@pytest.fixture(scope='module')
def images():
  """300 images: 200 generated shapes and copies of the first 100 (images 200-299), so
  that every channel has exact ties between different images, plus the ties at 0 of the
  random-init model's dead channels."""
  generated = shapes.generate(200, 3).images
  return np.concatenate([generated, generated[:100]])


@pytest.fixture(scope='module')
def activations(model, images):
  fn = jax.jit(lambda p, x: model.intermediates(p, model.preprocess(x), [LAYER])[1][LAYER])
  return np.concatenate([np.asarray(fn(model.params, images[i:i + 50]))
                         for i in range(0, len(images), 50)])


@pytest.fixture(scope='module')
def streamed(model, images):
  return ta.top_activations(model, model.params, images, LAYER, n=N, batch_size=64,
                            progress=False)


@pytest.fixture(scope='module')
def xla_cache():
  """The test run's XLA compilation cache (conftest.XLA_CACHE) for every subprocess of
  this file: the model's init and the shapes generator compile once, not once per
  process."""
  return XLA_CACHE['JAX_COMPILATION_CACHE_DIR']


def _env(cache: str, fast_compile: bool = False):
  env = dict(os.environ, JAX_PLATFORMS='cpu', **XLA_CACHE)
  env['JAX_COMPILATION_CACHE_DIR'] = cache
  env.update(JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')
  env.pop('XLA_FLAGS', None)
  if fast_compile:  # runs compared only with each other: compile time is all they take
    env['XLA_FLAGS'] = '--xla_backend_optimization_level=0'
  return env


# ----------------------------------------------------------------------------------------
# The merge itself


def test_update_equals_brute_force_with_ties():
  """Small integers make ties everywhere: between images, between units of one image,
  and at 0 and -0; NaN and inf units are never chosen but counted; padded lanes
  (negative indices) are ignored. Batches arrive out of index order."""
  rng = np.random.default_rng(0)
  acts = rng.integers(-3, 4, (70, 3, 4, 5)).astype(np.float32)
  acts[acts == 0] = rng.choice([0.0, -0.0], size=int((acts == 0).sum()))
  acts[5, 0, 0, 1] = np.nan
  acts[6, 2, 3, 2] = np.inf
  acts[7, :, :, 3] = np.nan  # a whole channel: its candidate is -inf
  state = ta.empty(5, 11)
  for start in (48, 0, 16, 32, 64):  # out of order; the last batch is short: padded
    idx = np.arange(start, min(start + 16, 70))
    pad = 16 - len(idx)
    batch = np.concatenate([acts[idx], np.full((pad, 3, 4, 5), 99.0, np.float32)])
    state = ta.update(state, batch, np.pad(idx, (0, pad), constant_values=-1).astype(np.int32))
  expected = ta.brute_force(acts, 11)
  _equal(jax.tree.map(np.asarray, state), expected, 'update')
  assert int(state.nonfinite) == 3 and int(state.images_seen) == 70
  assert np.all(np.diff(np.asarray(state.values), axis=1) <= 0)
  # The tie rule spelled out: equal values in increasing image index.
  v, i = np.asarray(state.values), np.asarray(state.indices)
  same = v[:, 1:] == v[:, :-1]
  assert same.any() and np.all(i[:, 1:][same] > i[:, :-1][same])
  # Merging per-part results (devices, processes) is the same as one pass.
  parts = [ta.update(ta.empty(5, 11), acts[s:s + 35], np.arange(s, s + 35, dtype=np.int32))
           for s in (35, 0)]
  _equal(jax.tree.map(np.asarray, ta.merge(*parts)), expected, 'merge')


def test_streamed_equals_brute_force(streamed, activations):
  """The model's top-N over 300 images in batches of 64 (the last padded) equals all 300
  images' activations sorted per channel: same values, images, units, in the same order."""
  expected = ta.brute_force(activations, N)
  _equal(streamed, expected, 'streamed vs brute force')
  assert streamed.values.shape == (activations.shape[-1], N)
  # The duplicated images tie with their originals: the original (lower index) first.
  v, i = streamed.values, streamed.indices
  dup = (i[:, 1:] == i[:, :-1] + 200) & (v[:, 1:] == v[:, :-1])
  assert dup.any()
  assert (v[:, 0] == 0).any() and (v[:, 0] > 0).any()  # dead channels tie at 0 too


def test_one_program_per_batch_shape(model, images):
  """A second pass of the same shapes compiles nothing (the short last batch is padded
  to the same shape)."""
  run = ta._compiled(model, LAYER, None, None)
  ta.top_activations(model, model.params, images[:100], LAYER, n=3, batch_size=64,
                     progress=False)
  before = run._cache_size()
  ta.top_activations(model, model.params, images[:130], LAYER, n=3, batch_size=64,
                     progress=False)
  assert run._cache_size() == before  # (other tests' N compiled their own programs)


def test_shapes_source_streams_generate():
  """'shapes:N:SEED' reads, in any batches, exactly the images shapes.generate makes."""
  source = ta.open_source('shapes:70:5', 64)
  assert len(source) == 70
  streamed = np.concatenate([im for _, _, im in source.batches(24)])
  np.testing.assert_array_equal(streamed, shapes.generate(70, 5).images)
  np.testing.assert_array_equal(source.read([69, 3]), streamed[[69, 3]])


def test_folder_and_npz_sources(tmp_path, images):
  from PIL import Image
  folder = tmp_path / 'folder'
  folder.mkdir()
  for k in range(3):
    Image.fromarray(images[k]).save(folder / f'img{k}.png')
  source = ta.open_source(str(folder), 64)
  np.testing.assert_array_equal(source.read([0, 1, 2]), images[:3])  # PNG is lossless
  assert source.name(2) == 'img2.png'
  np.savez(tmp_path / 'x.npz', images=images[:5])
  np.testing.assert_array_equal(ta.open_source(str(tmp_path / 'x.npz'), 64).read([4]),
                                images[4:5])


# ----------------------------------------------------------------------------------------
# Resumption


def test_resumed_equals_uninterrupted(model, images, streamed, tmp_path):
  """An interrupted pass (an exception after batch 4; the checkpoint holds batches 0-2)
  resumed from its checkpoint equals the uninterrupted pass, and skips what was saved."""
  path = str(tmp_path / 'top.npz')

  class Stop(Exception):
    pass

  calls = []

  def stop_after_four(done, total):
    calls.append(done)
    if len(calls) == 4:
      raise Stop

  with pytest.raises(Stop):
    ta.top_activations(model, model.params, images, LAYER, n=N, batch_size=64,
                       checkpoint=path, checkpoint_every=3, progress=stop_after_four)
  state, next_batch, _ = ta.load_checkpoint(path)
  assert next_batch == 3 and int(state.images_seen) == 192
  resumed = []
  result = ta.top_activations(model, model.params, images, LAYER, n=N, batch_size=64,
                              checkpoint=path, checkpoint_every=3,
                              progress=lambda done, total: resumed.append((done, total)))
  _equal(result, streamed, 'resumed vs uninterrupted')
  assert resumed == [(256, 300), (300, 300)]  # batches 3 and 4 only
  # A finished checkpoint: a rerun streams nothing and returns the same result.
  again = []
  _equal(ta.top_activations(model, model.params, images, LAYER, n=N, batch_size=64,
                            checkpoint=path, progress=lambda d, t: again.append(d)),
         streamed, 'rerun of a finished pass')
  assert again == []


def test_checkpoint_of_another_run_or_corrupt(model, images, tmp_path):
  path = str(tmp_path / 'top.npz')
  ta.top_activations(model, model.params, images[:64], LAYER, n=3, batch_size=32,
                     checkpoint=path, progress=False)
  for kwargs, words in ((dict(layer='features.4'), 'layer'), (dict(n=4), 'n 3 there'),
                        (dict(batch_size=16), 'batch_size')):
    args = {**dict(layer=LAYER, n=3, batch_size=32), **kwargs}
    with pytest.raises(jaxviz.InputError) as e:
      ta.top_activations(model, model.params, images[:64], args.pop('layer'),
                         checkpoint=path, progress=False, **args)
    assert 'belongs to another run' in str(e.value) and words in str(e.value)
    assert '\n' not in str(e.value)
  other = jaxviz.load_model('shapes', 'random', seed=1)
  with pytest.raises(jaxviz.InputError, match='weights differ'):
    ta.top_activations(other, other.params, images[:64], LAYER, n=3, batch_size=32,
                       checkpoint=path, progress=False)
  with open(path, 'r+b') as f:  # truncated: the zip directory is gone
    f.truncate(os.path.getsize(path) // 2)
  with pytest.raises(jaxviz.InputError, match='is corrupt') as e:
    ta.top_activations(model, model.params, images[:64], LAYER, n=3, batch_size=32,
                       checkpoint=path, progress=False)
  assert '\n' not in str(e.value)
  (tmp_path / 'junk.npz').write_bytes(b'not a zip file')
  with pytest.raises(jaxviz.InputError, match='is corrupt'):
    ta.load_checkpoint(str(tmp_path / 'junk.npz'))


# ----------------------------------------------------------------------------------------
# Bad input


def test_bad_input_one_line_errors(model, images, tmp_path):
  run = lambda source=images[:20], layer=LAYER, **kw: ta.top_activations(
      model, model.params, source, layer, progress=False, **dict(dict(n=3), **kw))
  (tmp_path / 'empty').mkdir()
  cases = [
      (dict(layer='features.99'), 'unknown layer'),
      (dict(n=0), 'n must be a positive integer'),
      (dict(n=2.5), 'n must be a positive integer'),
      (dict(n=21), 'n=21 but'),
      (dict(batch_size=0), 'batch_size must be'),
      (dict(checkpoint_every=0), 'checkpoint_every must be'),
      (dict(source=images[:0]), 'empty'),
      (dict(source=str(tmp_path / 'missing')), 'image folder not found'),
      (dict(source=str(tmp_path / 'empty')), 'no image files'),
      (dict(source='shapes:0'), 'empty'),
      (dict(source='shapes:ten'), 'expected shapes:COUNT'),
      (dict(source='tfds:'), 'expected tfds:NAME'),
      (dict(source=images[:4, :32, :32]), '32-pixel images'),
      (dict(source=images[:4].astype(np.float32)), 'must be uint8'),
      (dict(cpu_kernels='fast'), 'cpu_kernels'),
  ]
  for kwargs, words in cases:
    with pytest.raises(jaxviz.InputError) as e:
      run(**kwargs)
    assert words in str(e.value) and '\n' not in str(e.value), (kwargs, str(e.value))


def test_nonfinite_activations_warn(model, images):
  """NaN weights make NaN activations: no unit is chosen, and the count is reported."""
  params = jax.tree.map(lambda p: p * jnp.nan, model.params)
  with pytest.warns(jaxviz.checkpoint.NonFiniteWarning, match='20 of 20 images'):
    result = ta.top_activations(model, params, images[:20], LAYER, n=3, progress=False)
  assert np.all(result.values == -np.inf) and int(result.nonfinite) == 20


# ----------------------------------------------------------------------------------------
# Devices and processes (subprocesses: the device count is fixed when jax starts)


def _sharded_child():
  """Run as a script with two forced CPU devices: the pass over both equals one device."""
  assert jax.local_device_count() == 2, jax.local_devices()
  model = jaxviz.load_model('shapes', 'random')
  images = shapes.generate(150, 3).images
  run = lambda devices, bs: ta.top_activations(model, model.params, images, LAYER, n=N,
                                               batch_size=bs, devices=devices,
                                               progress=False)
  one = run(jax.local_devices()[:1], 64)
  _equal(run(None, 64), one, 'two devices, batch 64')
  _equal(run(None, 37), one, 'two devices, batch 37 (odd: padded per device)')
  print('sharded == single device', flush=True)


@pytest.mark.slow  # one process compiling the pass for one and two devices: ~30 s
def test_sharded_over_two_devices_equals_single(xla_cache):
  env = _env(xla_cache, fast_compile=True)
  env['XLA_FLAGS'] += ' --xla_force_host_platform_device_count=2'
  proc = subprocess.run([sys.executable, os.path.abspath(__file__)], env=env, cwd=REPO,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
  assert 'sharded == single device' in proc.stdout


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.mark.slow  # two processes that each load the model and compile: ~40 s on two cores
def test_two_processes_equal_single_process(model, tmp_path, xla_cache):
  """jax.distributed with two CPU processes on localhost: each streams every other batch
  (checkpointing its own file), the gathered merge equals one process's pass, on both."""
  source = 'shapes:150:3'
  single = ta.top_activations(model, model.params, source, LAYER, n=N, batch_size=32,
                              progress=False)
  port, out = _free_port(), str(tmp_path / 'out.npz')
  ckpt = str(tmp_path / 'ckpt.npz')
  procs = [subprocess.Popen(
      [sys.executable, os.path.join(REPO, 'tests', '_distributed_worker.py'), str(port),
       str(i), '2', out, source, LAYER, str(N), '32', ckpt],
      env=_env(xla_cache), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True) for i in range(2)]
  logs = []
  try:
    for p in procs:
      logs.append(p.communicate(timeout=300)[0])
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for i, (p, log) in enumerate(zip(procs, logs)):
    assert p.returncode == 0, f'process {i}: {log[-3000:]}'
  for i in range(2):
    with np.load(str(tmp_path / f'out.process{i}.npz')) as got:
      _equal(ta.TopK(*(got[f] for f in FIELDS)), single, f'process {i} vs single')
      # 150 images in batches of 32: batches 0, 2, 4 (96 + 22 images) and 1, 3 (64).
      assert int(got['streamed']) == (86 if i == 0 else 64)
    state, _, fp = ta.load_checkpoint(str(tmp_path / f'ckpt.process{i}-of-2.npz'))
    assert fp['process_index'] == i and int(state.images_seen) == (86 if i == 0 else 64)


# ----------------------------------------------------------------------------------------
# The script: killed hard mid-way, resumed


def _script(cache, *args):
  return subprocess.run(
      [sys.executable, os.path.join('scripts', 'top_images.py'), '--model=shapes',
       '--weights=random', '--layer=features.5', '--source=shapes:200:3', '--n=4',
       '--batch_size=32', '--channels=0-2', *args],
      cwd=REPO, env=_env(cache, fast_compile=True), capture_output=True, text=True,
      timeout=600)


@pytest.mark.slow  # three script runs, each loading the model and compiling: ~60 s
def test_script_killed_and_resumed_equals_uninterrupted(tmp_path, xla_cache):
  whole = _script(xla_cache, f'--output_dir={tmp_path / "whole"}', '--noprojection')
  assert whole.returncode == 0, whole.stderr[-3000:]
  ckpt = str(tmp_path / 'ckpt.npz')
  killed = _script(xla_cache, f'--output_dir={tmp_path / "resumed"}', f'--checkpoint={ckpt}',
                   '--checkpoint_every=2', '--stop_after_batches=5', '--noprojection')
  assert killed.returncode == -9, (killed.returncode, killed.stderr[-3000:])
  assert not os.path.exists(tmp_path / 'resumed' / 'results.npz')
  state, next_batch, _ = ta.load_checkpoint(ckpt)
  assert next_batch == 4 and int(state.images_seen) == 128  # batch 4 ran but was not saved
  resumed = _script(xla_cache, f'--output_dir={tmp_path / "resumed"}', f'--checkpoint={ckpt}',
                    '--checkpoint_every=2')
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert 'resuming' in resumed.stderr
  with np.load(tmp_path / 'whole' / 'results.npz') as a, \
       np.load(tmp_path / 'resumed' / 'results.npz') as b:
    for key in ('values', 'indices', 'units', 'channels'):
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  for name in ('results.json', 'manifest.json', 'top_images.png'):
    assert os.path.isfile(tmp_path / 'resumed' / name), name
  bad = _script(xla_cache, f'--output_dir={tmp_path / "bad"}', '--channels=0-500')
  assert bad.returncode == 1 and bad.stderr.strip().count('\n') == 0, bad.stderr
  assert 'error:' in bad.stderr


if __name__ == '__main__':
  _sharded_child()
