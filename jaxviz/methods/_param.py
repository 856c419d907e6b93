"""Image parameterisations for feature visualisation: the optimised variable z and the
normalised image x = image(z) the model sees.

  'pixel', decorrelate=False: x = z (the course's ascent on the pixels themselves, with
      a clamp to the pixel box after each step).
  'pixel', decorrelate=True:  x = box(sigmoid(z M^T)), z (H, W, 3).
  'fourier':                  x = box(sigmoid(colour(F(z)))), z the real and imaginary
      parts (2, H, W // 2 + 1, 3) of a spectrum, F(z) = irfft2(s * (z_re + i z_im)) / 4
      with s(f) = sqrt(H W) / max(|f|, 1 / max(H, W)) (lucid's `fft_image`, decay 1),
      and colour = z M^T with decorrelate, the identity without.

M is lucid's square root of ImageNet's colour correlation matrix (`COLOR_SVD_SQRT`,
normalised by its largest column norm) and box(p) = low + (high - low) * p maps RGB in
[0, 1] onto the model's normalised pixel box (`Model.valid_range()`), so that every image
of a sigmoid parameterisation is a valid picture, clamped by construction.

References:
  Olah, Mordvintsev & Schubert, Feature Visualization, Distill 2017, sec. "The Enemy of
    Feature Visualization" (preconditioning, the decorrelated Fourier basis);
  lucid (github.com/tensorflow/lucid), lucid/optvis/param/spatial.py (`fft_image`,
    `rfft2d_freqs`) and lucid/optvis/param/color.py (`color_correlation_svd_sqrt`,
    `_linear_decorelate_color`, `to_valid_rgb` with sigmoid=True).
"""

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz.methods import _ascent

PARAMETERIZATIONS = ('pixel', 'fourier')

# lucid/optvis/param/color.py: the square root (by SVD) of the empirical ImageNet RGB
# colour correlation matrix, rows R, G, B; lucid rounds it to two decimals. Its columns
# are the colour basis: the first, ~(0.26, 0.27, 0.27), is luminance.
COLOR_SVD_SQRT = np.array([[0.26, 0.09, 0.02],
                           [0.27, 0.00, -0.05],
                           [0.27, -0.09, 0.03]])
# lucid's color_correlation_normalized: divided by the largest column norm (0.4556...),
# so that no decorrelated direction is longer than 1.
COLOR_NORMALIZED = COLOR_SVD_SQRT / np.linalg.norm(COLOR_SVD_SQRT, axis=0).max()
# lucid's initial standard deviation of its parameters.
INIT_SD = 0.01


def rfft2d_freqs(h: int, w: int) -> np.ndarray:
  """(h, w // 2 + 1) spatial frequency magnitudes |f| in cycles per pixel, the layout of
  rfft2 (lucid's `rfft2d_freqs`, which keeps one extra column for odd w and crops the
  image it makes: here irfft2 is told the size instead, the same image up to that
  column's share)."""
  fy = np.fft.fftfreq(h)[:, None]
  fx = np.fft.rfftfreq(w)[None, :]
  return np.sqrt(fx * fx + fy * fy)


def spectrum_scale(h: int, w: int) -> np.ndarray:
  """lucid's `fft_image` scale, decay power 1: sqrt(h w) / max(|f|, 1 / max(h, w)).

  Dividing by the frequency whitens the spectrum of natural images (their amplitude
  falls as 1 / f), and sqrt(h w) makes irfft2 (which divides by h w) unitary, so the
  step sizes of the pixel basis carry over.
  """
  return np.sqrt(h * w) / np.maximum(rfft2d_freqs(h, w), 1.0 / max(h, w))


def param_shape(parameterization: str, image_shape) -> tuple[int, ...]:
  """The shape of the optimised variable for an (H, W, 3) image."""
  h, w, c = image_shape
  if parameterization == 'fourier':
    return (2, h, w // 2 + 1, c)
  return (h, w, c)


def uses_sigmoid(parameterization: str, decorrelate: bool) -> bool:
  """Every parameterisation but the plain pixels reaches the box through a sigmoid."""
  return parameterization != 'pixel' or decorrelate


def fourier_image(z, h: int, w: int):
  """F(z) = irfft2(s * (z_re + i z_im)) / 4: (H, W, 3), before colour and sigmoid.

  The final division by 4 is lucid's (`fft_image` returns `t / 4.0`).
  """
  scale = jnp.asarray(spectrum_scale(h, w), z.dtype)[..., None]
  spectrum = (scale * z[0]) + 1j * (scale * z[1])
  return jnp.fft.irfft2(spectrum, s=(h, w), axes=(0, 1)).astype(z.dtype) / 4


def to_image(z, parameterization: str, decorrelate: bool, low, high, image_shape):
  """The normalised image x = image(z) (see the module docstring)."""
  h, w, _ = image_shape
  t = fourier_image(z, h, w) if parameterization == 'fourier' else z
  if decorrelate:
    t = t @ jnp.asarray(COLOR_NORMALIZED.T, t.dtype)
  if not uses_sigmoid(parameterization, decorrelate):
    return t
  return low + (high - low) * jax.nn.sigmoid(t)


class SpectrumJitter(_ascent.Transform):
  """`_ascent.Jitter` for the Fourier parameterisation: the image F(z) rolled by
  (oy, ox) is F of the spectrum times the phase ramp exp(-2 pi i (ky oy / H + kx ox / W))
  (the DFT's shift theorem), a rotation of each (z_re, z_im) pair; the gradient is
  rotated back by its transpose. The offsets are Jitter's for the same key and step, so
  both parameterisations see the same jitter.

  Colour mixing and the sigmoid act per pixel and commute with the roll, so the model
  sees roll(image(z), oy, ox), exactly as the pixel parameterisation's Jitter gives it.
  """

  def __init__(self, max_jitter: int, key, h: int, w: int):
    self.max_jitter, self.key, self.h, self.w = max_jitter, key, h, w

  def _angle(self, oy, ox, dtype):
    ky = jnp.arange(self.h, dtype=dtype)[:, None]
    kx = jnp.arange(self.w // 2 + 1, dtype=dtype)[None, :]
    return (-2 * jnp.pi * (ky * oy.astype(dtype) / self.h + kx * ox.astype(dtype) / self.w)
            )[..., None]

  @staticmethod
  def _rotate(z, angle):
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    return jnp.stack([z[0] * cos - z[1] * sin, z[0] * sin + z[1] * cos])

  def shift(self, x, t):
    ox, oy = jax.random.randint(jax.random.fold_in(self.key, t), (2,), 0, self.max_jitter + 1)
    angle = self._angle(oy, ox, x.dtype)
    return self._rotate(x, angle), angle

  def unshift(self, grad, state):
    return self._rotate(grad, -state)
