"""The metrics: localisation, deletion / insertion, similarity (against scipy and
scikit-image), sanity-check randomisation, summaries and their figures. Small inputs:
the whole file runs in well under a minute on 2 CPU cores."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
import skimage.metrics

import jaxviz
from jaxviz import figures, metrics, models
from jaxviz.errors import InputError


@pytest.fixture(scope='module')
def squeezenet():
  """SqueezeNet 1.1's apply and params, filled with numpy noise: load_model's seeded init
  costs tens of seconds on a busy CPU, and these tests need the architecture, not
  torchvision's init."""
  apply, _, abstract = models.functionalize(models.build_abstract('squeezenet1_1'))
  rng = np.random.default_rng(0)
  params = jax.tree.map(
      lambda s: jnp.asarray(rng.standard_normal(s.shape) * 0.05, s.dtype), abstract)
  return apply, params


# ---------------------------------------------------------------------------------------
# Pointing game and mask mass.

def _peak_map(shape, peaks):
  """Maps of small noise (< 0.1) with value 1 at one (row, col) per image."""
  maps = np.random.default_rng(0).uniform(0, 0.1, shape).astype(np.float32)
  for i, (r, c) in enumerate(peaks):
    maps[i, r, c] = 1.0
  return maps


def test_pointing_game_hit_iff_peak_in_mask():
  masks = np.zeros((3, 16, 20), bool)
  masks[:, 4:8, 10:15] = True
  maps = _peak_map(masks.shape, [(5, 12), (4, 14), (8, 12)])  # in, corner, one row below
  hits = metrics.pointing_game(maps, masks)
  np.testing.assert_array_equal(hits, [True, True, False])
  # One pixel of tolerance reaches the row below; a 0/1 integer mask is accepted.
  np.testing.assert_array_equal(
      metrics.pointing_game(maps, masks.astype(np.uint8), tolerance=1), [True, True, True])


def test_pointing_game_tolerance_is_euclidean():
  masks = np.zeros((3, 24, 24), bool)
  masks[:, 10, 10] = True
  # Distances 3 (straight), sqrt(8) = 2.83 and sqrt(18) = 4.24 (diagonals): a square
  # (Chebyshev) window of radius 3 would wrongly count the last one.
  maps = _peak_map(masks.shape, [(10, 13), (12, 12), (13, 13)])
  np.testing.assert_array_equal(metrics.pointing_game(maps, masks, 2), [False, False, False])
  np.testing.assert_array_equal(metrics.pointing_game(maps, masks, 3), [True, True, False])
  np.testing.assert_array_equal(metrics.pointing_game(maps, masks, 4), [True, True, False])
  np.testing.assert_array_equal(metrics.pointing_game(maps, masks, 5), [True, True, True])


def test_pointing_game_tie_rules():
  masks = np.zeros((2, 8, 8), bool)
  masks[:, 0:2, 0:2] = True  # holds the first (row-major) pixel
  maps = np.zeros((2, 8, 8), np.float32)  # image 0: all zero, every pixel is a maximum
  maps[1, 0, 1] = maps[1, 6, 6] = 1.0  # image 1: two maxima, one on the object
  np.testing.assert_array_equal(metrics.pointing_game(maps, masks, ties='all'), [False, False])
  np.testing.assert_array_equal(metrics.pointing_game(maps, masks, ties='any'), [True, True])
  np.testing.assert_array_equal(metrics.pointing_game(maps, masks, ties='first'), [True, True])
  # A mask covering the whole image: even a constant map hits under 'all'.
  assert bool(metrics.pointing_game(maps[:1], np.ones((1, 8, 8), bool))[0])


def test_center_baseline():
  odd = np.zeros((2, 9, 9), bool)
  odd[0, 4, 4] = True  # the centre pixel exactly
  odd[1, 3, 4] = True  # one above it
  np.testing.assert_array_equal(metrics.center_baseline(odd), [True, False])
  np.testing.assert_array_equal(metrics.center_baseline(odd, tolerance=1), [True, True])
  # Even side: the central 2x2 block ties; 'all' needs all four on the object.
  even = np.zeros((2, 8, 8), bool)
  even[0, 3:5, 3:5] = True
  even[1, 3:5, 3] = True
  np.testing.assert_array_equal(metrics.center_baseline(even), [True, False])
  np.testing.assert_array_equal(metrics.center_baseline(even, ties='any'), [True, True])


def test_mask_mass_exact():
  masks = np.zeros((3, 4, 5), bool)
  masks[:, :2, :] = True  # area 10 / 20
  maps = np.zeros((3, 4, 5), np.float32)
  maps[0, 0, 0], maps[0, 3, 4] = 3.0, 1.0  # 3 of 4 inside
  maps[1] = 2.0  # uniform: inside = area
  # maps[2] all zero: scored as uniform, not 0/0
  r = metrics.mask_mass(maps, masks)
  np.testing.assert_allclose(r.inside, [0.75, 0.5, 0.5], rtol=1e-6)
  np.testing.assert_allclose(r.area, [0.5, 0.5, 0.5], rtol=1e-6)
  assert np.isfinite(np.asarray(metrics.mask_mass(maps, np.zeros_like(masks)).inside)).all()


@pytest.mark.parametrize('call, match', [
    (lambda: metrics.pointing_game(np.zeros((2, 8, 8)), np.ones((2, 8, 9), bool)), 'shape'),
    (lambda: metrics.pointing_game(np.zeros((8, 8)), np.ones((8, 8), bool)), r'\(N, H, W\)'),
    (lambda: metrics.pointing_game(np.zeros((2, 8, 8)), np.full((2, 8, 8), 2)), '0/1'),
    (lambda: metrics.pointing_game(np.zeros((2, 8, 8)), np.zeros((2, 8, 8), bool)), 'empty'),
    (lambda: metrics.pointing_game(np.full((1, 8, 8), np.nan), np.ones((1, 8, 8), bool)),
     'NaN'),
    (lambda: metrics.pointing_game(np.zeros((1, 8, 8)), np.ones((1, 8, 8)), ties='x'), 'ties'),
    (lambda: metrics.pointing_game(np.zeros((1, 8, 8)), np.ones((1, 8, 8)), -1), 'tolerance'),
    (lambda: metrics.mask_mass(-np.ones((1, 8, 8)), np.ones((1, 8, 8), bool)), 'negative'),
    (lambda: metrics.spearman(np.zeros((1, 8, 8)), np.zeros((1, 8, 7))), 'differ'),
    (lambda: metrics.ssim(np.zeros((1, 6, 6)), np.zeros((1, 6, 6))), 'window'),
])
def test_bad_input_is_one_line_error(call, match):
  with pytest.raises(InputError, match=match) as info:
    call()
  assert '\n' not in str(info.value)


# ---------------------------------------------------------------------------------------
# Deletion and insertion.

H, W = 4, 5
WEIGHTS = np.arange(H * W, dtype=np.float32).reshape(H, W) / (H * W)  # distinct, >= 0


def _linear_apply(params, images):
  """Two classes: logit 0 = sum of w * x over pixels and channels, logit 1 = 0."""
  score = jnp.einsum('nhwc,hw->n', images, params['w'])
  return jnp.stack([score, jnp.zeros_like(score)], axis=-1)


def _expected_curves(image, weights, saliency, steps, baseline):
  """The curves by hand: p = sigmoid(sum of w * x) of the partly replaced image."""
  order = np.argsort(-saliency.ravel(), kind='stable')
  deletion, insertion = [], []
  for k in range(steps + 1):
    gone = np.zeros(H * W, bool)
    gone[order[:k * H * W // steps]] = True
    gone = gone.reshape(H, W, 1)
    for curve, x in ((deletion, np.where(gone, baseline, image)),
                     (insertion, np.where(gone, image, baseline))):
      curve.append(1 / (1 + np.exp(-(x * weights[..., None]).sum())))
  return np.array(deletion), np.array(insertion)


@pytest.mark.parametrize('steps', [20, 7])  # 7 does not divide the 20 pixels
def test_deletion_insertion_exact_on_linear_model(steps):
  image = np.ones((H, W, 3), np.float32)
  images = np.stack([image, image])
  perfect, reverse = WEIGHTS, -WEIGHTS
  r = metrics.deletion_insertion(_linear_apply, {'w': jnp.asarray(WEIGHTS)}, images,
                                 np.stack([perfect, reverse]), [0, 0], steps=steps,
                                 insertion_baseline='zeros', chunk_size=5)
  # float32 fractions: one rounding of k * 20 // steps / 20.
  np.testing.assert_allclose(r.fractions, (np.arange(steps + 1) * 20 // steps) / 20, rtol=1e-7)
  for i, saliency in enumerate((perfect, reverse)):
    deletion, insertion = _expected_curves(image, WEIGHTS, saliency, steps, 0.0)
    # float32 softmax of logits <= 30: ~1e-7 relative; 1e-6 catches any off-by-one step.
    np.testing.assert_allclose(r.deletion_curve[i], deletion, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(r.insertion_curve[i], insertion, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(r.deletion_auc[i], np.trapezoid(deletion, r.fractions),
                               rtol=1e-6)
  # The faithful map deletes the important pixels first and inserts them first.
  assert r.deletion_auc[0] < r.deletion_auc[1] - 0.05
  assert r.insertion_auc[0] > r.insertion_auc[1] + 0.05


def test_deletion_insertion_chunking_baselines_and_compiles_once():
  traces = []

  def apply(params, images):
    traces.append(images.shape)
    return _linear_apply(params, images)

  rng = np.random.default_rng(1)
  images = rng.standard_normal((3, H, W, 3)).astype(np.float32)
  saliency = rng.uniform(size=(3, H, W)).astype(np.float32)
  params = {'w': jnp.asarray(WEIGHTS)}
  kwargs = dict(steps=10, deletion_baseline=np.full((H, W, 3), 0.5, np.float32))
  a = metrics.deletion_insertion(apply, params, images, saliency, [0, 1, 0], chunk_size=4,
                                 **kwargs)
  n_traces = len(traces)
  b = metrics.deletion_insertion(apply, params, images + 1, saliency, [0, 1, 0],
                                 chunk_size=4, **kwargs)
  assert len(traces) == n_traces  # same shapes: no retrace
  c = metrics.deletion_insertion(apply, params, images, saliency, [0, 1, 0], chunk_size=100,
                                 **kwargs)
  # The chunk size only changes how the passes are batched (33 pairs: 8 chunks of 4 and a
  # remainder, vs one chunk); float32 summation order may differ.
  np.testing.assert_allclose(a.deletion_curve, c.deletion_curve, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(a.insertion_curve, c.insertion_curve, rtol=1e-6, atol=1e-7)
  assert not np.allclose(a.deletion_curve, b.deletion_curve)
  # End points: deletion starts at the intact image, insertion ends at it; deletion ends
  # at the 0.5 baseline, insertion starts at the blurred image.
  probs = np.asarray(jax.nn.softmax(_linear_apply(params, images)))[[0, 1, 2], [0, 1, 0]]
  np.testing.assert_allclose(a.deletion_curve[:, 0], probs, rtol=1e-6)
  np.testing.assert_allclose(a.insertion_curve[:, -1], probs, rtol=1e-6)
  blurred = np.asarray(metrics.blur_baseline(images))
  assert not np.allclose(blurred, images)
  probs_blur = np.asarray(jax.nn.softmax(_linear_apply(params, blurred)))[[0, 1, 2], [0, 1, 0]]
  np.testing.assert_allclose(a.insertion_curve[:, 0], probs_blur, rtol=1e-5)
  with pytest.raises(InputError, match='baseline'):
    metrics.deletion_insertion(apply, params, images, saliency, 0, insertion_baseline='grey')
  with pytest.raises(InputError, match='saliency has shape'):
    metrics.deletion_insertion(apply, params, images, saliency[:, :3], 0)
  with pytest.raises(InputError, match='out of range'):
    metrics.deletion_insertion(apply, params, images, saliency, 2)


def test_saliency_ranks_are_stable_on_ties():
  s = np.array([[[0.0, 2.0, 0.0], [1.0, 2.0, 0.0]]], np.float32)
  # Descending; equal values in row-major order: 2 (1), 2 (4), 1 (3), 0 (0, 2, 5).
  np.testing.assert_array_equal(metrics.saliency_ranks(s), [[3, 0, 4, 2, 1, 5]])


# ---------------------------------------------------------------------------------------
# Similarity.

def _maps_with_ties(rng, n=3, size=32):
  """ReLU-like maps: about half exact zeros, some values rounded to force more ties."""
  a = np.maximum(rng.standard_normal((n, size, size)), 0).astype(np.float32)
  b = np.maximum(a + 0.7 * rng.standard_normal((n, size, size)), 0).astype(np.float32)
  a[0] = np.round(a[0] * 4) / 4
  b[1] = -b[1]  # a negative correlation too
  return a, b


def test_average_ranks_equal_scipy():
  x = np.random.default_rng(2).integers(0, 5, 200).astype(np.float32)
  # Ranks are multiples of 0.5 below 2**23: exact in float32.
  np.testing.assert_array_equal(metrics.average_ranks(jnp.asarray(x)),
                                scipy.stats.rankdata(x, method='average'))


def test_spearman_equals_scipy_with_ties():
  a, b = _maps_with_ties(np.random.default_rng(0))
  expected = [scipy.stats.spearmanr(x.ravel(), y.ravel()).statistic for x, y in zip(a, b)]
  # Measured ~2e-7 (float32 sums of 1024 centred rank products); ignoring ties (ordinal
  # ranks) moves these by > 1e-2, so 1e-5 separates right from wrong.
  np.testing.assert_allclose(metrics.spearman(a, b), expected, atol=1e-5)
  assert expected[1] < 0
  np.testing.assert_allclose(metrics.spearman(a, a), 1.0, atol=1e-6)


def test_spearman_of_constant_maps_is_defined():
  rng = np.random.default_rng(3)
  varying = rng.uniform(size=(1, 8, 8)).astype(np.float32)
  zero = np.zeros((1, 8, 8), np.float32)
  np.testing.assert_array_equal(metrics.spearman(zero, zero), [1.0])
  np.testing.assert_array_equal(metrics.spearman(zero, varying), [0.0])


@pytest.mark.parametrize('gaussian', [False, True])
def test_ssim_equals_skimage(gaussian):
  a, b = _maps_with_ties(np.random.default_rng(4))
  a, b = np.asarray(metrics.normalize_maps(a)), np.asarray(metrics.normalize_maps(np.abs(b)))
  kwargs = (dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
            if gaussian else {})
  expected = [skimage.metrics.structural_similarity(
      x.astype(np.float64), y.astype(np.float64), data_range=1.0, **kwargs)
      for x, y in zip(a, b)]
  # Measured <= 2e-7 against skimage's float64: float32 local moments of [0, 1] data.
  # A wrong window, covariance norm or border crop moves SSIM by > 1e-3.
  np.testing.assert_allclose(metrics.ssim(a, b, 1.0, gaussian), expected, atol=1e-5)
  np.testing.assert_allclose(metrics.ssim(a, a, 1.0, gaussian), 1.0, atol=1e-6)


# ---------------------------------------------------------------------------------------
# Sanity checks.

def _tiny_params(seed=0):
  """Two 3x3 convs and a linear layer, named so that string order is not forward order
  ('classifier' < 'features'); non-zero biases so their randomisation shows."""
  k = jax.random.split(jax.random.key(seed), 6)
  return {
      'features': {
          0: {'kernel': 0.3 * jax.random.normal(k[0], (3, 3, 3, 4)),
              'bias': 0.1 * jax.random.normal(k[1], (4,))},
          10: {'kernel': 0.3 * jax.random.normal(k[2], (3, 3, 4, 4)),
               'bias': 0.1 * jax.random.normal(k[3], (4,))},
          2: {'scale': 1 + 0.1 * jax.random.normal(k[4], (4,)), 'bias': jnp.zeros(4) + 0.05,
              'mean': jnp.full(4, 0.1), 'var': jnp.full(4, 2.0)},
      },
      'classifier': {0: {'kernel': jax.random.normal(k[5], (4, 5)), 'bias': jnp.arange(5.0)}},
  }


def _tiny_apply(params, images):
  f = params['features']

  def conv(x, p):
    return jax.lax.conv_general_dilated(x, p['kernel'], (1, 1), 'SAME',
                                        dimension_numbers=('NHWC', 'HWIO', 'NHWC')) + p['bias']

  x = jax.nn.relu(conv(images, f[0]))
  bn = f[2]
  x = (x - bn['mean']) / jnp.sqrt(bn['var'] + 1e-5) * bn['scale'] + bn['bias']
  x = jax.nn.relu(conv(x, f[10]))
  return x.mean(axis=(1, 2)) @ params['classifier'][0]['kernel'] + params['classifier'][0]['bias']


TINY_LAYERS = ('features.0', 'features.2', 'features.10', 'classifier.0')


def test_parameterized_layers_forward_order(squeezenet):
  params = _tiny_params()
  assert metrics.parameterized_layers(params, _tiny_apply) == TINY_LAYERS
  # Without the model only the tree is known: integers numerically, names alphabetically.
  assert metrics.parameterized_layers(params) == ('classifier.0',) + TINY_LAYERS[:3]
  apply, params = squeezenet
  layers = metrics.parameterized_layers(
      params, apply, jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
  assert len(layers) == 26 and layers[0] == 'features.0' and layers[-1] == 'classifier.1'
  assert layers[1:4] == ('features.3.squeeze', 'features.3.expand1x1', 'features.3.expand3x3')
  assert layers[-4] == 'features.12.squeeze' and layers.index('features.10.squeeze') == 16


def test_randomize_layers_changes_only_the_chosen_layers():
  params = _tiny_params()
  key = jax.random.key(7)
  new = metrics.randomize_layers(params, ['features.2', 'classifier.0'], key)
  same = jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), params, new)
  assert same['features'][0] == {'kernel': True, 'bias': True}
  assert same['features'][10] == {'kernel': True, 'bias': True}
  # Batch-norm running statistics are buffers: kept. Learned scale / offset: redrawn;
  # the constant offset 0.05 stays constant (std 0: nothing to randomise).
  assert same['features'][2] == {'scale': False, 'bias': True, 'mean': True, 'var': True}
  assert same['classifier'][0] == {'kernel': False, 'bias': False}
  old_k, new_k = np.asarray(params['classifier'][0]['kernel']), np.asarray(
      new['classifier'][0]['kernel'])
  # Truncated at +-2 std around the original mean, std matched (20 draws: loose bound).
  assert np.abs(new_k - old_k.mean()).max() <= 2 * old_k.std() / 0.8796 + 1e-5
  assert 0.5 < new_k.std() / old_k.std() < 1.5
  assert abs(np.corrcoef(old_k.ravel(), new_k.ravel())[0, 1]) < 0.6
  # A layer's draw depends on its name and the key only: stage by stage = all at once.
  stepwise = metrics.randomize_layers(
      metrics.randomize_layers(params, ['classifier.0'], key), ['features.2'], key)
  jax.tree.map(np.testing.assert_array_equal, stepwise, new)
  with pytest.raises(InputError, match='unknown layer'):
    metrics.randomize_layers(params, ['features.1'], key)


def test_cascading_randomization_on_tiny_model():
  params = _tiny_params()
  images = jax.random.normal(jax.random.key(1), (3, 12, 12, 3))
  labels = np.array([0, 3, 4])
  sal = functools.partial(jaxviz.saliency_maps, _tiny_apply)
  key = jax.random.key(2)
  r = metrics.cascading_randomization(sal, params, images, labels, key)
  assert r.stages == ('original',) + TINY_LAYERS[::-1]
  for values in (r.spearman, r.spearman_abs, r.ssim):
    assert values.shape == (5, 3)
    np.testing.assert_allclose(values[0], 1.0, atol=1e-6)
  assert r.maps.shape == (5, 3, 12, 12)
  # The maps after stage s are those of the model with the top s layers randomised.
  expected = sal(metrics.randomize_layers(params, TINY_LAYERS[2:], key), images, labels)
  np.testing.assert_allclose(r.maps[2], expected, rtol=1e-6, atol=1e-7)
  # With every layer randomised, the gradient maps no longer look like the originals.
  assert float(np.mean(r.spearman_abs[-1])) < 0.9
  # max |grad| is non-negative: with and without abs coincide.
  np.testing.assert_allclose(r.spearman, r.spearman_abs, atol=1e-6)

  ind = metrics.independent_randomization(sal, params, images, labels, key, keep_maps=False)
  assert ind.stages == r.stages and ind.maps is None
  # Stage 1 randomises the same single layer (with the same draw) in both runs.
  np.testing.assert_allclose(ind.spearman[:2], r.spearman[:2], atol=1e-6)
  expected = sal(metrics.randomize_layers(params, ['features.0'], key), images, labels)
  np.testing.assert_allclose(metrics.spearman(expected, r.maps[0]), ind.spearman[-1],
                             atol=1e-6)


def test_sanity_check_catches_a_method_that_ignores_the_model():
  # An "explanation" computed from the image alone (the paper's edge-detector failure):
  # randomising the model cannot change it, so every similarity stays at 1.
  def edges(params, images, labels):
    del params, labels
    return jnp.abs(jnp.diff(images.sum(-1), axis=1, append=0.0))

  images = jax.random.normal(jax.random.key(3), (2, 10, 10, 3))
  r = metrics.cascading_randomization(edges, _tiny_params(), images, [0, 1],
                                      jax.random.key(0), keep_maps=False)
  for values in (r.spearman, r.spearman_abs, r.ssim):
    np.testing.assert_allclose(values, 1.0, atol=1e-6)


def test_signed_gradient_sanity_on_squeezenet(squeezenet):
  apply, params = squeezenet
  images = jax.random.normal(jax.random.key(4), (2, 32, 32, 3))
  fn = metrics.input_gradient_fn(apply)
  g = fn(params, images, np.array([1, 2]))
  assert (np.asarray(g) < 0).any() and (np.asarray(g) > 0).any()  # signed
  # The last three layers only (the full 26 stages take longer than this test may).
  layers = metrics.parameterized_layers(params, apply, images)[-3:]
  seen = []
  r = metrics.cascading_randomization(fn, params, images, [1, 2], jax.random.key(5),
                                      layers, progress=lambda s, name: seen.append(name))
  assert r.stages == ('original', 'classifier.1', 'features.12.expand3x3',
                      'features.12.expand1x1') and seen == list(r.stages[1:])
  np.testing.assert_allclose(r.spearman[0], 1.0, atol=1e-6)
  assert np.isfinite(np.asarray(r.ssim)).all()


# ---------------------------------------------------------------------------------------
# Summaries.

def test_fooling_summary():
  f = jaxviz.FoolingResult(
      images=np.zeros((4, 2, 2, 3)), iterations=np.array([10, 30, 100, 0]),
      fooled=np.array([True, True, False, True]), stalled=np.array([False, False, True, False]),
      predicted=np.zeros(4), l2=np.array([1.0, 3.0, 50.0, 0.0]),
      linf=np.array([0.1, 0.3, 5.0, 0.0]), relative_l2=np.array([0.01, 0.03, 0.5, 0.0]),
      relative_linf=np.array([0.02, 0.04, 0.5, 0.0]))
  s = metrics.fooling_summary(f)
  assert all(type(v) is float for v in s.values())
  assert s['success_rate'] == 0.75 and s['stalled'] == 1.0 and s['count'] == 4.0
  # The unfooled image (capped at 100 steps, huge norm) is left out of the means.
  assert s['iterations_mean'] == pytest.approx(40 / 3) and s['iterations_median'] == 10.0
  assert s['l2_mean'] == pytest.approx(4 / 3) and s['relative_linf_mean'] == pytest.approx(0.02)
  none = metrics.fooling_summary(f._replace(fooled=np.zeros(4, bool)))
  assert none['success_rate'] == 0.0 and np.isnan(none['iterations_mean'])


def test_class_visualization_summary():
  v = jaxviz.ClassVisualization(
      images=np.zeros((3, 2, 2, 3)), target_probability=np.array([0.95, 0.9, 0.2]),
      predicted=np.array([76, 5, 1]), probability_trace=np.zeros((3, 4)),
      objective_trace=np.zeros((3, 4)), snapshots=None)
  s = metrics.class_visualization_summary(v, [76, 5, 9])
  assert all(type(x) is float for x in s.values())
  assert s['classified_as_target'] == pytest.approx(2 / 3)
  assert s['reached_threshold'] == pytest.approx(2 / 3)  # 0.9 counts as reached
  assert s['target_probability_min'] == pytest.approx(0.2)
  assert s['target_probability_mean'] == pytest.approx(2.05 / 3)
  with pytest.raises(InputError, match='targets'):
    metrics.class_visualization_summary(v, [1, 2])


# ---------------------------------------------------------------------------------------
# Figures.

def _is_png(path) -> bool:
  with open(path, 'rb') as f:
    return f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_sanity_check_figure_writes_png(tmp_path):
  rng = np.random.default_rng(0)
  stages = ['original', 'classifier.0', 'features.10', 'features.2', 'features.0']
  sims = {'Spearman (abs)': rng.uniform(size=(5, 3)), 'SSIM': rng.uniform(size=(5, 3))}
  fig = figures.sanity_check_figure(stages, sims, maps=rng.standard_normal((5, 2, 12, 12)),
                                    suptitle='cascading randomisation')
  assert _is_png(figures.save(fig, str(tmp_path / 'sanity.png')))
  with pytest.raises(InputError, match='stages'):
    figures.sanity_check_figure(stages[:3], sims)


def test_deletion_insertion_figure_writes_png(tmp_path):
  x = np.linspace(0, 1, 11)
  fig = figures.deletion_insertion_figure(
      x, {'saliency': np.stack([1 - x, 1 - x ** 0.5]), 'random': 1 - x},
      {'saliency': np.stack([x, x ** 0.5]), 'random': x}, suptitle='RISE')
  assert _is_png(figures.save(fig, str(tmp_path / 'deletion.png')))
  with pytest.raises(InputError, match='points'):
    figures.deletion_insertion_figure(x[:5], {'a': x}, {'a': x})
