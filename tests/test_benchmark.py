"""scripts/benchmark.py --quick end to end: it runs and writes the JSON it promises.

Only the shape of the results is checked (keys, positive numbers), never speed.
"""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip('torch')  # the benchmark compares against torch: the [test] extra
pytest.importorskip('torchvision')
pytestmark = pytest.mark.slow  # a benchmark run end to end: about a minute on two cores

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKLOADS = ('saliency', 'fooling', 'class_visualization')
ATTACKS = ('fgsm', 'pgd_linf', 'pgd_l2')


def _positive(value) -> bool:
  return isinstance(value, (int, float)) and value > 0


def test_quick_benchmark_writes_results(tmp_path):
  output = tmp_path / 'benchmark.json'
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  # Compile time is all a --quick run spends: XLA's backend optimisations double it for
  # nothing here. PASSIVE: torch's OpenMP threads sleep rather than spin, which keeps
  # torch from slowing many-fold when other tests share the cores.
  env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' --xla_backend_optimization_level=0').strip()
  env.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
  proc = subprocess.run(
      [sys.executable, os.path.join('scripts', 'benchmark.py'), '--quick',
       '--models=squeezenet1_1', f'--output_json={output}'],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'squeezenet1_1' in proc.stdout

  results = json.loads(output.read_text())
  assert set(results) >= {'machine', 'config', 'gemm', 'models'}
  assert results['machine']['cpu_count'] >= 1 and results['machine']['devices']
  assert _positive(results['gemm']['jax_gflops']) and _positive(results['gemm']['torch_gflops'])

  model = results['models']['squeezenet1_1']
  assert model['logits_rel_err'] < 1e-3  # both sides compute the same network
  assert model['cpu_kernels'] == 'eigen'  # Model.cpu_kernels of SqueezeNet 1.1 in float32
  profile = model['conv_profile']  # SqueezeNet 1.1: 26 convolutions, each with its gradient
  assert profile['convolutions'] == 52 and _positive(profile['convolutions_s'])
  assert all(_positive(row['gflops']) for row in profile['largest'])
  assert set(model['workloads']) == set(WORKLOADS)
  for name in WORKLOADS:
    w = model['workloads'][name]
    for key in ('jax_s', 'torch_s', 'speedup', 'jax_first_call_s', 'jax_compile_s',
                'max_rss_mib_after_torch_first'):
      assert _positive(w[key]), (name, key, w[key])

  loop = model['loop_step']  # a step inside the loops against the standalone step
  assert _positive(loop['standalone_step_s'])
  for name in ('fooling', 'class_visualization', 'pgd_linf', 'pgd_l2'):
    assert _positive(loop[name]['jax_s_per_image_step']) and _positive(loop[name]['vs_standalone'])

  attacks = model['attacks']  # FGSM and PGD against tests/torch_attacks.py
  assert set(attacks) == set(ATTACKS)
  for name in ATTACKS:
    a = attacks[name]
    for key in ('jax_s', 'torch_s', 'speedup', 'jax_first_call_s', 'jax_compile_s'):
      assert _positive(a[key]), (name, key, a[key])
    assert a['images'] == results['config']['attack_batch']
    assert a['steps'] == (1 if name == 'fgsm' else results['config']['attack_steps'])
    assert 0 <= a['pixels_within_1e-5'] <= 1 and 0 <= a['images_within_1e-5'] <= 1
    # Both sides stay in the epsilon-ball around the same clean pixels, so no pixel can
    # differ by more than 2 epsilon (L-infinity; for L2 the whole perturbations cannot);
    # more means the two are not the same images in the same layout.
    assert a['max_abs_diff'] <= 2 * a['epsilon'] + 1e-6, (name, a['max_abs_diff'])
  # FGSM is one step from the same gradient (jax and torch agree to ~5e-7 relative):
  # a pixel can differ only where that gradient's component is within float32 noise of 0,
  # where the sign may flip, or where the clean image lies within rounding of a ReLU or
  # max-pool kink; both are rare on random images, so 99% is a wide margin. PGD's later
  # iterates do land within rounding of kinks (at one SqueezeNet iterate, noise of 1e-6
  # changed the gradient by 0.6-1%), so its agreement is reported only.
  assert attacks['fgsm']['pixels_within_1e-5'] >= 0.99, attacks['fgsm']

  steps = model['gradient_step']
  assert [s['batch'] for s in steps] == results['config']['batch_sizes']
  for s in steps:
    for key in ('flops', 'jax_images_per_s', 'torch_images_per_s', 'jax_gflops',
                'jax_pct_of_gemm', 'torch_pct_of_gemm'):
      assert _positive(s[key]), (s['batch'], key, s[key])
