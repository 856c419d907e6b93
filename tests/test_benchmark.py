"""scripts/benchmark.py --quick end to end: it runs and writes the JSON it promises.

Only the shape of the results is checked (keys, positive numbers, agreement where both
sides compute the same function), never speed. The peer benchmark runs against the repo's
torch references (--peer_libraries=reference): captum and the other peers are not test
dependencies.
"""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip('torch')  # the benchmark compares against torch: the [test] extra
pytest.importorskip('torchvision')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKLOADS = ('saliency', 'fooling', 'class_visualization')
ATTACKS = ('fgsm', 'pgd_linf', 'pgd_l2')


def _positive(value) -> bool:
  return isinstance(value, (int, float)) and value > 0


@pytest.mark.slow  # a benchmark run end to end: about a minute on two cores
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


PEER_ROWS = {  # (workload, method): the peers' rows of --quick --peer_libraries=reference
    ('grad_cam', 'grad_cam'), ('guided_backprop', 'guided_backprop'),
    ('integrated_gradients', 'integrated_gradients'), ('smoothgrad', 'smoothgrad'),
    ('occlusion', 'occlusion'), ('fgsm', 'fgsm'), ('pgd_linf', 'pgd_linf'),
    ('many_targets', 'grad_cam'), ('many_targets', 'integrated_gradients'),
    ('many_targets', 'occlusion'), ('sweep', 'smoothgrad')}


def _run_benchmark(args, timeout=300):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' --xla_backend_optimization_level=0').strip()
  env.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
  return subprocess.run([sys.executable, os.path.join('scripts', 'benchmark.py'), *args],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_quick_peer_benchmark_against_the_references(tmp_path):
  output = tmp_path / 'peers.json'
  proc = _run_benchmark(['--peers', '--quick', '--peer_libraries=reference',
                         '--models=squeezenet1_1', f'--output_json={output}'])
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'jaxviz against its peers' in proc.stdout

  results = json.loads(output.read_text())
  assert results['machine']['peers'].keys() == {'reference'}
  rows = results['models']['squeezenet1_1']['rows']
  assert {(r['workload'], r['method']) for r in rows} == PEER_ROWS
  assert all(r['peer'] == 'reference' for r in rows)
  batches = results['config']['peer_batch_sizes']
  for workload in ('grad_cam', 'guided_backprop', 'integrated_gradients', 'smoothgrad',
                   'occlusion'):
    assert sorted(r['batch'] for r in rows if r['workload'] == workload) == batches
  for r in rows:
    for key in ('jax_s', 'peer_s', 'peer_over_jax', 'jax_first_call_s', 'peer_first_call_s'):
      assert _positive(r[key]), (r['workload'], key, r[key])
    assert r['repeats'] == len(r['jax_times_s']) == 1  # --quick: one round
    for key in ('jax_peak_mib', 'peer_peak_mib', 'jax_first_peak_mib', 'peer_first_peak_mib'):
      # A peak above the resident set measured when the call starts: never below 0.
      assert isinstance(r[key], float) and r[key] >= 0, (r['workload'], key, r[key])
    a = r['agreement']
    if r['workload'] in ('fgsm', 'pgd_linf'):
      # The reference starts PGD from jaxviz's random point: both are the same iteration.
      # FGSM's bound as in test_quick_benchmark_writes_results; PGD's 2-step iterates stay
      # off the kinks on these images, with a margin for the one that does not.
      assert a['pixels_within_1e-5'] >= (0.99 if r['workload'] == 'fgsm' else 0.9), a
      assert 0 <= a['jax_success_rate'] <= 1 and 0 <= a['peer_success_rate'] <= 1
      continue
    assert a['kind'] == 'same', a
    # The same maths from the same inputs: float32 round-off. Gradients (Grad-CAM, guided
    # backprop, integrated gradients) agree to ~5e-7 relative, occlusion's score drops
    # (differences of logits ~1 that drop by ~1e-2) to ~2e-5. 1e-3 leaves room for a
    # gradient whose ReLU or max-pool switch float32 noise decides; a wrong layout, class or
    # quantity is off by O(1). SmoothGrad adds noise of sigma = 15% of the image's range:
    # one of the noisy copies can land within rounding of a kink, where the two sides'
    # gradients part by percents (seen: 1.6e-2 for one copy, 5e-3 for the mean of 4).
    bound = 5e-2 if r['method'] == 'smoothgrad' else 1e-3
    assert a['rel_l2'] <= bound, (r['workload'], r['method'], r['batch'], a)


@pytest.mark.parametrize('flag, value, message', [
    ('--peer_libraries', 'captum,nope', "unknown peer library(s) 'nope'"),
    ('--peer_workloads', 'grad_cam,nope', "unknown workload(s) 'nope'"),
])
def test_peer_benchmark_unknown_names_are_one_line_errors(tmp_path, flag, value, message):
  proc = _run_benchmark(['--peers', '--quick', f'{flag}={value}',
                         f'--output_json={tmp_path / "peers.json"}'], timeout=120)
  assert proc.returncode == 1
  assert proc.stderr.strip().count('\n') == 0 and message in proc.stderr, proc.stderr
