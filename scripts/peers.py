"""The peer workloads of scripts/benchmark.py --peers: jaxviz against the libraries its
users would otherwise reach for, the same workload on both sides, in one process.

A workload is a jaxviz callable, a peer callable (both block until their result is
computed) and an agreement check of their last outputs (how close they are: reported,
and asserted only by tests/test_benchmark.py where both sides compute the same function
from the same inputs). Both sides get the same random-init float32 weights (a torchvision
model in eval mode whose parameters do not require gradients, and the jaxviz Model
converted from it) and the same images. The peers, by --peer_libraries:

  captum        LayerGradCam (with relu_attributions=True: captum's default is the map
                before the ReLU), GuidedBackprop, IntegratedGradients (gausslegendre, zero
                baselines), NoiseTunnel(Saliency) (smoothgrad, abs=False: Saliency's
                default is the absolute gradient) and Occlusion (zero baselines, one
                perturbation per forward pass, captum's default; a second row at the
                smallest batch with --step_chunk perturbations per pass,
                'captum_batched').
  grad_cam      pytorch-grad-cam's GradCAM with ClassifierOutputTarget.
  torchattacks  FGSM and PGD (L-infinity, random start) on normalised images with
                set_normalization_used(mean, std).
  reference     the repo's own torch implementations (tests/torch_attribution.py,
                tests/torch_attacks.py), written from the papers: the same maths as jaxviz,
                so agreement is float32 round-off; needs no extra package.

In-flight work is matched: jaxviz runs --peer_chunk_size images at a time with
--step_chunk path points (integrated gradients), noisy copies (SmoothGrad) or occluded
images (occlusion) per image per pass, and captum's internal_batch_size /
nt_samples_batch_size are set so that each of its passes holds as many.

Memory: `PeakRSS` samples the resident set (/proc/self/statm) every ~2 ms on a background
thread; each call's peak is taken above the resident set just before it, after returning
freed heap memory to the system (glibc malloc_trim), so a workload's peak is its own and
not a high-water mark of the process (getrusage's ru_maxrss never goes down).
"""

import ctypes
import importlib
import importlib.metadata
import math
import os
import statistics
import threading
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

import jaxviz

LIBRARIES = ('captum', 'grad_cam', 'torchattacks', 'reference')
DEFAULT_LIBRARIES = ('captum', 'grad_cam', 'torchattacks')
_MODULES = {'captum': 'captum', 'grad_cam': 'pytorch_grad_cam', 'torchattacks': 'torchattacks'}
_DISTRIBUTIONS = {'captum': 'captum', 'grad_cam': 'grad-cam', 'torchattacks': 'torchattacks'}
ATTRIBUTION = ('grad_cam', 'guided_backprop', 'integrated_gradients', 'smoothgrad',
               'occlusion')
WORKLOADS = ATTRIBUTION + ('fgsm', 'pgd_linf', 'many_targets', 'sweep', 'ig_memory')
DEFAULT_WORKLOADS = tuple(w for w in WORKLOADS if w != 'ig_memory')
# Which workloads each peer library has an implementation of.
SERVES = {
    'captum': set(ATTRIBUTION) | {'many_targets', 'sweep', 'ig_memory'},
    'grad_cam': {'grad_cam'},
    'torchattacks': {'fgsm', 'pgd_linf'},
    'reference': set(WORKLOADS),
}
MANY_TARGETS = ('grad_cam', 'integrated_gradients', 'occlusion')
# Integrated gradients' working set per path point, in units of one image's forward
# activations (every layer's output, float32): what the backward pass keeps of the forward
# pass plus the transient gradients. Measured on VGG16 at 64 px (9.1 MiB of activations):
# the steady peak grew 42 MiB from 8 to 16 points per pass, 0.58 activations per point;
# 1.0 leaves room for layouts and allocator slack. See `ig_memory_bound_mib`.
IG_POINT_FACTOR = 1.0


def check_libraries(names) -> dict:
  """{library: its version} for the peer libraries asked for; a one-line InputError for
  an unknown one or one that is not installed."""
  versions = {}
  for name in names:
    if name not in LIBRARIES:
      raise jaxviz.InputError(f'--peer_libraries: unknown {name!r}; known: '
                              f'{", ".join(LIBRARIES)}')
    if name == 'reference':
      versions[name] = 'tests/torch_attribution.py, tests/torch_attacks.py'
      continue
    try:
      importlib.import_module(_MODULES[name])
    except ImportError as e:
      raise jaxviz.InputError(f"--peer_libraries={name}: {_MODULES[name]} is not installed "
                              f"({e}); pip install -e '.[bench]'") from None
    versions[name] = importlib.metadata.version(_DISTRIBUTIONS[name])
  return versions


def timed(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def to_torch(x_nhwc):
  import torch
  return torch.from_numpy(np.ascontiguousarray(np.asarray(x_nhwc).transpose(0, 3, 1, 2)))


def _nhwc(t) -> np.ndarray:
  return np.asarray(t.detach().numpy() if hasattr(t, 'detach') else t).transpose(0, 2, 3, 1)


def attack_agreement(jax_pixels, torch_pixels, clean) -> dict:
  """How far jaxviz's adversarial pixels (NHWC) are from torch's (NCHW): the fractions of
  pixels and of whole images within 1e-5 (float32 rounding of a few additions is ~1e-7),
  the largest difference, and the relative difference of the perturbations.

  Where they part, float32 noise has decided a discontinuity of the gradient: a sign step
  taken the other way on a near-zero component moves that pixel by 2 step sizes, and an
  iterate that lands within rounding of a ReLU or max-pool kink gets a gradient that
  differs by percents (then so do all later steps of that image)."""
  j = np.asarray(jax_pixels, np.float64)
  t = np.asarray(torch_pixels, np.float64).transpose(0, 2, 3, 1)
  delta_t = t - np.asarray(clean, np.float64)
  diff = np.abs(j - t)
  return {'pixels_within_1e-5': float(np.mean(diff <= 1e-5)),
          'images_within_1e-5': float(np.mean(np.all(diff <= 1e-5, axis=(1, 2, 3)))),
          'max_abs_diff': float(diff.max()),
          'perturbation_rel_diff': float(np.linalg.norm(j - t) /
                                         max(np.linalg.norm(delta_t), 1e-30))}


def closeness(jax_out, peer_out) -> dict:
  """The same quantity on both sides: the relative L2 difference, the largest difference
  relative to the peer's largest magnitude, and the correlation."""
  j, p = np.asarray(jax_out, np.float64), np.asarray(peer_out, np.float64)
  if j.shape != p.shape:
    raise RuntimeError(f'jaxviz gave shape {j.shape}, the peer {p.shape}')
  scale = max(float(np.abs(p).max()), 1e-30)
  return {'kind': 'same', 'rel_l2': float(np.linalg.norm(j - p) / max(np.linalg.norm(p), 1e-30)),
          'max_abs_rel': float(np.abs(j - p).max() / scale), 'peer_max_abs': scale,
          'correlation': correlation(j, p)}


def correlation(a, b) -> float:
  a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
  a, b = a - a.mean(), b - b.mean()
  return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-300))


def statistical(jax_out, peer_out) -> dict:
  """Different noise on the two sides (SmoothGrad with captum): only similar maps."""
  return {'kind': 'statistical', 'correlation': correlation(jax_out, peer_out)}


def describe(a: dict) -> str:
  """The table's one-cell summary of an agreement."""
  if a['kind'] == 'same':
    return f"rel {a['rel_l2']:.1e}"
  if a['kind'] in ('statistical', 'normalised'):
    return f"corr {a['correlation']:.3f}"
  if a['kind'] == 'attack':
    return f"<=1e-5 {100 * a['pixels_within_1e-5']:.1f}%"
  if a['kind'] == 'success':
    return f"succ {a['jax_success_rate']:.2f}/{a['peer_success_rate']:.2f}"
  return ''


class PeakRSS:
  """The resident set sampled every `interval` s on a daemon thread (Linux /proc/self/statm;
  elsewhere every reading is NaN). `mark()` starts a measurement at the current resident
  set, `growth_mib()` is the peak since above it."""

  def __init__(self, interval: float = 0.002):
    self.interval = interval
    self._page = os.sysconf('SC_PAGE_SIZE') if hasattr(os, 'sysconf') else 4096
    self._lock = threading.Lock()
    self._base = self._peak = self.read()
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)
    self._thread.start()
    try:
      self._trim = ctypes.CDLL('libc.so.6').malloc_trim
    except (OSError, AttributeError):
      self._trim = None

  def read(self) -> float:
    try:
      with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * self._page
    except (OSError, IndexError, ValueError):
      return math.nan

  def _run(self):
    while not self._stop.wait(self.interval):
      value = self.read()
      with self._lock:
        if value > self._peak:
          self._peak = value

  def mark(self):
    if self._trim is not None:
      self._trim(0)  # freed heap back to the system: the baseline is what is live
    with self._lock:
      self._base = self._peak = self.read()

  def growth_mib(self) -> float:
    value = self.read()
    with self._lock:
      return (max(self._peak, value) - self._base) / 2**20

  def close(self):
    self._stop.set()
    self._thread.join()


def measure(jax_fn, peer_fn, repeats: int, budget_s: float, rss: PeakRSS,
            long_call_s: float = 10.0) -> dict:
  """First calls of both (jaxviz's compiles, the peer's warm-up), then up to `repeats`
  alternating rounds, fewer when the rounds so far leave no room for another within
  `budget_s` (at least one); medians, and each side's peak resident-set growth.

  A peer whose first call takes over `long_call_s` is not called again: torch compiles
  nothing, and at that length its warm-up (allocator, oneDNN primitive caches) is lost in
  the noise, so the first call is its timed one ('peer_calls' records how many were)."""
  def call(fn):
    rss.mark()
    seconds = timed(fn)
    return seconds, rss.growth_mib()

  jax_first, jax_first_mib = call(jax_fn)
  peer_first, peer_first_mib = call(peer_fn)
  long_peer = peer_first > long_call_s
  jax_times, peer_times, jax_mib, peer_mib = [], [], [], []
  if long_peer:
    peer_times, peer_mib = [peer_first], [peer_first_mib]
  spent = 0.0
  while len(jax_times) < repeats:
    j, jm = call(jax_fn)
    jax_times.append(j), jax_mib.append(jm)
    spent += j
    if not long_peer:
      p, pm = call(peer_fn)
      peer_times.append(p), peer_mib.append(pm)
      spent += p
    if long_peer or spent + spent / len(jax_times) > budget_s:
      break
  jax_s, peer_s = statistics.median(jax_times), statistics.median(peer_times)
  return {
      'jax_s': jax_s, 'peer_s': peer_s, 'peer_over_jax': peer_s / jax_s,
      'jax_first_call_s': jax_first, 'peer_first_call_s': peer_first,
      'jax_compile_s': max(jax_first - jax_s, 0.0),
      'repeats': len(jax_times), 'peer_calls': len(peer_times),
      'jax_times_s': jax_times, 'peer_times_s': peer_times,
      # Peak resident-set growth above the resident set just before the call, MiB: the
      # first call (jaxviz's includes tracing and compilation) and the steady calls' largest.
      'jax_first_peak_mib': jax_first_mib, 'peer_first_peak_mib': peer_first_mib,
      'jax_peak_mib': max(jax_mib), 'peer_peak_mib': max(peer_mib),
  }


class Context:
  """What every workload reads: both models, the configuration and the inputs."""

  def __init__(self, tmodel, model, cfg: dict, kernels: str):
    import torch
    self.torch = torch
    self.tmodel, self.model, self.cfg, self.kernels = tmodel, model, cfg, kernels
    self.params, self.apply = model.params, model.apply
    self.layer = jaxviz.methods.layers.DEFAULT_LAYERS[model.name]
    self.rng = np.random.default_rng(cfg['seed'])
    self.size = cfg['image_size']
    self.key = jax.random.key(cfg['seed'])
    self.logits_fn = jax.jit(model.apply)
    self.step_chunk = cfg['step_chunk']
    self.chunk_size = cfg['peer_chunk_size']

  def images(self, n: int) -> np.ndarray:
    return self.rng.standard_normal((n, self.size, self.size, 3), np.float32)

  def top_classes(self, x, count: int = 1) -> np.ndarray:
    """Each image's `count` highest-scoring classes ((N,) or (N, count)): non-zero scores,
    so non-zero gradients (a random-init SqueezeNet scores many classes exactly 0)."""
    logits = np.asarray(self.logits_fn(self.params, x))
    order = np.argsort(-logits, axis=-1)[:, :count].astype(np.int32)
    if np.any(np.take_along_axis(logits, order, 1) == 0):
      raise RuntimeError('a top class scores exactly 0 (no gradient)')
    return order[:, 0] if count == 1 else order

  def in_flight(self, n: int, per_image: int) -> int:
    """Path points (or copies, or occluded images) in one jaxviz pass: chunk_size images
    (all n when None) of min(step_chunk, per_image) each."""
    images = n if self.chunk_size is None else min(self.chunk_size, n)
    return images * min(self.step_chunk or per_image, per_image)


def _wait(x):
  return jax.block_until_ready(x)


# The jaxviz side of each attribution method: (N, H, W, 3) images, (N,) labels -> numpy,
# in the layout the agreement compares ((N, h, w) maps, NHWC attributions).
def jax_method(ctx: Context, method: str, steps: int | None = None, chunked: bool = True):
  """chunked=False: all images (or labels) at once, whatever --peer_chunk_size."""
  c, k = ctx.cfg, ctx.kernels
  chunk_size = ctx.chunk_size if chunked else None
  if method == 'grad_cam':
    return lambda x, y: _wait(jaxviz.grad_cam(ctx.model, ctx.params, x, y, cpu_kernels=k))
  if method == 'guided_backprop':
    return lambda x, y: _wait(jaxviz.guided_backprop(ctx.apply, ctx.params, x, y,
                                                     cpu_kernels=k))
  if method == 'integrated_gradients':
    return lambda x, y: _wait(jaxviz.integrated_gradients(
        ctx.apply, ctx.params, x, y, steps=steps or c['ig_steps'], rule='gausslegendre',
        step_chunk=ctx.step_chunk, chunk_size=chunk_size, cpu_kernels=k).attributions)
  if method == 'smoothgrad':
    return lambda x, y: _wait(jaxviz.smoothgrad(
        ctx.apply, ctx.params, x, y, key=ctx.key, samples=c['smoothgrad_samples'],
        noise_level=c['noise_level'], sample_chunk=ctx.step_chunk, chunk_size=chunk_size,
        cpu_kernels=k))
  if method == 'occlusion':
    return lambda x, y: _wait(jaxviz.occlusion(
        ctx.apply, ctx.params, x, y, window=c['occlusion_window'],
        stride=c['occlusion_stride'], fill=0.0, window_chunk=ctx.step_chunk,
        chunk_size=chunk_size, cpu_kernels=k).attribution)
  raise ValueError(method)


def jaxviz_noise(ctx: Context, n: int, samples: int, key=None) -> np.ndarray:
  """The standard normal draws jaxviz.smoothgrad adds to each of n images (N, S, 3, H, W):
  per image its key split from ctx.key, the noise from that key's first half (see
  `jaxviz.methods.smoothgrad.smoothgrad_one`); `key` instead: that one key's."""
  keys = [key] if key is not None else list(jaxviz.validation.split_keys(ctx.key, n))
  shape = (samples, ctx.size, ctx.size, 3)
  return np.stack([np.asarray(jax.random.normal(jax.random.split(k)[0], shape, jnp.float32))
                   for k in keys]).transpose(0, 1, 4, 2, 3)


def sigmas(ctx: Context, x, level: float) -> np.ndarray:
  """SmoothGrad's per-image sigma, noise_level * (max - min), as jaxviz computes it."""
  return level * (x.reshape(len(x), -1).max(1) - x.reshape(len(x), -1).min(1))


def peer_method(ctx: Context, library: str, method: str, steps: int | None = None,
                batched_occlusion: bool = False):
  """The peer side of `method`: a function (N, 3, H, W) torch images, (N,) labels, the
  NHWC numpy images -> numpy in jax_method's layout; it also returns a note of what it
  passes (the JSON records it)."""
  torch, c = ctx.torch, ctx.cfg
  steps = steps or c['ig_steps']
  layer_module = ctx.tmodel.get_submodule(ctx.layer)
  if library == 'reference':
    import torch_attribution as ref
    if method == 'grad_cam':
      # The layer's output needs a graph: no parameter requires gradients, so the input does.
      return (lambda tx, ty, x: ref.grad_cam(ctx.tmodel, tx.clone().requires_grad_(), ty,
                                             ctx.layer).numpy(), {})
    if method == 'guided_backprop':
      return lambda tx, ty, x: _nhwc(ref.guided_backprop(ctx.tmodel, tx, ty)), {}
    if method == 'integrated_gradients':
      return (lambda tx, ty, x: _nhwc(ref.integrated_gradients(
          ctx.tmodel, tx, ty, steps=steps, rule='gausslegendre')[0]),
              {'path_points_per_pass': 'the batch (one path point per backward pass)'})
    if method == 'smoothgrad':
      # jaxviz's own noise, so that the two compute the same average.
      cache = {}

      def run(tx, ty, x):
        if len(x) not in cache:
          cache[len(x)] = torch.from_numpy(jaxviz_noise(ctx, len(x), c['smoothgrad_samples']))
        return _nhwc(ref.smoothgrad(ctx.tmodel, tx, ty, cache[len(x)], c['noise_level']))
      return run, {'noise': "jaxviz's draws"}
    if method == 'occlusion':
      return (lambda tx, ty, x: ref.occlusion(
          ctx.tmodel, tx, ty, c['occlusion_window'], c['occlusion_stride'],
          0.0)['attribution'].numpy(), {'perturbations_per_pass': 1})
  elif library == 'captum':
    import captum.attr as ca
    # Captum's notes that it sets requires_grad on the input and hooks the ReLUs.
    warnings.filterwarnings('ignore', 'Input Tensor 0 did not already require gradients')
    warnings.filterwarnings('ignore', 'Setting backward hooks on ReLU activations')
    if method == 'grad_cam':
      gc = ca.LayerGradCam(ctx.tmodel, layer_module)
      return (lambda tx, ty, x: gc.attribute(tx, target=ty, relu_attributions=True)
              .detach().numpy()[:, 0], {'relu_attributions': True})
    if method == 'guided_backprop':
      # torchvision's ReLUs are in place; captum 0.9.0's hooks handle them (the maps equal
      # those of a copy with inplace=False, and the reference's), so the model is as is.
      gb = ca.GuidedBackprop(ctx.tmodel)
      return lambda tx, ty, x: _nhwc(gb.attribute(tx, target=ty)), {}
    if method == 'integrated_gradients':
      ig = ca.IntegratedGradients(ctx.tmodel)

      def run(tx, ty, x):
        return _nhwc(ig.attribute(tx, baselines=torch.zeros_like(tx), target=ty, n_steps=steps,
                                  method='gausslegendre',
                                  internal_batch_size=ctx.in_flight(len(tx), steps)))
      return run, {'rule': 'gausslegendre', 'internal_batch_size': 'jaxviz in flight'}
    if method == 'smoothgrad':
      nt = ca.NoiseTunnel(ca.Saliency(ctx.tmodel))
      samples = c['smoothgrad_samples']

      def run(tx, ty, x):
        # Captum takes one sigma per input tensor: the batch's mean of jaxviz's per-image
        # sigmas (equal to it at batch 1).
        sigma = float(np.mean(sigmas(ctx, x, c['noise_level'])))
        per_pass = max(1, ctx.in_flight(len(tx), samples) // len(tx))
        return _nhwc(nt.attribute(tx, nt_type='smoothgrad', nt_samples=samples,
                                  nt_samples_batch_size=per_pass, stdevs=sigma, target=ty,
                                  abs=False))
      return run, {'stdevs': "the batch's mean of noise_level * (max - min) per image",
                   'abs': False, 'nt_samples_batch_size': 'jaxviz in flight / batch'}
    if method == 'occlusion':
      oc = ca.Occlusion(ctx.tmodel)
      w, s = c['occlusion_window'], c['occlusion_stride']
      per_eval = ctx.step_chunk if batched_occlusion else 1
      return (lambda tx, ty, x: oc.attribute(
          tx, sliding_window_shapes=(3, w, w), strides=(3, s, s), baselines=0, target=ty,
          perturbations_per_eval=per_eval).detach().numpy()[:, 0],
              {'perturbations_per_eval': per_eval})
  raise ValueError((library, method))


def attribution_row(ctx: Context, library: str, method: str, n: int, batched=False):
  x = ctx.images(n)
  y = ctx.top_classes(x)
  tx, ty = to_torch(x), ctx.torch.from_numpy(y.astype(np.int64))
  jfn = jax_method(ctx, method)
  pfn, note = peer_method(ctx, library, method, batched_occlusion=batched)
  last = {}
  jax_call = lambda: last.__setitem__('jax', np.asarray(jfn(x, y)))
  peer_call = lambda: last.__setitem__('peer', pfn(tx, ty, x))

  def agree():
    if method == 'smoothgrad' and library != 'reference':
      return statistical(last['jax'], last['peer'])
    return closeness(last['jax'], last['peer'])
  return jax_call, peer_call, agree, dict(note, images=n)


def grad_cam_library_row(ctx: Context, n: int):
  """pytorch-grad-cam's GradCAM: min-max normalised per image and resized with cv2 to
  the input, then (its aggregation over target layers, one here) min-max normalised
  again; jaxviz's map gets the same steps before the comparison."""
  import cv2
  from pytorch_grad_cam import GradCAM
  from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
  x = ctx.images(n)
  y = ctx.top_classes(x)
  # Its hooks need a graph: with no parameter requiring gradients, the input must.
  tx = to_torch(x).requires_grad_()
  targets = [ClassifierOutputTarget(int(t)) for t in y]
  jfn = jax_method(ctx, 'grad_cam')
  cam = GradCAM(model=ctx.tmodel, target_layers=[ctx.tmodel.get_submodule(ctx.layer)])
  last = {}

  def min_max(m):
    m = m - m.min()
    return m / (1e-7 + m.max())

  def scaled(maps):  # per layer: scaled and resized; then, over the layers, scaled again
    return np.stack([min_max(np.maximum(cv2.resize(min_max(m), (ctx.size, ctx.size)), 0))
                     for m in np.asarray(maps, np.float32)])

  def agree():
    cam.activations_and_grads.release()  # its hooks off the shared model
    j, p = scaled(last['jax']), last['peer']
    return {'kind': 'normalised', 'max_abs_diff': float(np.abs(j - p).max()),
            'correlation': correlation(j, p)}
  return (lambda: last.__setitem__('jax', np.asarray(jfn(x, y))),
          lambda: last.__setitem__('peer', cam(input_tensor=tx, targets=targets)),
          agree, {'images': n, 'compared': "jaxviz's map min-max scaled and cv2-resized, "
                  'as pytorch-grad-cam does'})


def attack_row(ctx: Context, library: str, name: str, n: int):
  """FGSM or PGD-Linf (--attack_steps, random start, no early stop) on sigmoid pixels,
  untargeted, away from the model's own predictions; step size 2.5 epsilon / steps."""
  import torch
  from jaxviz.methods import attacks
  c = ctx.cfg
  mean = np.asarray(jaxviz.IMAGENET_MEAN, np.float32)
  std = np.asarray(jaxviz.IMAGENET_STD, np.float32)
  clean = (1 / (1 + np.exp(-ctx.images(n)))).astype(np.float32)
  x = (clean - mean) / std
  clean = np.asarray(jnp.clip(jnp.asarray(x) * std + mean, 0, 1))
  labels = np.asarray(jnp.argmax(ctx.logits_fn(ctx.params, x), -1)).astype(np.int32)
  tx, ty = to_torch(clean), torch.from_numpy(labels.astype(np.int64))
  f32 = lambda v: float(np.float32(v))
  epsilon = f32(c['attack_epsilon'])
  steps = 1 if name == 'fgsm' else c['attack_steps']
  step_size = f32(epsilon if name == 'fgsm' else 2.5 * epsilon / steps)
  args = dict(epsilon=epsilon, norm='linf', mean=mean, std=std, cpu_kernels=ctx.kernels)
  if name == 'fgsm':
    jfn = lambda: jaxviz.fgsm(ctx.apply, ctx.params, x, labels, **args)
  else:
    jfn = lambda: jaxviz.pgd(ctx.apply, ctx.params, x, labels, steps=steps,
                             step_size=step_size, key=ctx.key, **args)
  note = {'images': n, 'steps': steps, 'epsilon': epsilon, 'step_size': step_size}
  if library == 'reference':
    import torch_attacks
    if name == 'fgsm':
      pfn = lambda: torch_attacks.fgsm(ctx.tmodel, tx, ty, epsilon, mean, std)
    else:  # from jaxviz's own random start, drawn here outside the timing
      keys = jaxviz.validation.split_keys(ctx.key, n)
      start = to_torch(jax.vmap(lambda k, p: attacks.start_point(
          k, p, jnp.float32(epsilon), 'linf'))(keys, jnp.asarray(clean)))
      pfn = lambda: torch_attacks.pgd(ctx.tmodel, tx, ty, epsilon, step_size, steps, mean,
                                      std, norm='linf', start=start)
      note['start'] = "jaxviz's"
  else:
    import torchattacks
    if name == 'fgsm':
      atk = torchattacks.FGSM(ctx.tmodel, eps=epsilon)
    else:
      atk = torchattacks.PGD(ctx.tmodel, eps=epsilon, alpha=step_size, steps=steps,
                             random_start=True)
      note['start'] = 'its own (torch.rand)'
    # torchattacks 3.5.1: with set_normalization_used, the attack takes *normalised*
    # images, attacks their pixels (inputs * std + mean) and returns normalised images.
    atk.set_normalization_used(mean=[float(v) for v in mean], std=[float(v) for v in std])
    tx_normalised = to_torch(x)
    tmean, tstd = (torch.from_numpy(v).view(1, 3, 1, 1) for v in (mean, std))
    pfn = lambda: atk(tx_normalised, ty) * tstd + tmean
    note['torchattacks_input'] = 'normalised images (set_normalization_used)'
  last = {}

  def jax_call():
    last['jax'] = r = _wait(jfn())
    if not np.all(np.asarray(r.steps) == steps):
      raise RuntimeError(f'{name}: jaxviz took {r.steps} steps, not {steps}')

  def agree():
    out = attack_agreement(last['jax'].pixels, last['peer'].numpy(), clean)
    tmean, tstd = (torch.from_numpy(v).view(1, 3, 1, 1) for v in (mean, std))
    with torch.no_grad():
      peer_pred = ctx.tmodel((last['peer'] - tmean) / tstd).argmax(1).numpy()
    out.update(jax_success_rate=float(np.mean(np.asarray(last['jax'].success))),
               peer_success_rate=float(np.mean(peer_pred != labels)))
    # Different random starts (torchattacks): the success rates are what compare.
    out['kind'] = 'attack' if name == 'fgsm' or library == 'reference' else 'success'
    return out
  return jax_call, lambda: last.__setitem__('peer', pfn()), agree, note


def many_targets_row(ctx: Context, library: str, method: str):
  """One image, --targets classes (its highest-scoring): jaxviz in one call of the image
  with all the labels (the targets share its forward passes: `jaxviz.attribute`), the
  peer in a Python loop over the targets at batch 1, as its users write it."""
  torch = ctx.torch
  x = ctx.images(1)
  targets = ctx.top_classes(x, ctx.cfg['targets'])[0]
  tx = to_torch(x)
  jfn = jax_method(ctx, method, chunked=False)  # the labels in one chunk: one forward
  pfn, note = peer_method(ctx, library, method)
  last = {}

  def peer_call():
    last['peer'] = np.concatenate([pfn(tx, torch.tensor([int(t)]), x) for t in targets])
  return (lambda: last.__setitem__('jax', np.asarray(jfn(x, targets))), peer_call,
          lambda: closeness(last['jax'], last['peer']),
          dict(note, images=1, targets=len(targets)))


def sweep_row(ctx: Context, library: str):
  """One image, --sweep_levels SmoothGrad noise levels: jaxviz vmaps smoothgrad_one over
  the levels in one compiled call; the peer loops over them."""
  torch, c = ctx.torch, ctx.cfg
  from jaxviz.methods.smoothgrad import smoothgrad_one
  x = ctx.images(1)
  y = ctx.top_classes(x)
  tx, ty = to_torch(x), torch.from_numpy(y.astype(np.int64))
  levels = np.linspace(0.05, 0.4, c['sweep_levels']).astype(np.float32)
  samples, chunk = c['smoothgrad_samples'], ctx.step_chunk
  # The vmap over the levels multiplies the copies in flight: step_chunk // levels copies
  # per level keep them at step_chunk (with all 8 x 25 at once, SqueezeNet at 224 px took
  # 38 s, 3x captum's loop: memory traffic; docs/performance.md).
  per_level = None if chunk is None else max(1, chunk // len(levels))
  fn = jax.jit(jax.vmap(lambda p, s, image, label: smoothgrad_one(
      ctx.model, p, image, label, ctx.key, samples=samples, noise_level=s,
      sample_chunk=per_level), in_axes=(None, 0, None, None)),
      compiler_options=jaxviz.compiler_options(ctx.kernels))
  image, label = jnp.asarray(x[0]), jnp.int32(y[0])
  last = {}
  if library == 'reference':
    import torch_attribution as ref
    eps = torch.from_numpy(jaxviz_noise(ctx, 1, samples, key=ctx.key))
    peer_one = lambda s: _nhwc(ref.smoothgrad(ctx.tmodel, tx, ty, eps, float(s)))
    note = {'noise': "jaxviz's draws"}
  else:
    import captum.attr as ca
    nt = ca.NoiseTunnel(ca.Saliency(ctx.tmodel))
    peer_one = lambda s: _nhwc(nt.attribute(
        tx, nt_type='smoothgrad', nt_samples=samples,
        nt_samples_batch_size=min(chunk or samples, samples),
        stdevs=float(sigmas(ctx, x, float(s))[0]), target=ty, abs=False))
    note = {'abs': False, 'nt_samples_batch_size': min(chunk or samples, samples)}

  def agree():
    j, p = last['jax'], last['peer']
    if library == 'reference':
      return closeness(j, p)
    return {'kind': 'statistical',
            'correlation': float(np.mean([correlation(a, b) for a, b in zip(j, p)]))}
  return (lambda: last.__setitem__('jax', np.asarray(_wait(fn(ctx.params, levels, image,
                                                              label)))),
          lambda: last.__setitem__('peer', np.concatenate([peer_one(s) for s in levels])),
          agree, dict(note, images=1, levels=[float(v) for v in levels], samples=samples,
                      jax_sample_chunk=per_level))


def activation_mib(model, size: int) -> float:
  """Every layer's output for one (size, size, 3) image, float32, MiB: a forward pass's
  activations (jax.eval_shape; nothing is computed)."""
  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  names = [n for n in model.layer_names
           if not any(o != n and o.startswith(n + '.') for o in model.layer_names)]
  shapes = jax.eval_shape(lambda p, x: model.intermediates(p, x, names)[1], model.params, x)
  return sum(math.prod(s.shape) * 4 for s in jax.tree.leaves(shapes)) / 2**20


def ig_memory_bound_mib(model, size: int, step_chunk: int) -> float:
  """Integrated gradients' stated memory bound at batch 1 and chunk_size 1: the model's
  weights once (a copy the program may make) plus step_chunk path points of IG_POINT_FACTOR
  forward activations each. It does not grow with the step count: the chunks run one
  after the other inside the compiled program. VGG16 at 224 px, step_chunk 32: 528 MiB +
  32 x 109 MiB = 3.9 GiB (measured: 2.2 GiB for 200 steps, 0.55 activations a point). It
  bounds a steady call; the first adds XLA's compilation (160 MiB for VGG16 at 224 px),
  once per process."""
  weights = sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(model.params)) / 2**20
  return weights + step_chunk * IG_POINT_FACTOR * activation_mib(model, size)


def ig_memory_row(ctx: Context, library: str):
  """Integrated gradients of one image with --ig_memory_steps steps, --step_chunk at a
  time, against the stated bound; the peer with internal_batch_size = --step_chunk."""
  c, torch = ctx.cfg, ctx.torch
  steps = c['ig_memory_steps']
  x = ctx.images(1)
  y = ctx.top_classes(x)
  tx, ty = to_torch(x), torch.from_numpy(y.astype(np.int64))
  jfn = jax_method(ctx, 'integrated_gradients', steps=steps)
  pfn, note = peer_method(ctx, library, 'integrated_gradients', steps=steps)
  bound = c['ig_memory_bound_mib'] or ig_memory_bound_mib(ctx.model, ctx.size,
                                                          ctx.step_chunk or steps)
  last = {}

  def agree():
    return closeness(last['jax'], last['peer'])
  return (lambda: last.__setitem__('jax', np.asarray(jfn(x, y))),
          lambda: last.__setitem__('peer', pfn(tx, ty, x)), agree,
          dict(note, images=1, steps=steps, step_chunk=ctx.step_chunk,
               bound_mib=bound, activation_mib=activation_mib(ctx.model, ctx.size)))


def rows_for(ctx: Context, libraries, workloads):
  """(workload, method, peer, batch, builder) for every row that the libraries serve."""
  batches = ctx.cfg['peer_batch_sizes']
  largest = max(batches)
  for w in workloads:
    for lib in libraries:
      if w not in SERVES[lib]:
        continue
      if w in ATTRIBUTION and lib != 'grad_cam':
        for n in batches:
          yield w, w, lib, n, lambda lib=lib, w=w, n=n: attribution_row(ctx, lib, w, n)
          if w == 'occlusion' and lib == 'captum' and n == min(batches):
            yield (w, w, 'captum_batched', n,
                   lambda w=w, n=n: attribution_row(ctx, 'captum', w, n, batched=True))
      elif w == 'grad_cam':  # pytorch-grad-cam
        yield w, w, lib, largest, lambda: grad_cam_library_row(ctx, largest)
      elif w in ('fgsm', 'pgd_linf'):
        yield w, w, lib, largest, lambda lib=lib, w=w: attack_row(ctx, lib, w, largest)
      elif w == 'many_targets':
        for m in MANY_TARGETS:
          yield w, m, lib, 1, lambda lib=lib, m=m: many_targets_row(ctx, lib, m)
      elif w == 'sweep':
        yield w, 'smoothgrad', lib, 1, lambda lib=lib: sweep_row(ctx, lib)
      elif w == 'ig_memory':
        yield w, 'integrated_gradients', lib, 1, lambda lib=lib: ig_memory_row(ctx, lib)


def _nothing():
  pass


def run(tmodel, model, cfg: dict, kernels: str, libraries, workloads) -> list:
  """Every row: its timings, peaks and agreement, in --peer_workloads order."""
  ctx = Context(tmodel, model, cfg, kernels)
  rss = PeakRSS()
  rows = []
  try:
    sides = cfg.get('peer_sides', 'both')
    for workload, method, peer, batch, build in rows_for(ctx, libraries, workloads):
      jax_fn, peer_fn, agree, note = build()
      if sides != 'both':  # one side alone in this process: the other is a no-op
        jax_fn, peer_fn = (jax_fn, _nothing) if sides == 'jax' else (_nothing, peer_fn)
        agree = lambda: {'kind': 'none'}
      r = measure(jax_fn, peer_fn, cfg['repeats'], cfg['round_budget_s'], rss)
      row = dict(workload=workload, method=method, peer=peer, batch=batch, **r,
                 agreement=agree(), **note)
      if workload == 'ig_memory':
        # A steady call's working set; the first call adds XLA's compilation, once per process.
        row['jax_within_bound'] = bool(r['jax_peak_mib'] <= row['bound_mib'])
      rows.append(row)
      print(f'  {workload}/{method} vs {peer} at batch {batch}: jax {r["jax_s"]:.3f} s, '
            f'peer {r["peer_s"]:.3f} s, {describe(row["agreement"])}', flush=True)
  finally:
    rss.close()
  return rows


def print_table(name: str, rows: list):
  print(f"\n{name}: jaxviz against its peers (s: medians of steady calls; MiB: peak "
        'resident-set growth of a steady call)')
  print(f"{'workload':<34}{'peer':<15}{'batch':>5}{'jax s':>9}{'peer s':>9}{'peer/jax':>9}"
        f"{'jax 1st s':>10}{'jax MiB':>9}{'peer MiB':>9}  agreement")
  for r in rows:
    label = r['workload'] if r['workload'] == r['method'] else f"{r['workload']}/{r['method']}"
    print(f"{label:<34}{r['peer']:<15}{r['batch']:>5}{r['jax_s']:>9.3f}{r['peer_s']:>9.3f}"
          f"{r['peer_over_jax']:>8.2f}x{r['jax_first_call_s']:>10.2f}{r['jax_peak_mib']:>9.0f}"
          f"{r['peer_peak_mib']:>9.0f}  {describe(r['agreement'])}")
  for r in rows:
    if r['workload'] == 'ig_memory':
      print(f"integrated gradients, {r['steps']} steps, {r['step_chunk']} at a time: jaxviz "
            f"peak {r['jax_peak_mib']:.0f} MiB (first call, compiling: "
            f"{r['jax_first_peak_mib']:.0f}), bound "
            f"{r['bound_mib']:.0f} MiB: {'within' if r['jax_within_bound'] else 'EXCEEDED'}; "
            f"{r['peer']} {max(r['peer_first_peak_mib'], r['peer_peak_mib']):.0f} MiB")
