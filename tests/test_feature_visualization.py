"""Neuron/channel maximisation and DeepDream: certified in float64 against the torch
references of tests/torch_features.py (the course's ascent and the DeepDream notebook),
and their behaviour in float32: the objective rises, a trained model's channel is driven
past what real images do, batching, compilation, the image parameterisations, bad input,
and the two scripts end to end."""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

torch = pytest.importorskip('torch')  # the float64 references; the [test] extra

import jaxviz  # noqa: E402
import torch_features as tf_  # noqa: E402
from jaxviz import data, shapes, validation  # noqa: E402
from jaxviz.errors import InputError  # noqa: E402
from jaxviz.methods import _param  # noqa: E402
from jaxviz.methods.deep_dream import deep_dream, octave_sizes  # noqa: E402
from jaxviz.methods.feature_visualization import channel_visualization  # noqa: E402
from torch_helpers import converted_weights, torch_model  # noqa: E402
from conftest import XLA_CACHE

NAME, SEED, SIZE = 'squeezenet1_1', 0, 64
LAYER = 'features.4'  # a Fire module: (15, 15, 128) at 64 px
# float64 agreement: both sides round each operation to ~1e-16 and differ only in the
# order of some sums (measured below ~1e-15 relative after the steps here). A wrong sign,
# a norm instead of its square, a missed roll or a step not normalised by mean |g| moves
# the images by many orders of magnitude more.
TOL64 = 1e-12
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))



@pytest.fixture(scope='module')
def model32(weights_dir):
  """The same random-init SqueezeNet in float32 (read from its file: loading skips the
  ~15 s of compiling random init)."""
  return jaxviz.load_model(NAME, converted_weights(NAME, SEED, weights_dir))


def _x64(fn, *args, **kwargs):
  with jax.enable_x64(True):
    return jax.tree.map(np.asarray, fn(*args, **kwargs))


def _offsets(key, steps, max_jitter):
  """The (oy, ox) that `_ascent.Jitter(max_jitter, key)` rolls by at steps 0..steps-1
  (drawn with x64 on, as the float64 runs draw them)."""
  def draw():
    out = []
    for t in range(steps):
      ox, oy = jax.random.randint(jax.random.fold_in(key, t), (2,), 0, max_jitter + 1)
      out.append((int(oy), int(ox)))
    return out
  with jax.enable_x64(True):
    return draw()


def _nchw(x):
  return torch.tensor(np.asarray(x).transpose(0, 3, 1, 2))


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.linalg.norm(a - b) / np.linalg.norm(b)


# ----------------------------------------------------------------------------------------
# float64 against torch


@pytest.mark.parametrize('objective,unit,max_jitter', [('mean', None, 3), ('unit', (4, 9), 0)])
def test_channel_visualization_equals_torch_float64(model64, objective, unit, max_jitter):
  """The course's ascent with jitter, clamp and the squared-norm penalty, 4 steps, two
  channels, from the noise init (both sides given the same image). Not from a constant
  image: that ties every max-pool window, and torch and XLA route a tied window's
  gradient to different (equally valid) inputs."""
  channels, steps, lr, l2 = [3, 70], 4, 2.0, 1e-3
  keys = jax.random.split(jax.random.key(5), len(channels))
  got = _x64(channel_visualization, model64, model64.params, LAYER, channels, keys,
             objective=objective, unit=unit, image_shape=(SIZE, SIZE, 3), init='noise',
             num_iterations=steps, learning_rate=lr, l2_reg=l2, max_jitter=max_jitter)
  low, high = model64.valid_range()
  for k, c in enumerate(channels):
    init_key, steps_key = jax.random.split(keys[k])
    with jax.enable_x64(True):  # the init the method draws
      start = np.asarray(_param.INIT_SD * jax.random.normal(init_key, (SIZE, SIZE, 3),
                                                            jnp.float64))
    offsets = _offsets(steps_key, steps, max_jitter) if max_jitter else [(0, 0)] * steps
    image, trace = tf_.neuron_maximisation(
        torch_model(NAME, SEED), LAYER, _nchw(start[None]), c, unit, lr=lr, l2=l2,
        steps=steps, offsets=offsets, low=low, high=high)
    expected = image.numpy().transpose(0, 2, 3, 1)[0]
    assert _rel(got.images[k], expected) <= TOL64
    assert _rel(got.objective_trace[k], trace) <= TOL64
    assert trace[-1] > trace[0]  # the reference itself climbs: the test can fail


def test_deep_dream_equals_torch_float64(model64):
  """Two octaves (46 px, 64 px) of three jittered, normalised steps each."""
  octaves, scale, steps, lr, jitter = 2, 1.4, 3, 0.03, 5
  pixels = data.sample_images(SIZE).images[:1]
  with jax.enable_x64(True):
    images = np.asarray(model64.preprocess(pixels, jnp.float64))
  key = jax.random.key(2)
  got = _x64(deep_dream, model64, model64.params, images, LAYER, key=key, octaves=octaves,
             octave_scale=scale, steps_per_octave=steps, learning_rate=lr, max_jitter=jitter)
  image_key = validation.split_keys(key, 1)[0]
  offsets = [_offsets(jax.random.fold_in(image_key, o), steps, jitter) for o in range(octaves)]
  low, high = model64.valid_range()
  image, values = tf_.deep_dream(torch_model(NAME, SEED), LAYER, _nchw(images),
                                 octaves=octaves, octave_scale=scale, steps=steps, lr=lr,
                                 offsets=offsets, low=low, high=high)
  assert _rel(got.images[0], image.numpy().transpose(0, 2, 3, 1)[0]) <= TOL64
  np.testing.assert_allclose(got.objective_before[0], values[:, 0], rtol=TOL64)
  np.testing.assert_allclose(got.objective_after[0], values[:, 1], rtol=TOL64)
  assert (values[:, 1] > values[:, 0]).all()


# ----------------------------------------------------------------------------------------
# behaviour, float32

# From lucid's noise: a random-init SqueezeNet has no biases, so from the zeros its
# activations and their gradients are all zero (test_zero_start_stays_at_zero); the
# zeros start is exercised on the trained shapes model (test_shapes_channels_...).
# No jitter here: the trace is then of one image, and a step's first-order change of f is
# lr ||g||^2 > 0 (jitter evaluates each step at another roll; the torch tests cover it).
SHEET = dict(image_shape=(SIZE, SIZE, 3), init='noise', num_iterations=10, learning_rate=10.0,
             l2_reg=1e-3)
N_SHEET = 4


@pytest.fixture(scope='module')
def counted(model32):
  """The model with its hooked forward counting traces (one per compilation)."""
  traces = []

  def hooked(params, x, hooks):
    traces.append(x.shape)
    return model32.hooked_apply(params, x, hooks)

  model = dataclasses.replace(model32, hooked_apply=hooked)
  model.layer_names  # noqa: B018  (its abstract evaluation, before counting starts)
  return model, traces


@pytest.fixture(scope='module')
def sheet(counted):
  """N_SHEET channels of LAYER in one call (the program the next tests share)."""
  model, _ = counted
  keys = jax.random.split(jax.random.key(0), N_SHEET)
  return keys, channel_visualization(model, model.params, LAYER, list(range(N_SHEET)), keys,
                                     **SHEET)


def test_channel_maximisation_raises_its_objective(sheet):
  _, got = sheet
  act = np.asarray(got.activation_trace)
  assert np.isfinite(np.asarray(got.images)).all()
  # Every channel alive at the start climbs (measured: 7e-6 -> 0.04, 1e-4 -> 0.03); one
  # whose ReLUs are all off at the start has a zero gradient and stays at exactly 0.
  alive = act[:, 0] > 0
  assert alive.sum() >= 2
  assert (act[alive, -1] > 10 * act[alive, 0]).all()
  assert (np.asarray(got.activation)[alive] > act[alive, -1]).all()
  assert (act[~alive] == 0).all()
  # The l2 penalty is the squared norm of the (normalised) image.
  penalty = act - np.asarray(got.objective_trace)
  assert (penalty > 0).all()


def test_batched_equals_single_calls_and_compiles_once(counted, sheet, model32):
  model, traces = counted
  keys, batch = sheet
  after_first = len(traces)
  assert after_first  # the sheet traced the model
  # Other channels, keys, step size and penalty: the same program.
  other = channel_visualization(model, model.params, LAYER, list(range(8, 8 + N_SHEET)),
                                jax.random.key(3), **dict(SHEET, learning_rate=0.5,
                                                          l2_reg=1e-2))
  assert len(traces) == after_first and other.images.shape == batch.images.shape
  # One channel alone, with its key: the same image. Each runs in its own scan on CPU
  # (chunk_size 1), so the computations are the same; allow float32 rounding of a
  # differently fused program (measured 0).
  single = channel_visualization(model32, model32.params, LAYER, [2], keys[2:3], **SHEET)
  np.testing.assert_allclose(single.images[0], batch.images[2], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(single.objective_trace[0], batch.objective_trace[2], rtol=1e-5)


def test_zero_start_stays_at_zero(model32):
  """The course's zeros start on a network without biases: every activation is 0, every
  ReLU gradient too, so the image never moves -- exactly zero, not NaN."""
  got = channel_visualization(model32, model32.params, LAYER, [0, 1], jax.random.key(0),
                              image_shape=(SIZE, SIZE, 3), num_iterations=2)
  assert (np.asarray(got.images) == 0).all() and (np.asarray(got.objective_trace) == 0).all()


def test_fourier_decorrelated_images_lie_in_the_pixel_box(model32):
  low, high = model32.valid_range()
  got = channel_visualization(
      model32, model32.params, LAYER, [1, 2, 3], jax.random.key(1),
      image_shape=(SIZE, SIZE, 3), parameterization='fourier', decorrelate=True,
      init='noise', num_iterations=6, optimizer=optax.adam(0.05), max_jitter=4)
  images = np.asarray(got.images)
  assert (images >= low - 1e-6).all() and (images <= high + 1e-6).all()  # float32 box
  act = np.asarray(got.activation_trace)
  alive = act[:, 0] > 0
  assert alive.sum() >= 2 and (act[alive, -1] > act[alive, 0]).all()
  # The returned image is the parameterisation of the returned variables.
  again = jax.vmap(lambda z: _param.to_image(z, 'fourier', True, jnp.asarray(low, jnp.float32),
                                             jnp.asarray(high, jnp.float32), (SIZE, SIZE, 3))
                   )(got.variables)
  np.testing.assert_allclose(again, images, atol=1e-6)


def _lucid_formula(z, h, w, decorrelate, low, high):
  """The documented formula in numpy (float64): lucid's fft_image and to_valid_rgb."""
  fy = np.fft.fftfreq(h)[:, None]
  fx = np.fft.fftfreq(w)[: w // 2 + 1]
  scale = np.sqrt(h * w) / np.maximum(np.sqrt(fx * fx + fy * fy), 1 / max(h, w))
  t = np.fft.irfft2(scale[..., None] * (z[0] + 1j * z[1]), s=(h, w), axes=(0, 1)) / 4
  if decorrelate:
    svd_sqrt = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
    t = t @ (svd_sqrt / np.linalg.norm(svd_sqrt, axis=0).max()).T
  return low + (high - low) / (1 + np.exp(-t))


@pytest.mark.parametrize('h,w', [(16, 16), (15, 20)])
def test_parameterisation_reproduces_its_formula(h, w):
  low, high = jaxviz.valid_range()
  z = _param.INIT_SD * np.random.default_rng(0).standard_normal(
      _param.param_shape('fourier', (h, w, 3)))
  for decorrelate in (False, True):
    got = _x64(lambda: _param.to_image(jnp.asarray(z), 'fourier', decorrelate,
                                       jnp.asarray(low), jnp.asarray(high), (h, w, 3)))
    np.testing.assert_allclose(got, _lucid_formula(z, h, w, decorrelate, low, high),
                               rtol=0, atol=1e-13)  # float64 FFTs of values ~1
  # The zero spectrum is mid-grey; decorrelated pixels mix colours by M.
  grey = _x64(lambda: _param.to_image(jnp.zeros((2, h, w // 2 + 1, 3)), 'fourier', True,
                                      jnp.asarray(low), jnp.asarray(high), (h, w, 3)))
  np.testing.assert_allclose(grey, np.broadcast_to((low + high) / 2, grey.shape), atol=1e-15)
  assert np.isclose(np.linalg.norm(_param.COLOR_NORMALIZED, axis=0).max(), 1)


def test_spectrum_jitter_is_the_pixel_roll():
  """Shifting the spectrum by the phase ramp rolls the image (shift theorem), and the
  gradient's way back is its inverse."""
  h, w = 12, 15
  low, high = jaxviz.valid_range()
  z = np.random.default_rng(1).standard_normal(_param.param_shape('fourier', (h, w, 3)))
  key = jax.random.key(4)
  image = lambda z: _param.to_image(z, 'fourier', True, jnp.asarray(low), jnp.asarray(high),
                                    (h, w, 3))

  def check():
    jitter = _param.SpectrumJitter(6, key, h, w)
    for t in range(3):
      shifted, state = jitter.shift(jnp.asarray(z), t)
      oy, ox = _offsets(key, t + 1, 6)[t]
      np.testing.assert_allclose(image(shifted), np.roll(image(jnp.asarray(z)), (oy, ox),
                                                         axis=(0, 1)), atol=1e-13)
      np.testing.assert_allclose(jitter.unshift(shifted, state), z, atol=1e-13)
  with jax.enable_x64(True):
    check()


def test_deep_dream_raises_its_objective_at_every_octave(model32):
  images = model32.preprocess(data.sample_images(SIZE).images[:2])
  # Without jitter, so that each octave's steps ascend one image (measured: 1.12 -> 3.84,
  # 1.53 -> 4.71, 1.85 -> 5.16 for the first image).
  got = deep_dream(model32, model32.params, images, 'features.7', octaves=3,
                   steps_per_octave=3, max_jitter=0)
  assert got.images.shape == images.shape and np.isfinite(np.asarray(got.images)).all()
  before, after = np.asarray(got.objective_before), np.asarray(got.objective_after)
  assert before.shape == (2, 3) and (after > before).all()
  assert (np.asarray(got.objective_final) > np.asarray(got.objective_original)).all()
  np.testing.assert_array_equal(got.objective_final, after[:, -1])
  low, high = model32.valid_range()
  assert (np.asarray(got.images) >= low - 1e-6).all()
  assert (np.asarray(got.images) <= high + 1e-6).all()
  assert octave_sizes(SIZE, SIZE, 3, 1.4) == ((33, 33), (46, 46), (64, 64))


@pytest.mark.parametrize('kwargs,match', [
    (dict(layer='features.99'), 'unknown layer'),
    (dict(channels=[0, 128]), r'channel\(s\) \[128\] out of range \[0, 128\)'),
    (dict(channels=[-1]), 'out of range'),
    (dict(objective='max'), 'objective must be one of'),
    (dict(objective='unit', unit=(15, 0)), 'outside the 15x15 map'),
    (dict(objective='unit'), 'needs unit'),
    (dict(unit=(1, 1)), "only for objective='unit'"),
    (dict(parameterization='fft'), 'parameterization must be one of'),
    (dict(parameterization='fourier', blur_every=5), 'blur_every'),
    (dict(init='black', decorrelate=True), "init='black'"),
    (dict(max_jitter=64), 'max_jitter 64 must be smaller'),
    (dict(num_iterations=0), 'num_iterations'),
    (dict(image_shape=(64, 64)), 'image_shape'),
])
def test_bad_input_is_one_line(model32, kwargs, match):
  args = dict(layer=LAYER, channels=[0], image_shape=(SIZE, SIZE, 3))
  args.update(kwargs)
  with pytest.raises(InputError, match=match) as info:
    channel_visualization(model32, model32.params, args.pop('layer'), args.pop('channels'),
                          jax.random.key(0), **args)
  assert '\n' not in str(info.value)


@pytest.mark.parametrize('kwargs,match', [
    (dict(layer='nope'), 'unknown layer'),
    (dict(octaves=8), 'smallest octave'),
    (dict(max_jitter=46), 'max_jitter 46'),
    (dict(octave_scale=1.0), 'octave_scale'),
])
def test_deep_dream_bad_input_is_one_line(model32, kwargs, match):
  args = dict(layer=LAYER, octaves=2)
  args.update(kwargs)
  images = np.zeros((1, SIZE, SIZE, 3), np.float32)
  with pytest.raises(InputError, match=match) as info:
    deep_dream(model32, model32.params, images, **args)
  assert '\n' not in str(info.value)


# ----------------------------------------------------------------------------------------
# the trained shapes model


def test_shapes_channels_beat_real_images(shapes_cache):
  """On the trained shapes model, 100 Adam steps from the zeros (mid-grey) drive the
  channels of features.5 that are alive at the start above the 99th percentile of their
  spatial mean over 256 generated shapes images. A channel whose ReLUs are all off at
  mid-grey has a zero gradient there and cannot start. The model differs a little from
  one machine to another (XLA:CPU compiles for the CPU it trains on), and so do the
  channels: on one, 7 of the first 16 alive, all ending 1.7x to 6x above the percentile;
  on another, 11 alive, 10 ending 2x to 8x above it and one, barely touched at mid-grey
  (0.8% of its percentile, as another that rose to 5x), stalled at that level. So: at
  least 90% of the live channels above the percentile, their median ratio above 1.5, and
  every channel finite and non-negative. Plain SGD at a fixed step overshoots into dead
  regions on this model (its gradients at mid-grey are ~1e-2 in norm)."""
  model = jaxviz.load_model('shapes')
  layer, channels = 'features.5', np.arange(16)
  real = shapes.generate(256, seed=1, size=model.image_size).images
  _, acts = jax.jit(lambda x: model.intermediates(model.params, x, [layer]))(
      model.preprocess(real))
  p99 = np.percentile(np.asarray(acts[layer]).mean(axis=(1, 2)), 99, axis=0)[channels]
  got = channel_visualization(model, model.params, layer, channels, jax.random.key(0),
                              num_iterations=100, optimizer=optax.adam(0.1), l2_reg=1e-3,
                              cpu_kernels=model.cpu_kernels)
  final = np.asarray(got.activation)
  alive = np.asarray(got.activation_trace)[:, 0] > 0
  assert alive.sum() >= 4 and (p99 > 0).all()  # the comparison means something
  assert np.isfinite(final).all() and (final >= 0).all()
  beat = final[alive] > p99[alive]
  assert beat.sum() >= np.ceil(0.9 * alive.sum()), (final, p99)
  assert np.median(final[alive] / p99[alive]) > 1.5, (final, p99)
  assert (final[~alive] == 0).all()


# ----------------------------------------------------------------------------------------
# the scripts


def _env(cache_dir):
  env = dict(os.environ, JAX_PLATFORMS='cpu', JAXVIZ_CACHE=os.path.join(cache_dir, 'jaxviz'),
             **XLA_CACHE)
  env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' --xla_backend_optimization_level=0').strip()
  return env


@pytest.mark.slow
def test_scripts_end_to_end(tmp_path):
  env = _env(str(tmp_path / 'xla'))
  runs = {
      'feature_visualization': ['--model=shapes', '--weights=random', '--layer=features.5',
                                '--channels=0-3,7', '--num_iterations=3', '--init=black',
                                '--max_jitter=2'],
      'deep_dream': ['--model=shapes', '--weights=random', '--layer=features.5',
                     '--octaves=2', '--steps_per_octave=2', '--max_jitter=2'],
  }
  procs = {name: subprocess.Popen(
      [sys.executable, os.path.join('scripts', f'{name}.py'), *args,
       f'--output_dir={tmp_path / name}'], cwd=REPO, env=env, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for name, args in runs.items()}
  for name, proc in procs.items():
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    manifest = json.load(open(tmp_path / name / 'manifest.json'))
    assert manifest['model'] == 'shapes'
  sheet = np.load(tmp_path / 'feature_visualization' / 'results.npz')
  assert sheet['images'].shape == (5, 64, 64, 3) and list(sheet['channels']) == [0, 1, 2, 3, 7]
  assert (tmp_path / 'feature_visualization' / 'feature_visualization.png').stat().st_size > 0
  dream = np.load(tmp_path / 'deep_dream' / 'results.npz')
  assert dream['images'].shape == dream['original'].shape
  assert (tmp_path / 'deep_dream' / 'deep_dream.png').stat().st_size > 0
  bad = subprocess.run([sys.executable, 'scripts/feature_visualization.py', '--model=shapes',
                        '--weights=random', '--layer=features.5', '--channels=0,500',
                        f'--output_dir={tmp_path / "bad"}'], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600)
  assert bad.returncode == 1 and bad.stderr.strip().count('\n') == 0, bad.stderr
  assert 'out of range' in bad.stderr
