"""The torch-semantics ops, forward and gradient, against torch in float64.

The tests that compare against torch import it themselves and skip without it (the
[test] extra); the others run anywhere.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxviz import ops
from jaxviz.errors import InputError
from jaxviz.models import layers as L
from jaxviz.models.squeezenet import Fire


def _torch():
  """torch, its threads set by torch_helpers; skips the calling test without torch."""
  torch = pytest.importorskip('torch')
  import torch_helpers  # noqa: F401
  return torch


def _pool_case(x, kernel, stride, ceil_mode, pool_fn, torch_fn):
  """Forward and vector-Jacobian product of a pooling op against torch."""
  import torch
  from torch_helpers import to_nhwc
  xt = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
  out_t = torch_fn(xt)
  cot = np.random.default_rng(1).standard_normal(out_t.shape)
  (out_t * torch.tensor(cot)).sum().backward()
  with jax.enable_x64(True):
    # jit: one compilation rather than one per primitive (the max-pool has ~50).
    out_j, vjp = jax.vjp(jax.jit(pool_fn), jnp.asarray(x))
    (grad_j,) = vjp(jnp.asarray(cot.transpose(0, 2, 3, 1)))
  return (np.asarray(out_j), to_nhwc(out_t)), (np.asarray(grad_j), to_nhwc(xt.grad))


@pytest.mark.parametrize('size', [(7, 7), (8, 9), (13, 13), (14, 15), (55, 56), (111, 113)])
@pytest.mark.parametrize('kernel,stride', [(3, 2), (2, 2), (3, 1)])
@pytest.mark.parametrize('ceil_mode', [True, False])
def test_max_pool_matches_torch(size, kernel, stride, ceil_mode):
  F = _torch().nn.functional
  x = np.random.default_rng(0).standard_normal((2, *size, 3))
  (out_j, out_t), (g_j, g_t) = _pool_case(
      x, kernel, stride, ceil_mode,
      lambda x: ops.max_pool2d(x, kernel, stride, ceil_mode=ceil_mode),
      lambda x: F.max_pool2d(x, kernel, stride, ceil_mode=ceil_mode))
  assert out_j.shape == out_t.shape
  # A max selects an input exactly and its gradient routes the cotangent unchanged:
  # both must be bit-identical, so any tolerance would hide a routing bug.
  np.testing.assert_array_equal(out_j, out_t)
  np.testing.assert_array_equal(g_j, g_t)


@pytest.mark.parametrize('ceil_mode', [True, False])
def test_max_pool_ties_route_gradient_like_torch(ceil_mode):
  # Saturated image regions give equal activations; torch sends the gradient to the
  # first maximum of each window (row-major). So must we, to the bit.
  F = _torch().nn.functional
  x = np.random.default_rng(0).integers(0, 3, (2, 11, 13, 4)).astype(np.float64)
  _, (g_j, g_t) = _pool_case(x, 3, 2, ceil_mode,
                             lambda x: ops.max_pool2d(x, 3, 2, ceil_mode=ceil_mode),
                             lambda x: F.max_pool2d(x, 3, 2, ceil_mode=ceil_mode))
  np.testing.assert_array_equal(g_j, g_t)


def test_max_pool_nan_and_inf_like_torch():
  # torch's CPU kernel takes `val > max || isnan(val)`: a window with NaNs outputs NaN
  # and sends its gradient to the last NaN; an all -inf window routes to its first input,
  # even where the window starts in the (-inf) padding.
  F = _torch().nn.functional
  rng = np.random.default_rng(0)
  x = rng.integers(0, 3, (2, 9, 11, 4)).astype(np.float64)
  x[rng.random(x.shape) < 0.3] = -np.inf
  x[rng.random(x.shape) < 0.1] = np.nan
  for kernel, stride, padding, ceil_mode in [(3, 2, 0, True), (3, 2, 1, False),
                                             (2, 1, 1, True), (3, 3, 1, True)]:
    (out_j, out_t), (g_j, g_t) = _pool_case(
        x, kernel, stride, ceil_mode,
        lambda x: ops.max_pool2d(x, kernel, stride, padding, ceil_mode),
        lambda x: F.max_pool2d(x, kernel, stride, padding, ceil_mode=ceil_mode))
    assert np.isnan(out_t).any()  # the case is exercised
    np.testing.assert_array_equal(out_j, out_t)  # NaNs compare equal here
    np.testing.assert_array_equal(g_j, g_t)


def test_max_pool_gradient_equals_reduce_window_without_ties():
  # Distinct values: every window has one maximum, so the select chain and XLA's own
  # reduce_window gradient (select_and_scatter) must route identically.
  x = np.random.default_rng(0).permutation(2 * 27 * 28 * 3).reshape(2, 27, 28, 3) * 1.0
  g = np.random.default_rng(1).standard_normal((2, 13, 14, 3))
  with jax.enable_x64(True):
    x, g = jnp.asarray(x), jnp.asarray(g)
    reference = lambda x: jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1),
                                                (1, 2, 2, 1), ((0, 0), (0, 0), (0, 1), (0, 0)))
    out, vjp = jax.vjp(lambda x: ops.max_pool2d(x, 3, 2, ceil_mode=True), x)
    out_r, vjp_r = jax.vjp(reference, x)
    np.testing.assert_array_equal(out, out_r)
    # An input that wins several overlapping windows sums their cotangents, possibly in
    # another order: float64 round-off only.
    np.testing.assert_allclose(vjp(g)[0], vjp_r(g)[0], rtol=1e-15, atol=1e-15)


def test_max_pool_forward_mode_and_second_order():
  torch = _torch()
  F = torch.nn.functional
  from torch_helpers import to_nhwc
  x = np.random.default_rng(0).integers(0, 4, (2, 11, 12, 3)).astype(np.float64)  # ties
  t = np.random.default_rng(1).standard_normal(x.shape)
  xt, tt = torch.tensor(x.transpose(0, 3, 1, 2)), torch.tensor(t.transpose(0, 3, 1, 2))
  _, jvp_t = torch.func.jvp(lambda x: F.max_pool2d(x, 3, 2, ceil_mode=True), (xt,), (tt,))
  pool = lambda x: ops.max_pool2d(x, 3, 2, ceil_mode=True)
  with jax.enable_x64(True):
    x, t = jnp.asarray(x), jnp.asarray(t)
    _, jvp_j = jax.jvp(pool, (x,), (t,))
    # The tangent of the winning input, exactly, and the winner is torch's.
    np.testing.assert_array_equal(np.asarray(jvp_j), to_nhwc(jvp_t))
    # Hessian-vector product of 0.5 |pool(x)|^2 is R^T R t with R the routing.
    hvp = jax.jvp(jax.grad(lambda x: 0.5 * jnp.sum(pool(x) ** 2)), (x,), (t,))[1]
    np.testing.assert_array_equal(hvp, jax.vjp(pool, x)[1](jvp_j)[0])


def test_max_pool_too_small_input_is_a_clear_error():
  with pytest.raises(InputError, match='smaller than'):
    ops.max_pool2d(jnp.zeros((1, 2, 2, 3)), 3, 2, ceil_mode=True)


def test_fire_then_pool_is_pooled_per_branch_only_when_unhooked():
  # run_sequential pools each expand branch of a Fire before concatenating (faster on
  # XLA); hooking the Fire output must see the concatenation, and both paths must give
  # the same output and input gradient, with the layer names offered in the same order.
  # Kernels of two shapes only: each new shape costs an initialiser compilation.
  layers = nnx.List([Fire(4, 4, 4, 4, rngs=nnx.Rngs(0)), L.MaxPool2d(3, 2, ceil_mode=True)])
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 15, 15, 4)), jnp.float32)
  seen = []

  class Recorder(dict):
    def get(self, name, default=None):
      seen.append(name)
      return super().get(name, default)

  cot = jnp.asarray(np.random.default_rng(1).standard_normal((2, 7, 7, 8)), jnp.float32)

  def run(hooks):
    def out_and_grad(x):
      out, vjp = jax.vjp(lambda x: L.run_sequential(layers, x, 'features', hooks), x)
      return out, vjp(cot)[0]
    return jax.jit(out_and_grad)(x)

  plain = run(Recorder())
  names, seen[:] = list(seen), []
  captured = {}
  hooked = run(Recorder({'features.0': lambda y: captured.setdefault('y', y)}))
  assert seen == names and names.index('features.0') + 1 == names.index('features.1')
  assert captured['y'].shape == (2, 15, 15, 8)  # the concatenation, not a branch
  np.testing.assert_array_equal(hooked[0], plain[0])
  np.testing.assert_array_equal(hooked[1], plain[1])

  def concatenated_shapes(hooks):
    jaxpr = jax.make_jaxpr(lambda x: L.run_sequential(layers, x, 'features', hooks))(x)
    return {e.outvars[0].aval.shape for e in jaxpr.eqns if e.primitive.name == 'concatenate'}
  assert concatenated_shapes(None) == {(2, 7, 7, 8)}  # pooled, then concatenated
  assert concatenated_shapes({'features.0': lambda y: y}) == {(2, 15, 15, 8)}


@pytest.mark.parametrize('size', [(1, 1), (3, 5), (6, 9), (7, 7), (9, 10), (14, 14), (16, 23)])
def test_adaptive_avg_pool_matches_torch(size):
  F = _torch().nn.functional
  x = np.random.default_rng(0).standard_normal((2, *size, 3))
  (out_j, out_t), (g_j, g_t) = _pool_case(
      x, None, None, None, lambda x: ops.adaptive_avg_pool2d(x, (7, 7)),
      lambda x: F.adaptive_avg_pool2d(x, (7, 7)))
  # Same bins, different summation order: float64 round-off only (~1e-16).
  np.testing.assert_allclose(out_j, out_t, rtol=0, atol=1e-13)
  np.testing.assert_allclose(g_j, g_t, rtol=0, atol=1e-13)


def test_flatten_matches_torch_order():
  torch = _torch()
  x = np.arange(2 * 3 * 4 * 5, dtype=np.float64).reshape(2, 3, 4, 5)  # NHWC
  expected = torch.flatten(torch.tensor(x.transpose(0, 3, 1, 2)), 1).numpy()
  np.testing.assert_array_equal(np.asarray(ops.flatten_nchw(jnp.asarray(x))), expected)
