"""SmoothGrad (Smilkov et al. 2017): any attribution method, averaged over noisy copies
of the image."""

import jax

from jaxviz import parallel, validation
from jaxviz.errors import InputError
from jaxviz.methods.attribution import attribute, attribution, resolve


def check_options(base, samples, noise_level, sample_chunk):
  validation.check_positive(samples, 'samples', integer=True)
  validation.check_positive(noise_level, 'noise_level', zero=True)
  validation.check_chunk_size(sample_chunk)
  if isinstance(base, str) and base == 'smoothgrad':
    raise InputError('smoothgrad of smoothgrad: pass a base method')
  return resolve(base)


@attribution('smoothgrad')
def smoothgrad_one(apply_fn, params, image, label, key, *, base='gradient',
                   samples: int = 50, noise_level=0.15, squared: bool = False,
                   sample_chunk: int | None = 32):
  """SmoothGrad of the `base` method for one image: the mean of its attributions of
  image + N(0, sigma^2) over `samples` draws, sigma = noise_level * (max - min of the
  image) (eq. 3); with squared=True, the mean of their squares (SmoothGrad-Squared).

  The noise is `jax.random.normal(jax.random.split(key)[0], (samples, H, W, 3))`; the
  base method's keys are split from the second half. `noise_level` may be traced (vmap
  over it for a sweep).

  Args:
    apply_fn, params, image, label, key: the attribution protocol's.
    base: a registered method's name or a per-example function (default: the
      gradient).
    samples: noisy copies.
    noise_level: sigma as a fraction of the image's value range (the paper's 10-20%).
    squared: average the squared attributions.
    sample_chunk: at most this many copies at a time (bounds memory; None: all).

  References:
    Smilkov, Thorat, Kim, Viegas & Wattenberg, SmoothGrad: removing noise by adding
    noise, arXiv:1706.03825, 2017, eq. 3 and sec. 3.
  """
  base = check_options(base, samples, noise_level, sample_chunk)
  validation.check_image(image)
  noise_key, method_key = jax.random.split(key)
  sigma = noise_level * (image.max() - image.min())
  noise = jax.random.normal(noise_key, (samples, *image.shape), image.dtype)
  keys = jax.random.split(method_key, samples)

  def chunk(xs):
    def one(eps, k):
      a = base(apply_fn, params, image + sigma * eps, label, k)
      return a * a if squared else a
    return jax.vmap(one)(*xs)

  return parallel.map_chunks(chunk, (noise, keys), sample_chunk).mean(axis=0)


def smoothgrad(apply_fn, params, images, labels, *, key=None, method='gradient',
               samples: int = 50, noise_level: float = 0.15, squared: bool = False,
               sample_chunk: int | None = 32, chunk_size: int | None = None,
               devices: parallel.Devices = None, cpu_kernels: str | None = None):
  """`smoothgrad_one` over a batch: (N, H, W, 3) images, (N,) labels -> the base
  method's attributions averaged, (N, H, W, 3) for pixel methods. `method` is the base
  method (`smoothgrad_one`'s `base`; `jaxviz.attribute('smoothgrad', ..., base=...)`).
  `key` as in `jaxviz.attribute` (one per image split from it); the same key gives the
  same maps."""
  check_options(method, samples, noise_level, sample_chunk)
  return attribute(smoothgrad_one, apply_fn, params, images, labels, key=key, reduce=None,
                   chunk_size=chunk_size, devices=devices, cpu_kernels=cpu_kernels,
                   base=method, samples=int(samples), noise_level=float(noise_level),
                   squared=bool(squared), sample_chunk=sample_chunk)
