"""Similarity of two saliency maps: Spearman rank correlation and SSIM, batched over N.

These are the two measures of Adebayo et al. (2018) for comparing a model's maps with
those of its randomised copies. Both take (N, H, W) maps and return (N,) values; both are
jit-compiled and agree with scipy / scikit-image (tests/test_metrics.py).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz.errors import InputError
from jaxviz.metrics import _checks


def average_ranks(x):
  """Ranks 1..M of a 1-D array, ties given their average rank (scipy's 'average').

  Saliency maps hold many exact zeros (ReLU gates, the max over channels of a zero
  gradient), so the tie rule matters: ordinal ranks would make two identical maps
  correlate below 1 whenever the tie order differed. Average ranks are exact in float32
  for M < 2**23 (they are multiples of 0.5).

  Args:
    x: (M,) numbers.

  Returns:
    (M,) float ranks.
  """
  if np.ndim(x) != 1 or np.shape(x)[0] == 0:
    raise InputError(f'average_ranks takes a non-empty 1-D array, got shape {np.shape(x)}: '
                     'expected (M,)')
  x = jnp.asarray(_checks.check_finite(x, 'average_ranks input'))
  m = x.shape[0]
  dtype = jnp.float64 if x.dtype == jnp.float64 else jnp.float32
  order = jnp.argsort(x, stable=True)
  s = x[order]
  idx = jnp.arange(m)
  differs = s[1:] != s[:-1]
  starts = jnp.concatenate([jnp.array([True]), differs])
  ends = jnp.concatenate([differs, jnp.array([True])])
  # Every element of a run of equal values gets the run's first and last sorted position.
  first = jax.lax.cummax(jnp.where(starts, idx, 0))
  last = jax.lax.cummin(jnp.where(ends, idx, m), reverse=True)
  avg = (first + last).astype(dtype) / 2 + 1
  return jnp.zeros(m, dtype).at[order].set(avg)


def _spearman_one(a, b):
  ra, rb = average_ranks(a.ravel()), average_ranks(b.ravel())
  # Average ranks always sum to M (M + 1) / 2, ties or not: centring on the exact mean
  # avoids a float32 reduction error before the products.
  centre = (ra.shape[0] + 1) / 2
  ra, rb = ra - centre, rb - centre
  saa, sbb = jnp.sum(ra * ra), jnp.sum(rb * rb)
  r = jnp.sum(ra * rb) / jnp.sqrt(jnp.where((saa > 0) & (sbb > 0), saa * sbb, 1.0))
  # A constant map has no ranking (scipy returns NaN). Two constant maps rank alike (1);
  # one constant map shares nothing with a varying one (0), e.g. a randomised model
  # whose maps collapsed to zero.
  both, either = (saa == 0) & (sbb == 0), (saa == 0) | (sbb == 0)
  return jnp.where(both, 1.0, jnp.where(either, 0.0, jnp.clip(r, -1.0, 1.0)))


@jax.jit
def _spearman(a, b):
  return jax.vmap(_spearman_one)(a, b)


def spearman(a, b):
  """Spearman rank correlation of each pair of maps, ties at their average rank.

  Equals `scipy.stats.spearmanr(a[i].ravel(), b[i].ravel()).statistic` where that is
  defined. Where scipy returns NaN (a constant map) this returns 1 if both maps are
  constant and 0 if only one is: never a NaN.

  Args:
    a, b: (N, H, W) maps (any real values; signs are kept).

  Returns:
    (N,) correlations in [-1, 1].

  References:
    Adebayo et al., Sanity Checks for Saliency Maps, NeurIPS 2018.
  """
  a, b = _checks.check_maps(a, 'a'), _checks.check_maps(b, 'b')
  _checks.check_same_shape(a, b, ('a', 'b'))
  return _spearman(jnp.asarray(a), jnp.asarray(b))


def normalize_maps(maps):
  """Each map min-max scaled to [0, 1]; a constant map becomes all zeros.

  Adebayo et al. normalise maps to [0, 1] before SSIM, so that SSIM (whose constants
  assume a known data range) compares shapes, not scales: randomising the logits layer
  changes a gradient's magnitude by orders without necessarily changing its pattern.

  Args:
    maps: (N, H, W).

  Returns:
    (N, H, W) in [0, 1].
  """
  maps = jnp.asarray(_checks.check_maps(maps, 'maps'))
  lo = maps.min(axis=(-2, -1), keepdims=True)
  span = maps.max(axis=(-2, -1), keepdims=True) - lo
  return jnp.where(span > 0, (maps - lo) / jnp.where(span > 0, span, 1.0), 0.0)


def _window(gaussian_weights: bool) -> np.ndarray:
  """skimage's SSIM window: a 7x7 box, or the 11x11 Gaussian (sigma 1.5, truncate 3.5)."""
  if not gaussian_weights:
    return np.full((7, 7), 1.0 / 49)
  sigma, truncate = 1.5, 3.5
  radius = int(truncate * sigma + 0.5)  # scipy.ndimage.gaussian_filter's radius: 5
  taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
  taps /= taps.sum()
  return np.outer(taps, taps)


@functools.partial(jax.jit, static_argnames=('gaussian_weights',))
def _ssim(a, b, data_range, gaussian_weights):
  dtype = jnp.result_type(a.dtype, jnp.float32)
  a, b = a.astype(dtype), b.astype(dtype)
  window = _window(gaussian_weights)
  k = window.shape[0]
  # skimage filters the whole image, then averages only where the window lies inside it
  # (it crops (k - 1) / 2 pixels per side): exactly a VALID convolution, so its boundary
  # mode never matters.
  stack = jnp.stack([a, b, a * a, b * b, a * b], axis=-1)
  kernel = jnp.asarray(np.tile(window[:, :, None, None], (1, 1, 1, 5)), dtype)
  means = jax.lax.conv_general_dilated(
      stack, kernel, (1, 1), 'VALID', dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      feature_group_count=5, precision=jax.lax.Precision.HIGHEST)
  ux, uy, uxx, uyy, uxy = (means[..., i] for i in range(5))
  # skimage: sample covariance (N / (N - 1)) for the box window, population for Gaussian.
  cov_norm = 1.0 if gaussian_weights else k * k / (k * k - 1.0)
  vx, vy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy)
  vxy = cov_norm * (uxy - ux * uy)
  c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
  s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
  return s.mean(axis=(-2, -1))


def ssim(a, b, data_range: float = 1.0, gaussian_weights: bool = False):
  """Mean structural similarity of each pair of maps, as scikit-image computes it.

  Matches `skimage.metrics.structural_similarity(a[i], b[i], data_range=data_range)`
  (defaults: 7x7 uniform window, sample covariance, K1 = 0.01, K2 = 0.03), or with
  `gaussian_weights=True` that call with `gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False` (Wang et al.'s 11x11 Gaussian window). The mean is over
  the positions where the window lies wholly inside the map.

  Args:
    a, b: (N, H, W) maps, H and W at least the window size (7, or 11).
    data_range: the maps' value range (max - min possible), which sets SSIM's
      stabilising constants; 1 for maps from `normalize_maps`, as Adebayo et al. use.
    gaussian_weights: use the Gaussian window instead of the box.

  Returns:
    (N,) SSIM values in [-1, 1].

  References:
    Wang et al., Image quality assessment: from error visibility to structural
    similarity, IEEE TIP 2004; Adebayo et al., Sanity Checks for Saliency Maps, NeurIPS
    2018.
  """
  a, b = _checks.check_maps(a, 'a'), _checks.check_maps(b, 'b')
  _checks.check_same_shape(a, b, ('a', 'b'))
  k = 11 if gaussian_weights else 7
  if min(np.shape(a)[1:]) < k:
    raise InputError(f'maps of size {np.shape(a)[1:]} are smaller than the {k}x{k} SSIM '
                     'window')
  if not float(data_range) > 0:
    raise InputError(f'data_range must be positive, got {data_range}')
  return _ssim(jnp.asarray(a), jnp.asarray(b), float(data_range), gaussian_weights)
