"""jaxviz against the course's PyTorch eager code, in one process, on this machine.

  python scripts/benchmark.py [--models=squeezenet1_1,vgg16] [--repeats=3] [--quick]
      [--workloads=methods,gradient_step,attacks] [--threads=N]
      [--cpu_kernels=model|xla|eigen] [--conv_profile_batch=B]
      [--output_json=outputs/benchmark.json]
  python scripts/benchmark.py --peers [--peer_libraries=captum,grad_cam,torchattacks]
      [--peer_workloads=...] [--peer_batch_sizes=1,16] [--targets=16] [--sweep_levels=8]
      [--ig_steps=50] [--smoothgrad_samples=50] [--step_chunk=32] [--peer_chunk_size=1]
      [--round_budget_s=120] [--ig_memory_steps=200] [--ig_memory_bound_mib=0] [--quick]

Both sides get the same random-init torchvision weights (float32, converted for jaxviz)
and the same inputs. Measured, alternating jaxviz and torch calls so that machine drift
hits both alike (medians of --repeats rounds, after one warm-up call each):

  1. the three methods: saliency of a batch (one batched backward in torch, as the
     course), fooling with a fixed step count (a learning rate so small that nothing
     flips; torch one image at a time, as the course; jaxviz with its default chunking,
     one while_loop per image on CPU, or --chunk_size), class visualisation with jitter,
     blur and clamp (torch: tests/torch_course.py, jitters drawn with python `random`).
     The first call of each is timed apart; "compile s" is it less a steady call.
  2. the achieved FLOP rate of one input-gradient step (saliency of one image): FLOPs
     from XLA's cost analysis of the compiled jaxviz program, over measured time, as a
     share of this machine's float32 GEMM rate (a large matmul timed here, best of jax
     and torch);
  3. the gradient step's throughput (images/s) against batch size;
  4. the cost of a step inside jaxviz's loops against the same gradient step jitted on
     its own (batch 1 of item 3): fooling's time per image-step, class visualisation's
     per step and PGD's per image-step (item 5), divided by it. Near 1 the loops add
     nothing; XLA:CPU once made it 1.5-2.7 (see jaxviz/_xla_cpu/canonical.py).
  5. the attacks on a batch of --attack_batch images (untargeted, away from the model's
     own predictions): FGSM, and PGD with L-infinity and L2 budgets for a fixed
     --attack_steps (random start, no early stop), against tests/torch_attacks.py (one
     batched backward per step, as attack libraries do); jaxviz with its default
     chunking (one loop per image on CPU) or --chunk_size. Both sides start PGD from the
     same random point of the ball (jaxviz's start_point, drawn outside the timing for
     torch). The adversarial images are compared: the fraction of pixels within 1e-5 of
     each other and the largest difference (reported, not asserted: in float32 a
     near-zero gradient component can take the other sign, which moves that pixel by
     two step sizes, and an iterate within rounding of a ReLU or max-pool kink gets a
     gradient that differs by percents, which changes every later step).
  6. with --conv_profile_batch=B, a profile of the gradient step at batch B: every
     convolution of its program (forward and input gradient) compiled and timed alone at
     its own shapes with the same kernels, their sum against the whole step, so the rest
     is what the step spends outside the convolutions; and the largest of them with
     their FLOP rates.

Memory: "max RSS" is the process's peak resident set (getrusage) after a workload's first
calls; it never goes down, so its growth is attributable to a workload only when that
workload sets a new peak. --workloads picks the groups that run: methods (item 1),
gradient_step (items 2-4; item 4 also needs methods or attacks) and attacks (item 5). Prints
fixed-width tables; writes JSON to --output_json.

--peers runs, instead of the course workloads, jaxviz against the libraries its users
would otherwise use (pip install -e '.[bench]'; scripts/peers.py has the adapters and what
each passes): Grad-CAM, guided backprop, integrated gradients (--ig_steps, gausslegendre),
SmoothGrad (--smoothgrad_samples, noise level 0.15) and occlusion (window 16, stride 8)
against captum at each of --peer_batch_sizes; Grad-CAM against pytorch-grad-cam, FGSM and
PGD-Linf (--attack_steps, epsilon --attack_epsilon) against torchattacks at the largest;
many_targets (one image, --targets classes: Grad-CAM, integrated gradients, occlusion) and
sweep (one image, --sweep_levels SmoothGrad noise levels), which jaxviz runs in one call
and the peers in a Python loop, as their users do; and, asked for by name, ig_memory:
integrated gradients of one image with --ig_memory_steps steps, its peak memory against a
bound. --peer_libraries=reference puts the repo's torch references (tests/) in place of
the libraries. Per row: medians of steady calls (up to --repeats rounds within
--round_budget_s, the rounds run recorded), the first calls apart, each side's peak
resident-set growth during its calls (sampled every ~2 ms above the resident set just
before the call) and how the two outputs agree. --quick: 64 px, batch size 2, 3
targets, 2 levels, 4 steps and samples, 2 per pass, 8 ig_memory steps, one round.
"""

import json
import os
import platform
import random
import resource
import statistics
import sys
import tempfile
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'tests'))  # torch_course: the course's algorithms
sys.path.insert(0, REPO)  # weights_convert

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxviz  # noqa: E402
import common  # noqa: E402  (one-line errors, flag checks; absl logging verbosity)
import peers  # noqa: E402  (--peers: the peer workloads; timing and agreement helpers)
from peers import attack_agreement, timed, to_torch  # noqa: E402

_MODELS = flags.DEFINE_list('models', ['squeezenet1_1', 'vgg16'], 'Architectures.')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 224, 'Side of the square inputs.',
                                   lower_bound=16)
_SALIENCY_BATCH = flags.DEFINE_integer('saliency_batch', 25, 'Images per saliency call.',
                                       lower_bound=1)
_FOOLING_IMAGES = flags.DEFINE_integer('fooling_images', 5, 'Images per fooling call.',
                                       lower_bound=1)
_FOOLING_STEPS = flags.DEFINE_integer('fooling_steps', 10, 'Steps per fooling image.',
                                      lower_bound=1)
_FOOLING_LR = flags.DEFINE_float(
    'fooling_lr', 1e-6, 'Fooling step length: small, so that no image flips early and both '
    'sides take exactly --fooling_steps steps.')
_CLASSVIZ_STEPS = flags.DEFINE_integer('classviz_steps', 100, 'Class visualisation steps.',
                                       lower_bound=1)
_ATTACK_BATCH = flags.DEFINE_integer('attack_batch', 8, 'Images per attack call.',
                                     lower_bound=1)
_ATTACK_STEPS = flags.DEFINE_integer('attack_steps', 10, 'PGD steps (no early stop).',
                                     lower_bound=1)
_ATTACK_EPSILON = flags.DEFINE_float('attack_epsilon', 8 / 255,
                                     'L-infinity budget of FGSM and PGD, pixel units.')
_ATTACK_L2_EPSILON = flags.DEFINE_float('attack_l2_epsilon', 1.0,
                                        'L2 budget of PGD-L2, pixel units.')
WORKLOADS = ('methods', 'gradient_step', 'attacks')
_WORKLOADS = flags.DEFINE_list(
    'workloads', list(WORKLOADS), 'What to run: methods (saliency, fooling, class '
    'visualisation), gradient_step (FLOP rate, throughput by batch size, loop step), '
    'attacks (FGSM, PGD-Linf, PGD-L2).')
_CHUNK_SIZE = flags.DEFINE_integer(
    'chunk_size', None, "Images per loop in jaxviz's fooling, class visualisation and attacks "
    '(default: the library default, 1 on CPU).', lower_bound=1)
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed rounds (median) after the warm-up.',
                                lower_bound=1)
_BATCH_SIZES = flags.DEFINE_list('batch_sizes', ['1', '4', '16', '64'],
                                 'Batch sizes of the gradient-step throughput.')
_GEMM_SIZE = flags.DEFINE_integer('gemm_size', 2048, 'n of the n x n x n GEMM reference.',
                                  lower_bound=1)
_QUICK = flags.DEFINE_bool(
    'quick', False, 'Smoke test: 64x64 images, 1 repeat, 5 class-visualisation steps, 2 '
    'fooling images of 2 steps, attacks on 2 images with 2 PGD steps, batch sizes 1,4, '
    'saliency batch 4, GEMM 512, convolution profile at batch 2 (with gradient_step).')
_THREADS = flags.DEFINE_integer('threads', None, 'torch.set_num_threads (default: '
                                "torch's own).", lower_bound=1)
_OMP_WAIT_POLICY = flags.DEFINE_enum(
    'omp_wait_policy', None, ['ACTIVE', 'PASSIVE'], "Sets $OMP_WAIT_POLICY for torch's "
    'OpenMP threads before torch loads (default: left as it is). With other processes on '
    "the cores, OpenMP's spinning threads can slow torch many-fold; PASSIVE avoids that.")
_CPU_KERNELS = flags.DEFINE_enum(
    'cpu_kernels', 'model', ['model', 'xla', 'eigen'],
    "XLA:CPU's convolution kernels for jaxviz's methods: model (Model.cpu_kernels, those "
    'measured fastest for each model), xla (its default, YNNPACK fusions) or eigen.')
_CONV_PROFILE_BATCH = flags.DEFINE_integer(
    'conv_profile_batch', 0, 'If > 0: also time every convolution of the gradient step '
    'at this batch alone and sum them, against the whole step (item 5).', lower_bound=0)
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the weights and inputs.', lower_bound=0)
_OUTPUT_JSON = flags.DEFINE_string('output_json', os.path.join('outputs', 'benchmark.json'),
                                   'Where the results go (JSON).')
_PEERS = flags.DEFINE_bool(
    'peers', False, 'Run the peer workloads (--peer_workloads against --peer_libraries) '
    'instead of the course ones (--workloads).')
_PEER_LIBRARIES = flags.DEFINE_list(
    'peer_libraries', list(peers.DEFAULT_LIBRARIES), 'With --peers: captum, grad_cam '
    "(pytorch-grad-cam), torchattacks (pip install -e '.[bench]'), or reference (the repo's "
    'torch references in tests/, no extra package).')
_PEER_WORKLOADS = flags.DEFINE_list(
    'peer_workloads', list(peers.DEFAULT_WORKLOADS), 'With --peers: any of '
    f'{", ".join(peers.WORKLOADS)}. ig_memory (integrated gradients with --ig_memory_steps '
    'steps at batch 1 against a memory bound) is left out by default.')
_PEER_BATCH_SIZES = flags.DEFINE_list(
    'peer_batch_sizes', ['1', '16'], 'Batch sizes of the attribution workloads; the largest '
    'is the batch of pytorch-grad-cam and of the attacks.')
_TARGETS = flags.DEFINE_integer('targets', 16, 'many_targets: classes explained for one image.',
                                lower_bound=1)
_SWEEP_LEVELS = flags.DEFINE_integer('sweep_levels', 8, 'sweep: SmoothGrad noise levels, '
                                     'evenly from 0.05 to 0.4.', lower_bound=1)
_IG_STEPS = flags.DEFINE_integer('ig_steps', 50, 'Integrated gradients: path points.',
                                 lower_bound=1)
_SMOOTHGRAD_SAMPLES = flags.DEFINE_integer('smoothgrad_samples', 50, 'SmoothGrad: noisy '
                                           'copies (noise level 0.15).', lower_bound=1)
_STEP_CHUNK = flags.DEFINE_integer(
    'step_chunk', 32, "Per image and pass: integrated gradients' path points (step_chunk), "
    "SmoothGrad's copies (sample_chunk), occlusion's occluded images (window_chunk), in "
    "jaxviz; captum's batch parameters are matched to it.", lower_bound=1)
_PEER_CHUNK_SIZE = flags.DEFINE_integer(
    'peer_chunk_size', 1, "Images at a time in jaxviz's integrated gradients, SmoothGrad and "
    'occlusion (their chunk_size): memory grows with it times --step_chunk.', lower_bound=1)
_OCCLUSION_WINDOW = flags.DEFINE_integer('occlusion_window', 16, 'Occlusion: window side, px.',
                                         lower_bound=1)
_OCCLUSION_STRIDE = flags.DEFINE_integer('occlusion_stride', 8, 'Occlusion: stride, px.',
                                         lower_bound=1)
_ROUND_BUDGET_S = flags.DEFINE_float(
    'round_budget_s', 120.0, 'With --peers: a workload stops its timed rounds (after at least '
    'one) when another would take it past this many seconds; the JSON records the rounds run.')
_PEER_SIDES = flags.DEFINE_enum(
    'peer_sides', 'both', ['both', 'jax', 'peer'], 'With --peers: both sides alternating '
    '(default), or one side alone in the process (the other a no-op): a check that the '
    "two sides' threads and memory do not slow each other.")
_IG_MEMORY_STEPS = flags.DEFINE_integer('ig_memory_steps', 200, 'ig_memory: path points.',
                                        lower_bound=1)
_IG_MEMORY_BOUND_MIB = flags.DEFINE_float(
    'ig_memory_bound_mib', 0.0, "ig_memory: the bound on jaxviz's peak resident-set growth, "
    "MiB; 0: the model's weights plus --step_chunk path points of "
    f'{peers.IG_POINT_FACTOR:g} forward activations each (peers.ig_memory_bound_mib).')


def max_rss_mib() -> float:
  """The process's peak resident set so far (Linux reports KiB, macOS bytes)."""
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return rss / (2**20 if sys.platform == 'darwin' else 2**10)


def compare(jax_fn, torch_fn, repeats: int) -> dict:
  """First calls (jaxviz's compiles), then `repeats` alternating rounds; medians.

  Both functions must block until their result is computed.
  """
  rss0 = max_rss_mib()
  jax_first = timed(jax_fn)
  rss_jax = max_rss_mib()
  torch_first = timed(torch_fn)  # warm-up (allocator, oneDNN primitive caches)
  rss_torch = max_rss_mib()
  jax_times, torch_times = [], []
  for _ in range(repeats):
    jax_times.append(timed(jax_fn))
    torch_times.append(timed(torch_fn))
  jax_s, torch_s = statistics.median(jax_times), statistics.median(torch_times)
  return {
      'jax_s': jax_s, 'torch_s': torch_s, 'speedup': torch_s / jax_s,
      'jax_first_call_s': jax_first, 'torch_first_call_s': torch_first,
      # What the first call costs beyond a steady call: tracing and compilation.
      'jax_compile_s': max(jax_first - jax_s, 0.0),
      'jax_times_s': jax_times, 'torch_times_s': torch_times,
      'max_rss_mib_after_jax_first': rss_jax, 'max_rss_growth_mib_jax_first': rss_jax - rss0,
      'max_rss_mib_after_torch_first': rss_torch,
      'max_rss_growth_mib_torch_first': rss_torch - rss_jax,
  }


def build_models(name: str, seed: int, directory: str):
  """The same random-init weights as a float32 torchvision model and a jaxviz Model."""
  import torch
  import torchvision
  import weights_convert
  torch.manual_seed(seed)
  tmodel = torchvision.models.get_model(name, weights=None).eval().float()
  for p in tmodel.parameters():
    p.requires_grad_(False)  # only input gradients, as jaxviz computes
  path = os.path.join(directory, f'{name}_seed{seed}.npz')
  params = weights_convert.convert_state_dict(name, tmodel.state_dict())
  jaxviz.checkpoint.save(path, params, {
      'model': name, 'source': 'random-init torchvision (benchmark)', 'source_sha256': '',
      'class_names': list(jaxviz.imagenet_class_names()),
      'mean': list(jaxviz.IMAGENET_MEAN), 'std': list(jaxviz.IMAGENET_STD)})
  return tmodel, jaxviz.load_model(name, path)


def gemm_rate(n: int, repeats: int) -> dict:
  """float32 n x n @ n x n: best-of-`repeats` GFLOP/s in jax and in torch."""
  import torch
  a = np.random.default_rng(0).standard_normal((n, n), np.float32)
  b = np.random.default_rng(1).standard_normal((n, n), np.float32)
  ja, jb = jnp.asarray(a), jnp.asarray(b)
  mm = jax.jit(jnp.matmul)
  mm(ja, jb).block_until_ready()
  ta, tb = torch.from_numpy(a), torch.from_numpy(b)
  torch.mm(ta, tb)
  jax_t, torch_t = [], []
  for _ in range(max(repeats, 3)):
    jax_t.append(timed(lambda: mm(ja, jb).block_until_ready()))
    torch_t.append(timed(lambda: torch.mm(ta, tb)))
  flops = 2.0 * n**3
  jax_rate, torch_rate = flops / min(jax_t) / 1e9, flops / min(torch_t) / 1e9
  return {'n': n, 'jax_gflops': jax_rate, 'torch_gflops': torch_rate,
          'best_gflops': max(jax_rate, torch_rate)}


def xla_flops(compiled) -> float:
  """'flops' from a compiled program's cost analysis (a dict, or a list of dicts in some
  jax versions); NaN when the backend reports none."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float((cost or {}).get('flops', float('nan')))


def conv_profile(model, batch: int, size: int, kernels: str, repeats: int) -> dict:
  """Item 5: each convolution of saliency_maps' program timed alone, against the step."""
  x = jnp.asarray(np.random.default_rng(0).standard_normal((batch, size, size, 3)),
                  jnp.float32)
  labels = jnp.arange(batch, dtype=jnp.int32) % model.num_classes
  step = lambda p, x, l: jaxviz.saliency_maps(model.apply, p, x, l, cpu_kernels=kernels)
  convs = []

  def collect(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == 'conv_general_dilated':
        convs.append(eqn)
      for value in eqn.params.values():  # sub-programs: pjit, custom_vjp, loops, ...
        for sub in value if isinstance(value, (list, tuple)) else (value,):
          sub = getattr(sub, 'jaxpr', sub)  # a ClosedJaxpr's Jaxpr
          if hasattr(sub, 'eqns'):
            collect(sub)

  collect(jax.make_jaxpr(step)(model.params, x, labels).jaxpr)
  options = jaxviz.compiler_options(kernels)

  def median_time(fn, *args):
    jax.block_until_ready(fn(*args))
    return statistics.median(timed(lambda: jax.block_until_ready(fn(*args)))
                             for _ in range(max(repeats, 5)))

  rows = []
  for eqn in convs:
    lhs, rhs = (v.aval for v in eqn.invars)
    fn = jax.jit(lambda a, b, eqn=eqn: jax.lax.conv_general_dilated_p.bind(a, b, **eqn.params),
                 compiler_options=options)
    a, b = jnp.full(lhs.shape, 0.5, lhs.dtype), jnp.full(rhs.shape, 0.01, rhs.dtype)
    flops = xla_flops(fn.lower(a, b).compile())
    seconds = median_time(fn, a, b)
    rows.append({'lhs': list(lhs.shape), 'rhs': list(rhs.shape), 's': seconds,
                 'flops': flops, 'gflops': flops / seconds / 1e9})
  step_s = median_time(jax.jit(step, compiler_options=options), model.params, x, labels)
  conv_s = sum(r['s'] for r in rows)
  return {'batch': batch, 'cpu_kernels': kernels, 'step_s': step_s, 'convolutions': len(rows),
          'convolutions_s': conv_s, 'rest_s': step_s - conv_s,
          'convolutions_gflops': sum(r['flops'] for r in rows) / conv_s / 1e9,
          'largest': sorted(rows, key=lambda r: -r['s'])[:8]}


def targets_with_gradient(logits: np.ndarray) -> np.ndarray:
  """Per image, the runner-up class: a non-zero score (so a non-zero gradient; SqueezeNet
  scores exactly 0 after its last ReLU for many classes) that is not already the argmax,
  so fooling steps run rather than stop at once."""
  order = np.argsort(-logits, axis=-1)
  targets = order[:, 1]
  scores = np.take_along_axis(logits, targets[:, None], 1)[:, 0]
  if not np.all(scores != 0):
    raise RuntimeError(f'a runner-up score is exactly 0 (no gradient): {scores}')
  return targets.astype(np.int32)


def bench_attacks(tmodel, model, cfg: dict, values: np.ndarray, kernels: str) -> dict:
  """Item 5: FGSM, PGD-Linf and PGD-L2 on one batch, jaxviz against tests/torch_attacks.

  `values` (N, H, W, 3) are any real numbers; a sigmoid makes them pixels in (0, 1),
  normalised with ImageNet's mean and std, the model's input. Untargeted, away from the
  model's own predictions.
  """
  import torch
  import torch_attacks
  from jaxviz.methods import attacks
  mean = np.asarray(jaxviz.IMAGENET_MEAN, np.float32)
  std = np.asarray(jaxviz.IMAGENET_STD, np.float32)
  clean = (1 / (1 + np.exp(-values))).astype(np.float32)
  x = (clean - mean) / std
  # The clean pixels as jaxviz recovers them from x, so that both sides attack the same.
  clean = np.asarray(jnp.clip(jnp.asarray(x) * std + mean, 0, 1))
  labels = np.asarray(jnp.argmax(jax.jit(model.apply)(model.params, x), -1)).astype(np.int32)
  tx, ty = to_torch(clean), torch.from_numpy(labels.astype(np.int64))
  n, steps = len(x), cfg['attack_steps']
  f32 = lambda v: float(np.float32(v))  # the same float32 value on both sides
  key = jax.random.key(cfg['seed'])
  out = {}
  for name, norm, epsilon, num_steps in (
      ('fgsm', 'linf', cfg['attack_epsilon'], 1),
      ('pgd_linf', 'linf', cfg['attack_epsilon'], steps),
      ('pgd_l2', 'l2', cfg['attack_l2_epsilon'], steps)):
    epsilon = f32(epsilon)
    step_size = f32(epsilon if name == 'fgsm' else 2.5 * epsilon / steps)
    common_args = dict(epsilon=epsilon, norm=norm, mean=mean, std=std, cpu_kernels=kernels,
                       chunk_size=cfg['chunk_size'])
    if name == 'fgsm':
      jax_attack = lambda: jaxviz.fgsm(model.apply, model.params, x, labels, **common_args)
      torch_attack = lambda: torch_attacks.fgsm(tmodel, tx, ty, epsilon, mean, std)
    else:
      # PGD's random start: jaxviz's own draw (its per-image keys), handed to torch.
      keys = jaxviz.validation.split_keys(key, n)
      start = jax.vmap(lambda k, p: attacks.start_point(k, p, jnp.float32(epsilon), norm))(
          keys, jnp.asarray(clean))
      tstart = to_torch(start)
      jax_attack = lambda: jaxviz.pgd(model.apply, model.params, x, labels, steps=steps,
                                      step_size=step_size, key=key, **common_args)
      torch_attack = lambda: torch_attacks.pgd(tmodel, tx, ty, epsilon, step_size, steps,
                                               mean, std, norm=norm, start=tstart)
    last = {}

    def jax_fn():
      last['jax'] = r = jax.block_until_ready(jax_attack())
      if not np.all(np.asarray(r.steps) == num_steps):
        raise RuntimeError(f'{name}: jaxviz took {r.steps} steps, not {num_steps} (a zero '
                           'gradient stalls it)')

    def torch_fn():
      last['torch'] = torch_attack()

    r = compare(jax_fn, torch_fn, cfg['repeats'])
    out[name] = dict(r, images=n, steps=num_steps, norm=norm, epsilon=epsilon,
                     step_size=step_size,
                     success_rate=float(np.mean(np.asarray(last['jax'].success))),
                     **attack_agreement(last['jax'].pixels, last['torch'].numpy(), clean))
  return out


def bench_model(name: str, cfg: dict, directory: str, gemm: dict) -> dict:
  import torch
  import torch_course
  tmodel, model = build_models(name, cfg['seed'], directory)
  params, apply = model.params, model.apply
  size, repeats = cfg['image_size'], cfg['repeats']
  rng = np.random.default_rng(cfg['seed'])
  images = lambda n: rng.standard_normal((n, size, size, 3), np.float32)
  wait = jax.block_until_ready
  kernels = model.cpu_kernels if cfg['cpu_kernels'] == 'model' else cfg['cpu_kernels']
  out = {'workloads': {}, 'cpu_kernels': kernels}

  # Both sides must compute the same function.
  probe = images(2)
  with torch.inference_mode():
    t_logits = tmodel(to_torch(probe)).numpy()
  j_logits = np.asarray(jax.jit(apply)(params, probe))
  out['logits_rel_err'] = float(np.linalg.norm(j_logits - t_logits) /
                                np.linalg.norm(t_logits))

  if 'methods' in cfg['workloads']:
    # 1a. Saliency of a batch.
    x = images(cfg['saliency_batch'])
    labels = rng.integers(0, model.num_classes, len(x)).astype(np.int32)
    tx, ty = to_torch(x), torch.from_numpy(labels.astype(np.int64))
    out['workloads']['saliency'] = dict(compare(
        lambda: wait(jaxviz.saliency_maps(apply, params, x, labels, cpu_kernels=kernels)),
        lambda: torch_course.saliency(tmodel, tx, ty), repeats), images=len(x))

    # 1b. Fooling, a fixed number of steps per image.
    x = images(cfg['fooling_images'])
    targets = targets_with_gradient(np.asarray(jax.jit(apply)(params, x)))
    steps, lr = cfg['fooling_steps'], cfg['fooling_lr']
    tx = to_torch(x)

    def jax_fooling():
      r = wait(jaxviz.fooling_images(apply, params, x, targets, learning_rate=lr,
                                     max_iterations=steps, chunk_size=cfg['chunk_size'],
                                     cpu_kernels=kernels))
      assert np.all(np.asarray(r.iterations) == steps), f'jaxviz took {r.iterations} steps'

    def torch_fooling():
      for i in range(len(x)):
        _, it = torch_course.make_fooling_image(tmodel, tx[i:i + 1], int(targets[i]),
                                                learning_rate=lr, max_iter=steps)
        assert it == steps, f'torch took {it} steps, not {steps}'

    out['workloads']['fooling'] = dict(compare(jax_fooling, torch_fooling, repeats),
                                       images=len(x), steps=steps)

    # 1c. Class visualisation: one target, jitter + blur + clamp, course defaults otherwise.
    steps, target = cfg['classviz_steps'], 76
    low, high = (np.asarray(v) for v in jaxviz.valid_range())
    key = jax.random.key(cfg['seed'])

    def jax_classviz():
      wait(jaxviz.class_visualization(apply, params, [target], key,
                                      image_shape=(size, size, 3), num_iterations=steps,
                                      clamp=(low, high), chunk_size=cfg['chunk_size'],
                                      cpu_kernels=kernels).images)

    def torch_classviz():
      init = torch.randn(1, 3, size, size)
      jitters = [(random.randint(0, 16), random.randint(0, 16)) for _ in range(steps)]
      torch_course.create_class_visualization(tmodel, target, init, num_iterations=steps,
                                              jitters=jitters, low=low, high=high)

    out['workloads']['class_visualization'] = dict(
        compare(jax_classviz, torch_classviz, repeats), images=1, steps=steps)

  out['gradient_step'] = []
  if 'gradient_step' in cfg['workloads']:
    # 2 + 3. The input-gradient step (saliency of B images) against batch size, with its
    # FLOP count from XLA's cost analysis of the very program saliency_maps runs.
    for b in cfg['batch_sizes']:
      x = images(b)
      labels = rng.integers(0, model.num_classes, b).astype(np.int32)
      tx, ty = to_torch(x), torch.from_numpy(labels.astype(np.int64))
      r = compare(lambda: wait(jaxviz.saliency_maps(apply, params, x, labels,
                                                    cpu_kernels=kernels)),
                  lambda: torch_course.saliency(tmodel, tx, ty), repeats)
      # After the timed calls, so that the first call above is the one that compiles
      # (lower + compile of the same arguments then hits jax's cache).
      program = jax.jit(lambda p, x, l: jaxviz.saliency_maps(apply, p, x, l, cpu_kernels=kernels),
                        compiler_options=jaxviz.compiler_options(kernels))
      flops = xla_flops(program.lower(params, jnp.asarray(x), jnp.asarray(labels)).compile())
      row = {'batch': b, 'flops': flops,
             'jax_images_per_s': b / r['jax_s'], 'torch_images_per_s': b / r['torch_s'],
             'jax_gflops': flops / r['jax_s'] / 1e9, 'torch_gflops': flops / r['torch_s'] / 1e9,
             **r}
      row['jax_pct_of_gemm'] = 100 * row['jax_gflops'] / gemm['best_gflops']
      row['torch_pct_of_gemm'] = 100 * row['torch_gflops'] / gemm['best_gflops']
      out['gradient_step'].append(row)

  if 'attacks' in cfg['workloads']:  # 5.
    out['attacks'] = bench_attacks(tmodel, model, cfg, images(cfg['attack_batch']), kernels)

  # 4. A step inside the loops against the standalone gradient step of one image.
  single = [g for g in out['gradient_step'] if g['batch'] == 1]
  loops = {w: out['workloads'][w] for w in ('fooling', 'class_visualization')
           if w in out['workloads']}
  loops.update({w: a for w, a in out.get('attacks', {}).items() if w.startswith('pgd')})
  if single and loops:
    step_s = single[0]['jax_s']
    out['loop_step'] = {'standalone_step_s': step_s, **{
        w: {'jax_s_per_image_step': t, 'vs_standalone': t / step_s}
        for w, t in ((w, m['jax_s'] / (m['images'] * m['steps'])) for w, m in loops.items())}}

  if cfg['conv_profile_batch']:  # 6. where the gradient step's time goes
    out['conv_profile'] = conv_profile(model, cfg['conv_profile_batch'], size,
                                       out['cpu_kernels'], repeats)
  return out


def cpu_model() -> str:
  """/proc/cpuinfo's model name (Linux), where platform.processor() is often empty."""
  try:
    with open('/proc/cpuinfo') as f:
      return next((l.split(':', 1)[1].strip() for l in f if l.startswith('model name')), '')
  except OSError:
    return ''


def machine_info(torch) -> dict:
  import importlib.metadata as md
  return {
      'processor': platform.processor(), 'cpu_model': cpu_model(),
      'machine': platform.machine(),
      'platform': platform.platform(), 'cpu_count': os.cpu_count(),
      'python': platform.python_version(),
      'jax': jax.__version__, 'jaxlib': md.version('jaxlib'), 'torch': torch.__version__,
      'torch_threads': torch.get_num_threads(), 'devices': [str(d) for d in jax.devices()],
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
      'omp_wait_policy': os.environ.get('OMP_WAIT_POLICY', ''),
      'load_average': os.getloadavg(),
      'time': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
  }


def print_tables(results: dict):
  gemm = results['gemm']
  m = results['machine']
  print(f"{m['cpu_model'] or m['processor']}, {m['cpu_count']} CPUs, jax {m['jax']}, torch "
        f"{m['torch']} ({m['torch_threads']} threads), load average {m['load_average'][0]:.2f}")
  print(f"XLA_FLAGS: {m['xla_flags'] or '(none)'}")
  print(f"\nGEMM float32 {gemm['n']}^3: jax {gemm['jax_gflops']:.1f} GFLOP/s, torch "
        f"{gemm['torch_gflops']:.1f} GFLOP/s (reference: {gemm['best_gflops']:.1f})")
  for name, r in results['models'].items():
    kernels = {'xla': "XLA's default (on CPU: YNNPACK)", 'eigen': "XLA:CPU's Eigen"}
    print(f"\n{name} (logits rel. err jax vs torch {r['logits_rel_err']:.1e}; jaxviz on "
          f"{kernels[r['cpu_kernels']]} convolution kernels)")
    if r['workloads']:
      print(f"{'workload':<34}{'jax s':>10}{'torch s':>10}{'torch/jax':>11}"
            f"{'jax 1st s':>11}{'compile s':>11}{'maxRSS MiB':>12}")
    for w, m in r['workloads'].items():
      label = f"{w} ({m['images']} im" + (f", {m['steps']} steps)" if 'steps' in m else ')')
      print(f"{label:<34}{m['jax_s']:>10.4f}{m['torch_s']:>10.4f}{m['speedup']:>10.2f}x"
            f"{m['jax_first_call_s']:>11.2f}{m['jax_compile_s']:>11.2f}"
            f"{m['max_rss_mib_after_torch_first']:>12.0f}")
    if r.get('attacks'):
      print(f"\n{'attack':<34}{'jax s':>10}{'torch s':>10}{'torch/jax':>11}"
            f"{'jax 1st s':>11}{'compile s':>11}{'ms/im-step':>11}{'<=1e-5':>9}"
            f"{'max diff':>10}")
    for w, m in r.get('attacks', {}).items():
      label = f"{w} ({m['images']} im, {m['steps']} step{'s' * (m['steps'] > 1)})"
      print(f"{label:<34}{m['jax_s']:>10.4f}{m['torch_s']:>10.4f}{m['speedup']:>10.2f}x"
            f"{m['jax_first_call_s']:>11.2f}{m['jax_compile_s']:>11.2f}"
            f"{1e3 * m['jax_s'] / (m['images'] * m['steps']):>11.1f}"
            f"{100 * m['pixels_within_1e-5']:>8.2f}%{m['max_abs_diff']:>10.1e}")
    if r['gradient_step']:
      print(f"\n{'grad step batch':<16}{'GFLOP/im':>9}{'jax im/s':>10}{'torch im/s':>11}"
            f"{'torch/jax':>10}{'jax GF/s':>10}{'jax %GEMM':>10}{'torch %GEMM':>12}"
            f"{'jax 1st s':>10}")
    for g in r['gradient_step']:
      print(f"{g['batch']:<16}{g['flops'] / g['batch'] / 1e9:>9.2f}"
            f"{g['jax_images_per_s']:>10.1f}{g['torch_images_per_s']:>11.1f}"
            f"{g['speedup']:>9.2f}x{g['jax_gflops']:>10.1f}{g['jax_pct_of_gemm']:>9.0f}%"
            f"{g['torch_pct_of_gemm']:>11.0f}%{g['jax_first_call_s']:>10.2f}")
    if 'loop_step' in r:
      ls = r['loop_step']
      print(f"\nloop step vs the standalone gradient step ({ls['standalone_step_s']:.4f} s, "
            'batch 1): ' + ', '.join(f"{w} {m['jax_s_per_image_step']:.4f} s = "
                                     f"{m['vs_standalone']:.2f}x" for w, m in ls.items()
                                     if w != 'standalone_step_s'))
    if 'conv_profile' in r:
      c = r['conv_profile']
      print(f"\nprofile of the gradient step at batch {c['batch']}: {c['convolutions']} "
            f"convolutions timed alone sum to {c['convolutions_s']:.4f} s "
            f"({c['convolutions_gflops']:.0f} GFLOP/s) of the step's {c['step_s']:.4f} s; "
            f"the rest {c['rest_s']:.4f} s. Largest:")
      for row in c['largest']:
        print(f"  {row['s']:.4f} s {row['gflops']:6.0f} GFLOP/s  lhs {tuple(row['lhs'])} "
              f"rhs {tuple(row['rhs'])}")
  print('\ncompile s: the first call less a steady call (tracing and XLA compilation; '
        'the scripts cache compilations on disk).')
  print('maxRSS: the process peak after the workload (jax and torch first calls); '
        'cumulative, not per workload.')
  if any(r.get('attacks') for r in results['models'].values()):
    print("attacks: ms/im-step is jaxviz's time per image and step; <=1e-5 the share of "
          "adversarial pixels within 1e-5 of torch's, max diff the largest difference "
          '(pixel units).')


def run_peers(cfg: dict, libraries, workloads):
  """--peers: every model's peer rows (scripts/peers.py), a table each, one JSON."""
  import torch
  versions = peers.check_libraries(libraries)
  quick = cfg['quick']
  cfg = dict(
      cfg, peer_libraries=list(libraries), peer_workloads=list(workloads),
      peer_batch_sizes=[2] if quick else sorted({int(b) for b in _PEER_BATCH_SIZES.value}),
      targets=3 if quick else _TARGETS.value,
      sweep_levels=2 if quick else _SWEEP_LEVELS.value,
      ig_steps=4 if quick else _IG_STEPS.value,
      smoothgrad_samples=4 if quick else _SMOOTHGRAD_SAMPLES.value, noise_level=0.15,
      step_chunk=2 if quick else _STEP_CHUNK.value, peer_chunk_size=_PEER_CHUNK_SIZE.value,
      occlusion_window=_OCCLUSION_WINDOW.value, occlusion_stride=_OCCLUSION_STRIDE.value,
      round_budget_s=_ROUND_BUDGET_S.value, peer_sides=_PEER_SIDES.value,
      ig_memory_steps=8 if quick else _IG_MEMORY_STEPS.value,
      ig_memory_bound_mib=_IG_MEMORY_BOUND_MIB.value)
  for key in ('workloads', 'saliency_batch', 'fooling_images', 'fooling_steps', 'fooling_lr',
              'classviz_steps', 'batch_sizes', 'gemm_size', 'conv_profile_batch',
              'attack_batch', 'attack_l2_epsilon'):
    cfg.pop(key)  # the course workloads' settings
  if cfg['occlusion_window'] > cfg['image_size']:
    raise jaxviz.InputError(f"--occlusion_window={cfg['occlusion_window']} is larger than "
                            f"the images ({cfg['image_size']} px)")
  results = {'machine': dict(machine_info(torch), peers=versions), 'config': cfg,
             'models': {}}
  with tempfile.TemporaryDirectory() as directory:
    for name in _MODELS.value:
      print(f'{name}:', flush=True)
      tmodel, model = build_models(name, cfg['seed'], directory)
      kernels = model.cpu_kernels if cfg['cpu_kernels'] == 'model' else cfg['cpu_kernels']
      results['models'][name] = {'cpu_kernels': kernels, 'rows': peers.run(
          tmodel, model, cfg, kernels, libraries, workloads)}
  m = results['machine']
  print(f"\n{m['cpu_model'] or m['processor']}, {m['cpu_count']} CPUs, jax {m['jax']}, torch "
        f"{m['torch']} ({m['torch_threads']} threads)"
        + ''.join(f', {k} {v}' for k, v in versions.items() if k != 'reference'))
  for name, r in results['models'].items():
    peers.print_table(f"{name} ({r['cpu_kernels']} kernels)", r['rows'])
  print("\nagreement: rel = relative L2 difference of the same quantity; corr = correlation "
        '(SmoothGrad with different noise; pytorch-grad-cam after its min-max scaling and '
        'resize); <=1e-5 = share of adversarial pixels within 1e-5; succ = success rates '
        '(jaxviz/peer; PGD from different random starts).')
  jaxviz.checkpoint.atomic_write(_OUTPUT_JSON.value, lambda f: f.write(
      json.dumps(results, indent=2, default=str).encode()))
  print(f'wrote {_OUTPUT_JSON.value}')


@common.one_line_errors
def main(argv):
  del argv
  common.check_flags(__name__)  # --fooling_lr > 0, --batch_sizes, --output_json writable
  unknown = sorted(set(_MODELS.value) - set(jaxviz.ARCHITECTURES))
  if unknown:
    raise jaxviz.InputError(f'--models: unknown {unknown}; known: '
                            f'{", ".join(sorted(jaxviz.ARCHITECTURES))}')
  workloads = [w.strip() for w in _WORKLOADS.value]
  unknown = sorted(set(workloads) - set(WORKLOADS))
  if unknown:
    raise jaxviz.InputError(f'--workloads: unknown {unknown}; known: {", ".join(WORKLOADS)}')
  for flag in (_ATTACK_EPSILON, _ATTACK_L2_EPSILON, _ROUND_BUDGET_S):
    if flag.value <= 0:
      raise jaxviz.InputError(f'--{flag.name} must be positive, got {flag.value:g}')
  if _IG_MEMORY_BOUND_MIB.value < 0:
    raise jaxviz.InputError(f'--ig_memory_bound_mib must be >= 0, got '
                            f'{_IG_MEMORY_BOUND_MIB.value:g}')
  libraries = common.check_names(_PEER_LIBRARIES.value, peers.LIBRARIES, '--peer_libraries',
                                 'peer library')
  peer_workloads = common.check_names(_PEER_WORKLOADS.value, peers.WORKLOADS,
                                      '--peer_workloads', 'workload')
  if not all(b.strip().isdigit() and int(b) >= 1 for b in _PEER_BATCH_SIZES.value):
    raise jaxviz.InputError(f'--peer_batch_sizes must be integers >= 1, got '
                            f'{",".join(_PEER_BATCH_SIZES.value)!r}')
  if _OMP_WAIT_POLICY.value:
    os.environ['OMP_WAIT_POLICY'] = _OMP_WAIT_POLICY.value
  try:
    import torch
    import torchvision  # noqa: F401  (build_models)
  except ImportError as e:
    raise jaxviz.InputError(f'the benchmark compares against torch: pip install torch '
                            f'torchvision (the [test] extra) ({e})') from None
  if _THREADS.value:
    torch.set_num_threads(_THREADS.value)
  quick = _QUICK.value
  cfg = {
      'image_size': 64 if quick else _IMAGE_SIZE.value,
      'repeats': 1 if quick else _REPEATS.value,
      'saliency_batch': 4 if quick else _SALIENCY_BATCH.value,
      'fooling_images': 2 if quick else _FOOLING_IMAGES.value,
      'fooling_steps': 2 if quick else _FOOLING_STEPS.value,
      'fooling_lr': _FOOLING_LR.value,
      'classviz_steps': 5 if quick else _CLASSVIZ_STEPS.value,
      'chunk_size': _CHUNK_SIZE.value,
      'batch_sizes': [1, 4] if quick else [int(b) for b in _BATCH_SIZES.value],
      'gemm_size': 512 if quick else _GEMM_SIZE.value,
      'cpu_kernels': _CPU_KERNELS.value, 'seed': _SEED.value, 'quick': quick,
      'conv_profile_batch': (2 if quick and 'gradient_step' in workloads
                             else _CONV_PROFILE_BATCH.value),
      'attack_batch': 2 if quick else _ATTACK_BATCH.value,
      'attack_steps': 2 if quick else _ATTACK_STEPS.value,
      'attack_epsilon': _ATTACK_EPSILON.value, 'attack_l2_epsilon': _ATTACK_L2_EPSILON.value,
      'workloads': workloads,
  }
  if _PEERS.value:
    return run_peers(cfg, libraries, peer_workloads)
  results = {'machine': machine_info(torch), 'config': cfg, 'models': {}}
  results['gemm'] = gemm_rate(cfg['gemm_size'], cfg['repeats'])
  with tempfile.TemporaryDirectory() as directory:
    for name in _MODELS.value:
      results['models'][name] = bench_model(name, cfg, directory, results['gemm'])
  results['gemm_after'] = gemm_rate(cfg['gemm_size'], cfg['repeats'])  # drift check
  print_tables(results)
  print(f"(GEMM re-measured at the end: jax {results['gemm_after']['jax_gflops']:.1f}, "
        f"torch {results['gemm_after']['torch_gflops']:.1f} GFLOP/s)")
  jaxviz.checkpoint.atomic_write(_OUTPUT_JSON.value, lambda f: f.write(
      json.dumps(results, indent=2, default=str).encode()))
  print(f'wrote {_OUTPUT_JSON.value}')


if __name__ == '__main__':
  app.run(main, flags_parser=common.parse_flags)
