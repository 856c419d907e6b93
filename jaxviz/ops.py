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
  """torch.nn.functional.max_pool2d on NHWC input.

  Ceil mode is a right/bottom padding with -inf just wide enough for the extra window.

  Args:
    x: (N, H, W, C) array.
    kernel, stride, padding: as torch's (square) arguments.
    ceil_mode: round the output size up, as SqueezeNet's pools do.

  Returns:
    (N, H', W', C) array.
  """
  pads, used = [(0, 0)], []
  for size in x.shape[1:3]:
    out = pool_output_size(size, kernel, stride, padding, ceil_mode)
    extent = (out - 1) * stride + kernel - padding  # input rows/cols the windows cover
    used.append(min(extent, size))
    pads.append((padding, max(extent - size, 0)))
  pads.append((0, 0))
  # Floor mode may leave trailing rows unread (odd sizes): crop them rather than pass a
  # negative padding, which reduce_window's gradient rejects.
  x = x[:, :used[0], :used[1]]
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, kernel, kernel, 1),
                               (1, stride, stride, 1), pads)


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
