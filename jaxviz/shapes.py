"""A synthetic, labelled image set with ground-truth object masks, generated from a seed.

Each image holds one object of one of ten shape classes, of random colour, size, position
and rotation, on a textured background (smooth colour noise plus stripes and pixel noise)
with distractors (thin line segments and small dots of random colours). The classes differ
only by silhouette, so a classifier must look at the object: colour, size, position and
texture carry no label information. Distractors keep two pixels clear of the object, so its
outline, and hence the mask, is exact.

No files: `generate(n, seed)` is a pure function of its arguments: image i is drawn from
the PRNG key fold_in(key(seed), i), so `generate(n, seed)` starts with `generate(k, seed)`
for k < n. It is a jit-compiled JAX program (about 0.6 ms an image on two CPU cores,
measured), so training draws fresh images for every step (`sample`). Used to train the
"shapes" model and to evaluate attribution methods against the masks (`jaxviz.metrics`).
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz.errors import InputError

CLASS_NAMES = ('circle', 'ring', 'square', 'triangle', 'star', 'cross', 'crescent', 'ell',
               'hourglass', 'dumbbell')
IMAGE_SIZE = 64
# Normalisation of the shapes model: pixels in [0, 1] -> (x - 0.5) / 0.25, roughly zero
# mean and unit variance over the generated images.
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)
# Object radius in pixels at IMAGE_SIZE 64 (scaled with the image size): large enough for a
# star's points to be resolved, small enough that an object covers ~10% of the image and
# the image centre lies on it only rarely (the pointing game's centre baseline).
RADIUS = (10.0, 16.0)
DISTRACTORS = 6


class ShapesData(NamedTuple):
  """images: (N, H, W, 3) uint8; labels: (N,) int32 indices into CLASS_NAMES; masks:
  (N, H, W) bool, True on the object's pixels."""
  images: np.ndarray
  labels: np.ndarray
  masks: np.ndarray


def _shape_tests(u, v):
  """(10, ...) whether object-frame points (u, v) (radius units, v up) lie in each shape,
  in CLASS_NAMES order."""
  rho2 = u * u + v * v
  au, av = jnp.abs(u), jnp.abs(v)
  box = jnp.maximum(au, av)
  # Triangle: equilateral, inscribed in a circle of radius 1.1.
  reach = jnp.max(jnp.stack([u * np.cos(a) + v * np.sin(a)
                             for a in np.deg2rad([-90.0, 30.0, 150.0])]), axis=0)
  # Star: five points, outer radius 1, inner 0.42. Fold the angle into [0, pi/5]; inside
  # when on the origin's side of the edge from the tip (1, 0) to the inner vertex.
  sector = 2 * np.pi / 5
  a = jnp.abs(jnp.mod(jnp.arctan2(v, u) + sector / 2, sector) - sector / 2)
  rho = jnp.sqrt(rho2)
  px, py = rho * jnp.cos(a), rho * jnp.sin(a)
  ix, iy = 0.42 * np.cos(sector / 2), 0.42 * np.sin(sector / 2)
  return jnp.stack([
      rho2 <= 1.0,                                                         # circle
      (rho2 <= 1.0) & (rho2 >= 0.55 ** 2),                                 # ring
      box <= 0.78,                                                         # square
      reach <= 0.55,                                                       # triangle
      (ix - 1.0) * py - iy * (px - 1.0) >= 0.0,                            # star
      ((au <= 0.3) & (av <= 0.95)) | ((av <= 0.3) & (au <= 0.95)),         # cross
      (rho2 <= 1.0) & ((u - 0.5) ** 2 + v * v >= 0.8 ** 2),                # crescent
      (((u >= -0.8) & (u <= -0.28) & (av <= 0.9))                          # ell
       | ((u >= -0.8) & (u <= 0.8) & (v >= -0.9) & (v <= -0.38))),
      (av <= 0.9) & (au <= 0.08 + 0.8 * av),                               # hourglass
      (((au - 0.6) ** 2 + v * v <= 0.38 ** 2)                              # dumbbell
       | ((au <= 0.6) & (av <= 0.15))),
  ])


def _upsample_matrix(coarse: int, size: int) -> np.ndarray:
  """(size, coarse) bilinear interpolation matrix, pixel centres aligned to the corners."""
  pos = np.linspace(0, coarse - 1, size)
  lo = np.minimum(np.floor(pos).astype(int), coarse - 2)
  frac = pos - lo
  m = np.zeros((size, coarse), np.float32)
  m[np.arange(size), lo] = 1 - frac
  m[np.arange(size), lo + 1] = frac
  return m


def _contrasting_colour(key, base):
  """A uniform random RGB colour at least 0.45 (Euclidean) from `base`: the first of 16
  draws that is, else the far corner of the colour cube."""
  draws = jax.random.uniform(key, (16, 3))
  ok = jnp.linalg.norm(draws - base, axis=-1) >= 0.45
  far = jnp.where(base < 0.5, 1.0, 0.0)
  return jnp.where(ok.any(), draws[jnp.argmax(ok)], far)


def _one(key, label, size: int):
  """One (image float32 (size, size, 3) in [0, 1], mask) of class `label`."""
  scale = size / 64.0
  keys = iter(jax.random.split(key, 20))
  centres = jnp.arange(size, dtype=jnp.float32) + 0.5
  ys, xs = centres[:, None], centres[None, :]
  uniform = lambda shape=(), lo=0.0, hi=1.0: jax.random.uniform(next(keys), shape, jnp.float32,
                                                               lo, hi)

  # Background: smooth colour noise around a base colour, plus faint stripes.
  base = uniform((3,), 0.15, 0.85)
  up = jnp.asarray(_upsample_matrix(5, size))
  noise = jnp.einsum('hi,ijc,wj->hwc', up, uniform((5, 5, 3), -0.18, 0.18), up)
  angle, phase = uniform((), 0.0, np.pi), uniform((), 0.0, 2 * np.pi)
  freq = uniform((), 0.05, 0.2) / scale
  stripes = 0.07 * jnp.sin(2 * np.pi * freq * (xs * jnp.cos(angle) + ys * jnp.sin(angle))
                           + phase)
  image = base + noise + stripes[..., None]

  # The object, in its own frame (radius units, v pointing up the image).
  radius = uniform((), *RADIUS) * scale
  cx, cy = uniform((2,), 0.0, 1.0) * (size - 2 * radius - 2) + radius + 1
  theta = uniform((), 0.0, 2 * np.pi)
  dx, dy = (xs - cx) / radius, (cy - ys) / radius
  u = jnp.cos(theta) * dx + jnp.sin(theta) * dy
  v = -jnp.sin(theta) * dx + jnp.cos(theta) * dy
  mask = _shape_tests(u, v)[label]
  # Distractors keep two pixels clear of the object, so its outline stays exact.
  reach = max(1, round(2 * scale))
  near = jax.lax.reduce_window(mask, False, jnp.logical_or, (2 * reach + 1,) * 2, (1, 1),
                               'SAME')

  # Distractors: line segments (length 6-16 px, ~1.5 px wide) and dots (radius 1-2.5 px).
  k = DISTRACTORS
  colours = uniform((k, 3))
  is_line = uniform((k,)) < 0.6
  start = uniform((k, 2), 0.0, size)
  length = jnp.where(is_line, uniform((k,), 6.0, 16.0), 0.0) * scale
  phi = uniform((k,), 0.0, np.pi)
  width = jnp.where(is_line, 0.75, uniform((k,), 1.0, 2.5)) * scale
  ex, ey = (length * jnp.cos(phi))[:, None, None], (length * jnp.sin(phi))[:, None, None]
  px, py = xs - start[:, 0, None, None], ys - start[:, 1, None, None]
  t = jnp.clip((px * ex + py * ey) / jnp.maximum(ex * ex + ey * ey, 1e-9), 0.0, 1.0)
  hit = ((px - t * ex) ** 2 + (py - t * ey) ** 2 <= width[:, None, None] ** 2) & ~near
  for i in range(k):  # later distractors cover earlier ones
    image = jnp.where(hit[i][..., None], colours[i], image)

  image = jnp.where(mask[..., None], _contrasting_colour(next(keys), base), image)
  # Pixel noise, uniform with std 0.03: 8 random bits a value (a Gaussian costs a 32-bit
  # draw and a transcendental each, and was half of the generation time).
  bits = jax.random.bits(next(keys), image.shape, jnp.uint8).astype(jnp.float32)
  image = image + (bits / 255.0 - 0.5) * (0.03 * np.sqrt(12.0))
  return jnp.clip(image, 0.0, 1.0), mask


def labels_for(n: int, seed) -> np.ndarray:
  """The classes of `generate(n, seed)`: image i has class (i + offset) % 10 (balanced;
  the offset comes from the seed)."""
  offset = int(jax.random.randint(jax.random.key(seed_int(seed)), (), 0, len(CLASS_NAMES)))
  return ((np.arange(n) + offset) % len(CLASS_NAMES)).astype(np.int32)


def seed_int(seed) -> int:
  """An int seed from an int or a tuple of ints (training uses (seed, split, ...))."""
  if isinstance(seed, (tuple, list)):
    return int(np.random.SeedSequence([int(s) for s in seed]).generate_state(1)[0])
  return int(seed)


@functools.partial(jax.jit, static_argnames='size')
def sample(key, indices, labels, size: int = IMAGE_SIZE):
  """Images `indices` of the stream `key`, of classes `labels`, inside jit.

  Returns:
    (uint8 images (N, size, size, 3), bool masks (N, size, size)).
  """
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(indices)
  images, masks = jax.vmap(_one, in_axes=(0, 0, None))(keys, labels, size)
  return jnp.round(images * 255).astype(jnp.uint8), masks


def generate(n: int, seed=0, size: int = IMAGE_SIZE, chunk: int = 64) -> ShapesData:
  """`n` labelled images with object masks, a pure function of (n, seed, size).

  Args:
    n: number of images.
    seed: an int, or a tuple of ints (the shapes model trains on (seed, 0) and is tested
      on (seed, 1); evaluate on other seeds).
    size: image side in pixels (objects and distractors scale with it).
    chunk: images per compiled call; every call has this shape (the last is padded), so
      the generator compiles once per size, whatever n.

  Returns:
    A `ShapesData`; classes are balanced and cycle through CLASS_NAMES.
  """
  if int(n) != n or n < 0:
    raise InputError(f'n must be a non-negative integer, got {n}')
  if size < 32:
    raise InputError(f'size must be at least 32 pixels, got {size}')
  labels = labels_for(n, seed)
  key = jax.random.key(seed_int(seed))
  images, masks = [], []
  for start in range(0, n, chunk):
    idx = np.arange(start, min(start + chunk, n), dtype=np.int32)
    pad = chunk - len(idx)  # one compiled shape for every call
    im, m = sample(key, np.pad(idx, (0, pad)), np.pad(labels[idx], (0, pad)), size)
    images.append(np.asarray(im)[:len(idx)])
    masks.append(np.asarray(m)[:len(idx)])
  if not images:
    return ShapesData(np.zeros((0, size, size, 3), np.uint8), labels,
                      np.zeros((0, size, size), bool))
  return ShapesData(np.concatenate(images), labels, np.concatenate(masks))
