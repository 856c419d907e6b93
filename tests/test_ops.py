"""The torch-semantics ops, forward and gradient, against torch in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import to_nhwc
from jaxviz import ops
from jaxviz.errors import InputError


def _pool_case(x, kernel, stride, ceil_mode, pool_fn, torch_fn):
  """Forward and vector-Jacobian product of a pooling op against torch."""
  xt = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
  out_t = torch_fn(xt)
  cot = np.random.default_rng(1).standard_normal(out_t.shape)
  (out_t * torch.tensor(cot)).sum().backward()
  with jax.enable_x64(True):
    out_j, vjp = jax.vjp(pool_fn, jnp.asarray(x))
    (grad_j,) = vjp(jnp.asarray(cot.transpose(0, 2, 3, 1)))
  return (np.asarray(out_j), to_nhwc(out_t)), (np.asarray(grad_j), to_nhwc(xt.grad))


@pytest.mark.parametrize('size', [(7, 7), (8, 9), (13, 13), (14, 15), (55, 56), (111, 113)])
@pytest.mark.parametrize('kernel,stride', [(3, 2), (2, 2), (3, 1)])
@pytest.mark.parametrize('ceil_mode', [True, False])
def test_max_pool_matches_torch(size, kernel, stride, ceil_mode):
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
  x = np.random.default_rng(0).integers(0, 3, (2, 11, 13, 4)).astype(np.float64)
  _, (g_j, g_t) = _pool_case(x, 3, 2, ceil_mode,
                             lambda x: ops.max_pool2d(x, 3, 2, ceil_mode=ceil_mode),
                             lambda x: F.max_pool2d(x, 3, 2, ceil_mode=ceil_mode))
  np.testing.assert_array_equal(g_j, g_t)


def test_max_pool_too_small_input_is_a_clear_error():
  with pytest.raises(InputError, match='smaller than'):
    ops.max_pool2d(jnp.zeros((1, 2, 2, 3)), 3, 2, ceil_mode=True)


@pytest.mark.parametrize('size', [(1, 1), (3, 5), (6, 9), (7, 7), (9, 10), (14, 14), (16, 23)])
def test_adaptive_avg_pool_matches_torch(size):
  x = np.random.default_rng(0).standard_normal((2, *size, 3))
  (out_j, out_t), (g_j, g_t) = _pool_case(
      x, None, None, None, lambda x: ops.adaptive_avg_pool2d(x, (7, 7)),
      lambda x: F.adaptive_avg_pool2d(x, (7, 7)))
  # Same bins, different summation order: float64 round-off only (~1e-16).
  np.testing.assert_allclose(out_j, out_t, rtol=0, atol=1e-13)
  np.testing.assert_allclose(g_j, g_t, rtol=0, atol=1e-13)


def test_flatten_matches_torch_order():
  x = np.arange(2 * 3 * 4 * 5, dtype=np.float64).reshape(2, 3, 4, 5)  # NHWC
  expected = torch.flatten(torch.tensor(x.transpose(0, 3, 1, 2)), 1).numpy()
  np.testing.assert_array_equal(np.asarray(ops.flatten_nchw(jnp.asarray(x))), expected)
