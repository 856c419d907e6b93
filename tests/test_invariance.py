"""The invariance study (jaxviz.invariance; Zeiler & Fergus 2014, Fig. 5): the warps
against exact pixel permutations (np.rot90, flips, shifts) and a numpy bilinear sampler
written from the affine formula, the identity exactly, vmapped against per-value calls,
compilation, bad input, the trained shapes model, the figure and the script end to end."""

import concurrent.futures
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import jaxviz
from conftest import XLA_CACHE, counting_hooks
from jaxviz import figures, invariance
from jaxviz.errors import InputError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IDENTITY = {'rotate': 0.0, 'translate': 0.0, 'scale': 1.0}


@pytest.fixture(scope='module')
def shapes_random():
  return jaxviz.load_model('shapes', 'random')


@pytest.fixture(scope='module')
def image(shapes_random):
  return shapes_random.preprocess(jaxviz.shapes.generate(1, seed=5).images)[0]


def _x64(fn, *args, **kwargs):
  with jax.enable_x64(True):
    return jax.tree.map(np.asarray, fn(*args, **kwargs))


def _bilinear(image, src_r, src_c, fill):
  """Bilinear sampling at (src_r, src_c), `fill` outside: the four neighbours weighted by
  the products of the fractional distances (numpy, from the definition)."""
  h, w = image.shape[:2]
  r0, c0 = np.floor(src_r), np.floor(src_c)
  fr, fc = src_r - r0, src_c - c0
  out = np.zeros(src_r.shape + image.shape[2:])
  for dr, wr in ((0, 1 - fr), (1, fr)):
    for dc, wc in ((0, 1 - fc), (1, fc)):
      rr, cc = (r0 + dr).astype(int), (c0 + dc).astype(int)
      inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
      v = np.where(inside[..., None], image[rr.clip(0, h - 1), cc.clip(0, w - 1)], fill)
      out += (wr * wc)[..., None] * v
  return out


def _reference(image, transform, value, fill):
  """The transformed image from the geometry, in a y-up frame centred on the image: a
  rotation by +theta takes the content counter-clockwise, so output point q shows the
  source point R(-theta) q; a shift moves content down (+row); a scale s shows q / s."""
  h, w = image.shape[:2]
  cy, cx = (h - 1) / 2, (w - 1) / 2
  rows, cols = np.meshgrid(np.arange(h, dtype=float), np.arange(w, dtype=float),
                           indexing='ij')
  x, y = cols - cx, cy - rows
  if transform == 'rotate':
    t = np.deg2rad(value)
    xs, ys = np.cos(t) * x + np.sin(t) * y, -np.sin(t) * x + np.cos(t) * y
  elif transform == 'translate':
    down, right = (value, 0.0) if np.ndim(value) == 0 else value
    xs, ys = x - right, y + down
  else:
    xs, ys = x / value, y / value
  return _bilinear(np.asarray(image, np.float64), cy - ys, cx + xs, fill)


@pytest.mark.parametrize('transform', invariance.TRANSFORMS)
def test_identity_is_exact(shapes_random, image, transform):
  model = shapes_random
  values = {'rotate': [-40, 0, 360, 90], 'translate': [-3, 0, 5],
            'scale': [0.5, 1, 1.7]}[transform]
  s = invariance.invariance_study(model, model.params, image, 2, transform=transform,
                                  values=values)
  i = values.index(IDENTITY[transform])
  np.testing.assert_array_equal(np.asarray(s.images[i]), np.asarray(image))
  assert s.probability[i] == s.original_probability  # exact: the same image, one batch
  assert s.predicted[i] == s.original_predicted
  for layer in s.distances:
    assert s.distances[layer][i] == 0 and s.relative[layer][i] == 0
    moved = [k for k, v in enumerate(values) if v != IDENTITY[transform] and v != 360]
    assert (np.asarray(s.distances[layer])[moved] > 0).all()  # a real transform moves them
  if transform == 'rotate':  # 360 degrees: cos and sin exact, the identity too
    np.testing.assert_array_equal(np.asarray(s.images[2]), np.asarray(image))
  # Against a separate forward pass of the image alone: XLA:CPU's convolution kernels
  # may depend on the batch size, float32 rounding (measured: equal for this model,
  # 1.6e-7 relative for SqueezeNet); a wrong label or softmax is O(1) off.
  alone = jax.nn.softmax(model.apply(model.params, image[None]))[0, 2]
  assert abs(float(s.original_probability) - float(alone)) <= 1e-6 * float(alone)


def test_identity_warp_is_exact_float64():
  img = np.random.default_rng(0).normal(size=(7, 12, 3))
  for transform in invariance.TRANSFORMS:
    got = _x64(invariance.transform_images, img, transform, [IDENTITY[transform]], 0.25)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got[0], img)


def test_rotation_by_right_angles_is_np_rot90():
  rng = np.random.default_rng(1)
  square = rng.normal(size=(9, 9, 3)).astype(np.float32)
  got = np.asarray(invariance.transform_images(square, 'rotate', [90, 180, 270, -90, 450]))
  for k, g in zip((1, 2, 3, -1, 1), got):
    np.testing.assert_array_equal(g, np.rot90(square, k))  # counter-clockwise, exact
  even = rng.normal(size=(8, 8, 3)).astype(np.float32)  # the centre between 4 pixels
  np.testing.assert_array_equal(
      np.asarray(invariance.transform_images(even, 'rotate', [90]))[0], np.rot90(even))
  # Not square: 180 degrees about the centre ((H - 1) / 2, (W - 1) / 2) is both flips.
  wide = rng.normal(size=(6, 11, 3)).astype(np.float32)
  np.testing.assert_array_equal(
      np.asarray(invariance.transform_images(wide, 'rotate', [180]))[0], wide[::-1, ::-1])


def test_whole_pixel_shift_is_a_shifted_copy_with_fill():
  rng = np.random.default_rng(2)
  img = rng.normal(size=(10, 12, 3)).astype(np.float32)
  fill = np.array([0.5, -1.0, 2.0], np.float32)
  got = np.asarray(invariance.transform_images(img, 'translate', [3, -2], fill))
  down = np.broadcast_to(fill, img.shape).copy()
  down[3:] = img[:-3]
  up = np.broadcast_to(fill, img.shape).copy()
  up[:-2] = img[2:]
  np.testing.assert_array_equal(got[0], down)
  np.testing.assert_array_equal(got[1], up)
  both = np.asarray(invariance.transform_images(img, 'translate', [[1, -4]], 0.0))[0]
  expected = np.zeros_like(img)
  expected[1:, :-4] = img[:-1, 4:]
  np.testing.assert_array_equal(both, expected)
  far = np.asarray(invariance.transform_images(img, 'translate', [10], fill))[0]
  np.testing.assert_array_equal(far, np.broadcast_to(fill, img.shape))  # all fill


@pytest.mark.parametrize('transform,value', [
    ('rotate', 30.0), ('rotate', -117.5), ('translate', 2.5), ('translate', (-1.25, 3.5)),
    ('scale', 1.6), ('scale', 0.55)])
def test_warp_equals_bilinear_reference_float64(transform, value):
  rng = np.random.default_rng(3)
  img = rng.normal(size=(13, 10, 3))
  fill = np.array([0.3, -0.7, 1.1])
  got = _x64(invariance.transform_images, img, transform,
             [value] if np.ndim(value) == 0 else [value], fill)[0]
  expected = _reference(img, transform, value, fill)
  # float64: the same bilinear weights, summed in another order, and the fill added as
  # fill * (1 - weight inside) rather than as sum of weights outside: ~1e-16 (measured
  # <= 9e-16); a wrong sign of the angle, a centre off by half a pixel or a shift the
  # other way is O(1) off.
  assert np.abs(got - expected).max() <= 1e-12


def test_scale_keeps_the_centre_and_magnifies():
  img = np.zeros((9, 9, 3), np.float32)
  img[4, 4] = 1.0  # the centre pixel
  img[4, 6] = 2.0  # two pixels right of it
  got = np.asarray(invariance.transform_images(img, 'scale', [1.0, 2.0]))
  np.testing.assert_array_equal(got[0], img)
  assert got[1][4, 4, 0] == 1.0  # the centre stays
  assert got[1][4, 8, 0] == 2.0  # 2 px from the centre lands 4 px from it


def test_batched_equals_per_value_calls(shapes_random, image):
  model = shapes_random
  values = [-45, 0, 10, 90, 200]
  batched = jax.tree.map(np.asarray, invariance.invariance_study(
      model, model.params, image, 4, values=values))
  single = [jax.tree.map(np.asarray, invariance.invariance_study(
      model, model.params, image, 4, values=[v])) for v in values]
  for i, s in enumerate(single):
    np.testing.assert_array_equal(s.images[0], batched.images[i])  # the warp: exact
    # float32, a batch of 6 against batches of 2: XLA:CPU's kernels may block the batch
    # differently (measured: equal for this model, <= 1.6e-7 relative for SqueezeNet);
    # a value paired with the wrong image is O(1) off.
    assert abs(s.probability[0] - batched.probability[i]) <= 1e-5 * batched.probability[i]
    assert s.predicted[0] == batched.predicted[i]
    for layer in s.distances:
      assert abs(s.distances[layer][0] - batched.distances[layer][i]) <= (
          1e-5 * max(1.0, batched.distances[layer][i]))


def test_compiles_once_per_shape(shapes_random, image):
  model = shapes_random
  counting, traces = counting_hooks(model)
  invariance.invariance_study(counting, model.params, image, 1, values=[0, 10, 20])
  invariance.invariance_study(counting, model.params, -image, 3, values=[5, 50, 500])
  assert traces == [(4, 64, 64, 3)]  # one call: the image and its 3 copies
  invariance.invariance_study(counting, model.params, image, 1, values=[0, 10])
  assert traces == [(4, 64, 64, 3), (3, 64, 64, 3)]  # a new number of values: once more


def test_defaults(shapes_random, image):
  assert invariance.default_layers(shapes_random) == ('features.0_activation', 'features.8')
  for transform in invariance.TRANSFORMS:
    values = invariance.default_values(transform, 64)
    assert IDENTITY[transform] in values
  assert len(invariance.default_values('rotate', 64)) == 25
  np.testing.assert_array_equal(invariance.default_values('translate', 64),
                                np.arange(-16, 17, 2))
  s = invariance.invariance_study(shapes_random, shapes_random.params, image)  # label: predicted
  assert s.label == int(s.original_predicted) and s.probability.shape == (25,)


def test_bad_input(shapes_random, image):
  model, p = shapes_random, shapes_random.params
  study = lambda **kw: invariance.invariance_study(model, p, kw.pop('image', image),
                                                   kw.pop('label', 0), **kw)
  cases = [
      (lambda: study(transform='flip'), 'transform must be one of'),
      (lambda: study(values=[[1, 2]]), r'expected \(T,\)'),
      (lambda: study(transform='translate', values=[[1, 2, 3]]), r'or \(T, 2\)'),
      (lambda: study(values=[]), 'empty'),
      (lambda: study(values=[0, np.nan]), 'finite'),
      (lambda: study(values=['a']), 'numbers'),
      (lambda: study(transform='scale', values=[1, 0]), 'positive'),
      (lambda: study(fill=[0, 0]), 'fill'),
      (lambda: study(fill=np.inf), 'fill'),
      (lambda: study(layers=('features.99',)), 'unknown layer'),
      (lambda: study(layers=()), 'layers is empty'),
      (lambda: study(label=10), 'out of range'),
      (lambda: study(label='rhombus'), 'unknown class'),
      (lambda: study(image=image[None]), 'expected one'),
      (lambda: study(image=np.zeros((64, 64, 3), np.uint8)), 'normalised floats'),
      (lambda: invariance.invariance_study(model.apply, p, image, 0), 'jaxviz.load_model'),
      (lambda: invariance.transform_images(image, 'rotate', [[0]]), 'expected'),
  ]
  for call, match in cases:
    with pytest.raises(InputError, match=match) as info:
      call()
    assert '\n' not in str(info.value)


def test_trained_shapes_model(shapes_cache):
  """12 held-out images, every default value of the three transforms. What must hold is
  asserted: at the identity the distances are exactly 0 and the probability the
  untransformed image's, and the model classifies the untransformed images well. The
  trends are reported (-s prints them), not asserted: no law makes them monotone.
  Measured on the seed-0 model (accuracy 12/12), mean p(true class): rotation 0.94 at 0
  degrees, 0.80-0.98 at every angle, highest at multiples of 90 (exact pixel
  permutations, no interpolation blur); translation 0.94 at 0, 0.68 at 16 px up, 0.79
  at 16 px down; scale 0.94 at 1, 0.10 at 1/2 and 0.14 at 2 (size matters to it)."""
  model = jaxviz.load_model('shapes', train_if_missing=False)
  data = jaxviz.shapes.generate(12, seed=1000)  # never trained on
  x = model.preprocess(data.images)
  means = {}
  for transform in invariance.TRANSFORMS:
    studies = [invariance.invariance_study(model, model.params, x[i], int(data.labels[i]),
                                           transform=transform) for i in range(len(x))]
    values = studies[0].values
    i = int(np.flatnonzero(values == IDENTITY[transform])[0])
    prob = np.stack([np.asarray(s.probability) for s in studies])
    original = np.array([float(s.original_probability) for s in studies])
    np.testing.assert_array_equal(prob[:, i], original)
    for s in studies:
      assert all(float(d[i]) == 0 for d in s.distances.values())
    means[transform] = dict(zip(values.round(3).tolist(), prob.mean(axis=0).round(3).tolist()))
  correct = np.mean([int(np.argmax(model(model.params, x[k:k + 1]))) == data.labels[k]
                     for k in range(len(x))])
  assert correct >= 0.75
  print('accuracy', correct, 'mean p(true class) by value:', json.dumps(means))


def test_invariance_figure(tmp_path):
  rng = np.random.default_rng(0)
  results = {t: {'values': np.arange(5.0) + (t == 'scale'),
                 'probability': rng.random((2, 5)),
                 'distances': {'a': rng.random((2, 5)), 'b': rng.random((2, 5))},
                 'samples': rng.random((3, 16, 16, 3)), 'sample_values': [1, 2, 3]}
             for t in invariance.TRANSFORMS}
  fig = figures.invariance_figure(results, ['x', 'y'], ['a', 'b'], 'title')
  assert len(fig.axes) == 4 * 3
  assert [fig.axes[k].get_title() for k in range(3)] == list(invariance.TRANSFORMS)
  figures.save(fig, str(tmp_path / 'inv.png'))
  results['rotate']['probability'] = rng.random((3, 5))
  with pytest.raises(InputError, match=r'probability has shape \(3, 5\), expected \(2, 5\)'):
    figures.invariance_figure(results, ['x', 'y'], ['a', 'b'])
  with pytest.raises(InputError, match='results is empty'):
    figures.invariance_figure({}, ['x'], ['a'])


@pytest.fixture(scope='module')
def script_runs(tmp_path_factory):
  root = tmp_path_factory.mktemp('invariance_script')
  env = dict(os.environ, JAX_PLATFORMS='cpu', JAXVIZ_CACHE=str(root / 'jaxviz'), **XLA_CACHE)
  env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' --xla_backend_optimization_level=0').strip()
  common = ['--model=shapes', '--weights=random']
  runs = {
      'ok': (*common, '--num_images=2', '--angles=0,90,200', '--shifts=-4,0,6',
             '--scales=0.5,1,2', '--fill=black', '--samples=2', f'--output_dir={root}/ok'),
      'bad_scale': (*common, '--scales=1,0', f'--output_dir={root}/bad'),
      'bad_transform': (*common, '--transforms=rotate,flip', f'--output_dir={root}/bad'),
  }
  run = lambda *args: subprocess.run(
      [sys.executable, os.path.join('scripts', 'invariance.py'), *args], cwd=REPO, env=env,
      capture_output=True, text=True, timeout=600)
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    futures = {name: pool.submit(run, *args) for name, args in runs.items()}
    return root, {name: f.result() for name, f in futures.items()}


@pytest.mark.slow
def test_invariance_script(script_runs):
  root, runs = script_runs
  r = runs['ok']
  assert r.returncode == 0, r.stderr
  out = root / 'ok'
  assert sorted(os.listdir(out)) == ['invariance.json', 'invariance.png', 'manifest.json']
  assert os.path.getsize(out / 'invariance.png') < 300_000
  with open(out / 'invariance.json') as f:
    doc = json.load(f)
  assert doc['layers'] == ['features.0_activation', 'features.8'] and doc['fill'] == 'black'
  assert list(doc['transforms']) == ['rotate', 'translate', 'scale']
  for transform, record in doc['transforms'].items():
    i = record['values'].index(IDENTITY[transform])
    assert len(record['images']) == 2
    for image in record['images'].values():
      assert image['probability'][i] == image['original_probability']  # exact, via JSON
      assert all(d[i] == 0 for d in image['distances'].values())
      assert len(image['predicted']) == len(record['values']) == 3
  for name, match in (('bad_scale', '--scales must be positive'),
                      ('bad_transform', "unknown transform(s) 'flip'")):
    bad = runs[name]
    assert bad.returncode == 1 and bad.stderr.strip().count('\n') == 0, bad.stderr
    assert match in bad.stderr
