"""Tiny NHWC ops that reproduce torch's semantics exactly (each tested against torch).

torch and XLA disagree on three details that matter for porting torchvision models:
ceil-mode max-pooling (SqueezeNet), adaptive average pooling to a fixed grid (VGG), and
the (C, H, W) flatten order in front of VGG's first Linear layer.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz.errors import InputError


def pool_output_size(size: int, kernel: int, stride: int, padding: int = 0,
                     ceil_mode: bool = False) -> int:
  """torch.nn.MaxPool2d's output length along one axis.

  In ceil mode torch rounds up, but drops a last window that would start in the right
  padding (it must start inside the input or the left padding).
  """
  span = size + 2 * padding - kernel
  if span < 0:
    raise InputError(
        f'input of size {size} is smaller than the {kernel}-wide pooling window: '
        'the image is too small for this model')
  out = (-(-span // stride) if ceil_mode else span // stride) + 1
  if ceil_mode and (out - 1) * stride >= size + padding:
    out -= 1
  return out


def max_pool2d(x, kernel: int, stride: int, padding: int = 0, ceil_mode: bool = False):
  """torch.nn.functional.max_pool2d on NHWC input, forward and gradient.

  Each window's winner is found by a running comparison over its kernel**2 taps in
  row-major order, `tap > best or isnan(tap)`: the rule of torch's CPU kernel, so the
  first maximum wins a tie and the last NaN wins a window with NaNs, and the gradient
  goes to that one input. The output is then `select_n(winner, *taps)`, whose derivative
  routes each cotangent to its winner: a select per tap and the transpose of a strided
  slice (a pad), all of which XLA fuses: several times faster on XLA:CPU than
  `lax.reduce_window` max, whose gradient is a scatter and whose JVP breaks ties and
  gradient routes NaNs unlike torch (docs/porting.md). Built from plain primitives, this
  one has JVPs,
  higher derivatives and vmap. Ceil mode pads right/bottom with -inf just wide enough
  for the extra window.

  Args:
    x: (N, H, W, C) array.
    kernel, stride, padding: as torch's (square) arguments.
    ceil_mode: round the output size up, as SqueezeNet's pools do.

  Returns:
    (N, H', W', C) array.
  """
  n, c = x.shape[0], x.shape[3]
  pads, used, out, valid = [], [], [], []
  for size in x.shape[1:3]:
    o = pool_output_size(size, kernel, stride, padding, ceil_mode)
    extent = (o - 1) * stride + kernel - padding  # input rows/cols the windows cover
    used.append(min(extent, size))
    pads.append((padding, max(extent - size, 0), 0))
    out.append(o)
    # valid[t][o]: tap t of window o reads the input rather than the padding.
    rows = np.arange(o)[None, :] * stride + np.arange(kernel)[:, None] - padding
    valid.append((rows >= 0) & (rows < size))
  # Floor mode may leave trailing rows unread (odd sizes): crop them.
  x = x[:, :used[0], :used[1]]
  if any(p[:2] != (0, 0) for p in pads):
    x = jax.lax.pad(x, jnp.array(-jnp.inf, x.dtype), [(0, 0, 0), *pads, (0, 0, 0)])
  (oh, ow), taps, tap_valid = out, [], []
  for i in range(kernel):
    for j in range(kernel):
      taps.append(jax.lax.slice(
          x, (0, i, j, 0), (n, i + (oh - 1) * stride + 1, j + (ow - 1) * stride + 1, c),
          (1, stride, stride, 1)))
      tap_valid.append(np.outer(valid[0][i], valid[1][j])[None, :, :, None])
  best, winner = taps[0], jnp.zeros(taps[0].shape, jnp.int32)
  # torch starts each window at its first input element. Without left/top padding that
  # is tap 0, and -inf padding can never win a strict comparison; with it, a window
  # whose inputs are all -inf must still route to its first input, so padding taps are
  # masked out and the first input tap replaces a padding `best` unconditionally.
  best_valid = tap_valid[0]
  for t in range(1, kernel * kernel):
    tap = taps[t]
    better = (tap > best) | jnp.isnan(tap)
    if not best_valid.all():
      better = better | ~best_valid
    if not tap_valid[t].all():
      better = better & tap_valid[t]
    best_valid = best_valid | tap_valid[t]
    best = jnp.where(better, tap, best)
    winner = jnp.where(better, t, winner)
  # `winner` is a chain of compares and selects that XLA would fuse into the backward
  # pass, which reads it once per window overlapping each input (up to four windows on
  # a 3x3/stride-2 pool, each recomputing nine taps), several times the cost of computing
  # `winner` once. A remainder (an
  # identity here: winner < kernel**2) is one of the "expensive" ops that XLA will not
  # duplicate into several consumers, so where the pool's output is stored for the next
  # layer (every model here) `winner` is stored with it; a lone pool whose output feeds
  # nothing else may still be fused whole. optimization_barrier would say so directly,
  # but XLA:CPU removes barriers before fusion.
  winner = jax.lax.rem(winner, jnp.int32(kernel * kernel + 1))
  return jax.lax.select_n(jax.lax.stop_gradient(winner), *taps)


@functools.lru_cache(maxsize=None)
def adaptive_pool_matrix(size: int, out: int) -> np.ndarray:
  """(out, size) averaging matrix of torch's adaptive average pool along one axis.

  Bin i covers [floor(i * size / out), ceil((i + 1) * size / out)): bins overlap when
  `size` is not a multiple of `out`, and repeat inputs when size < out.
  """
  m = np.zeros((out, size), np.float64)
  for i in range(out):
    start, stop = (i * size) // out, -(-((i + 1) * size) // out)
    m[i, start:stop] = 1.0 / (stop - start)
  return m


def adaptive_avg_pool2d(x, output_size: tuple[int, int]):
  """torch.nn.functional.adaptive_avg_pool2d on NHWC input.

  Written as two small matrix products, which XLA fuses well and which differentiate to
  the exact adjoint; an identity (the common 7x7 -> 7x7 case in VGG) costs nothing.
  """
  (h, w), (oh, ow) = x.shape[1:3], output_size
  if (h, w) == (oh, ow):
    return x
  if (oh, ow) == (1, 1):
    return jnp.mean(x, axis=(1, 2), keepdims=True)
  mh = jnp.asarray(adaptive_pool_matrix(h, oh), x.dtype)
  mw = jnp.asarray(adaptive_pool_matrix(w, ow), x.dtype)
  return jnp.einsum('oh,nhwc,pw->nopc', mh, x, mw)


def flatten_nchw(x):
  """Flattens (N, H, W, C) in torch's (C, H, W) order, as torch.flatten(x, 1) on NCHW."""
  return jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)


def gaussian_blur(image, sigma: float, truncate: float = 4.0):
  """scipy.ndimage.gaussian_filter1d along H, then along W (mode 'reflect').

  The course's `blur_image`: the same kernel (radius int(truncate * sigma + 0.5)) and the
  same half-sample-symmetric boundary (scipy's 'reflect' is numpy's 'symmetric').

  Args:
    image: (H, W, C).
    sigma: standard deviation in pixels, > 0.
    truncate: the kernel's radius in standard deviations.
  """
  if not float(sigma) > 0 or not np.isfinite(float(sigma)):
    raise InputError(f'blur sigma must be a positive finite number, got {sigma!r}')
  radius = int(truncate * float(sigma) + 0.5)
  taps = np.arange(-radius, radius + 1)
  kernel = np.exp(-0.5 / (float(sigma) ** 2) * taps ** 2)
  kernel = kernel / kernel.sum()
  for axis in (0, 1):
    size = image.shape[axis]
    pad = [(0, 0)] * image.ndim
    pad[axis] = (radius, radius)
    padded = jnp.pad(image, pad, mode='symmetric')
    image = sum(jnp.asarray(w, image.dtype) * jax.lax.slice_in_dim(padded, j, j + size, axis=axis)
                for j, w in enumerate(kernel))
  return image


@functools.lru_cache(maxsize=None)
def bilinear_matrix(size: int, out: int) -> np.ndarray:
  """(out, size) matrix of torch's bilinear resize along one axis (align_corners=False).

  Output sample i reads the input at (i + 0.5) * size / out - 0.5 (half-pixel centres),
  clamped at 0 below, and mixes its two neighbours linearly; the last input repeats past
  the end.
  """
  m = np.zeros((out, size), np.float64)
  src = np.maximum((np.arange(out) + 0.5) * size / out - 0.5, 0.0)
  low = np.minimum(np.floor(src).astype(int), size - 1)
  high = np.minimum(low + 1, size - 1)
  frac = src - low
  np.add.at(m, (np.arange(out), low), 1.0 - frac)
  np.add.at(m, (np.arange(out), high), frac)
  return m


def upsample(maps, size: tuple[int, int]):
  """Bilinear resize of (N, h, w) maps to (N, H, W), as torch's
  `F.interpolate(mode='bilinear', align_corners=False)` (half-pixel centres).

  Two small matrix products (exact adjoint under grad); Grad-CAM's maps go to the image's
  resolution this way.
  """
  maps = jnp.asarray(maps)
  if maps.ndim != 3:
    raise InputError(f'maps must be (N, h, w), got shape {maps.shape}')
  (h, w), (oh, ow) = maps.shape[1:], tuple(int(s) for s in size)
  if min(oh, ow) < 1:
    raise InputError(f'size must be positive, got {size}')
  if (h, w) == (oh, ow):
    return maps
  mh = jnp.asarray(bilinear_matrix(h, oh), maps.dtype)
  mw = jnp.asarray(bilinear_matrix(w, ow), maps.dtype)
  return jnp.einsum('oh,nhw,pw->nop', mh, maps, mw)
