"""Normalisation, its inverse, and the errors for images of the wrong kind."""

import jax.numpy as jnp
import numpy as np
import pytest

import jaxviz
from jaxviz.errors import InputError


def test_uint8_and_float_agree_and_invert():
  rgb = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
  a = jaxviz.preprocess(rgb)
  b = jaxviz.preprocess(rgb.astype(np.float32) / 255)
  np.testing.assert_allclose(a, b, atol=1e-6)  # float32 round-off of x/255
  np.testing.assert_allclose(jaxviz.deprocess(a), rgb / 255, atol=1e-6)
  expected = (rgb[0, 0, 0] / 255 - np.array(jaxviz.IMAGENET_MEAN)) / np.array(
      jaxviz.IMAGENET_STD)
  np.testing.assert_allclose(a[0, 0, 0], expected, atol=1e-6)


def test_single_image_is_batched():
  assert jaxviz.preprocess(np.zeros((4, 4, 3), np.uint8)).shape == (1, 4, 4, 3)


def test_valid_range_is_the_image_of_0_and_1():
  lo, hi = jaxviz.valid_range()
  np.testing.assert_allclose(jaxviz.preprocess(np.zeros((1, 1, 1, 3)))[0, 0, 0], lo,
                             atol=1e-6)
  np.testing.assert_allclose(jaxviz.preprocess(np.ones((1, 1, 1, 3)))[0, 0, 0], hi,
                             atol=1e-6)


@pytest.mark.parametrize('shape,match', [
    ((5, 5), 'grayscale'), ((1, 5, 5, 1), 'grayscale'), ((1, 5, 5, 4), 'RGBA'),
    ((5,), 'expected'), ((0, 5, 5, 3), 'empty batch')])
def test_wrong_shapes_are_one_line_errors(shape, match):
  with pytest.raises(InputError, match=match) as e:
    jaxviz.preprocess(np.zeros(shape, np.uint8))
  assert '\n' not in str(e.value)


def test_out_of_range_and_nan_floats():
  with pytest.raises(InputError, match='already normalised'):
    jaxviz.preprocess(np.full((1, 2, 2, 3), 2.0))
  with pytest.raises(InputError, match='NaN'):
    jaxviz.preprocess(np.full((1, 2, 2, 3), np.nan))


def test_deprocess_clips():
  assert float(jaxviz.deprocess(jnp.full((1, 1, 1, 3), 100.0)).max()) == 1.0
