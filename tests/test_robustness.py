"""jaxviz.robustness and its scripts on a random-init shapes model, tiny sizes: the
report's structure, epsilon 0 is the clean accuracy, the numbers are those of the images
the attacks return, one compiled program per attack, the transfer matrix's diagonal is
the white-box success, and each model of a transfer is attacked in its own normalisation.
(That robust accuracy falls with epsilon on the trained model is tested elsewhere.)

The two scripts run as subprocesses (marked slow: ~40 s of compiling on two cores), in
the background while the library tests run when both are selected.
"""

import dataclasses
import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

import jaxviz
from jaxviz import robustness
from jaxviz.methods import attacks as attack_lib
from conftest import XLA_CACHE

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N, SIZE = 8, 32
EPSILONS = {'linf': [0.0, 8 / 255], 'l2': [0.0, 1.0]}


def _script(tmp, name: str, *args: str) -> subprocess.Popen:
  env = dict(os.environ, JAX_PLATFORMS='cpu', JAXVIZ_CACHE=str(tmp / 'cache'), **XLA_CACHE)
  # A step or two on four images: compiling is all there is, and XLA's backend
  # optimisations double it for nothing here (as in test_scripts.py).
  env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' --xla_backend_optimization_level=0').strip()
  return subprocess.Popen([sys.executable, os.path.join('scripts', f'{name}.py'), *args],
                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


@pytest.fixture(scope='module')
def scripts(tmp_path_factory):
  """The script runs, started first so that they compile while the library tests run;
  two at a time at most (two cores). Four 32-pixel images from an .npz with labels."""
  tmp = tmp_path_factory.mktemp('robustness_scripts')
  rng = np.random.default_rng(1)
  np.savez(tmp / 'four.npz', images=rng.integers(0, 256, (4, SIZE, SIZE, 3), np.uint8),
           labels=np.array([0, 1, 2, 3]))
  tiny = ['--weights=random', f'--images={tmp / "four.npz"}', '--num_images=0', '--steps=1']
  runs = {
      'robustness': lambda: _script(
          tmp, 'robustness', *tiny, '--attacks=fgsm,pgd_l2', '--linf_epsilons=0,4/255',
          '--l2_epsilons=0,0.5', '--fooling_iterations=2', f'--output_dir={tmp / "r"}'),
      'transfer': lambda: _script(
          tmp, 'transfer', *tiny, '--models=shapes:0,shapes:1', '--attack=fgsm',
          '--epsilon=4/255', f'--output_dir={tmp / "t"}'),
      'bad_epsilon': lambda: _script(tmp, 'robustness', '--linf_epsilons=0,eight'),
      'one_model': lambda: _script(tmp, 'transfer', '--models=shapes:0'),
  }
  started, done = {}, {}
  pending = list(runs)

  def start(name):
    started[name] = runs[name]()

  def result(name):
    while name not in done:
      if len(started) - len(done) < 2 and pending:
        start(pending.pop(0))
        continue
      first = next(k for k in started if k not in done)
      out, err = started[first].communicate(timeout=600)
      done[first] = (started[first].returncode, out, err)
    return done[name]

  for _ in range(2):
    start(pending.pop(0))
  yield result, tmp
  for process in started.values():
    if process.poll() is None:
      process.kill()


@pytest.fixture(scope='module')
def model():
  return jaxviz.load_model('shapes', 'random')


@pytest.fixture(scope='module')
def data(model):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (N, SIZE, SIZE, 3), dtype=np.uint8)
  predicted = robustness.predict_pixels(model, images / 255)
  # The model's own class for six images, another for two: clean accuracy 0.75 exactly,
  # with correct images for the success rates to count.
  labels = predicted.copy()
  labels[6:] = (predicted[6:] + 1) % model.num_classes
  return images, labels.astype(np.int32)


@pytest.fixture(scope='module')
def report(request, model, data):
  if any('scripts' in item.fixturenames for item in request.session.items):
    request.getfixturevalue('scripts')  # selected: start them first, to run meanwhile
  return robustness.robust_accuracy(model, *data, EPSILONS, attacks=('fgsm', 'pgd_l2'), steps=2,
                                    naive_iterations=3, keep_arrays=True)


def test_report_is_json_and_epsilon_zero_is_clean_accuracy(report):
  arrays = report.pop('_arrays')
  try:
    text = json.dumps(report, allow_nan=False)  # JSON-ready: no NaN, no arrays
  finally:
    report['_arrays'] = arrays
  assert json.loads(text)['images'] == N
  assert report['clean_accuracy'] == 0.75 and report['correct'] == 6
  assert set(report['attacks']) == {'fgsm', 'pgd_l2'}
  for name, r in report['attacks'].items():
    norm = 'l2' if name == 'pgd_l2' else 'linf'
    assert r['norm'] == norm and r['epsilons'] == EPSILONS[norm]
    assert r['steps'] == (1 if name == 'fgsm' else 2)
    for key in ('accuracy', 'success_rate', 'linf_255_median', 'l2_median'):
      assert len(r[key]) == 2, (name, key)
    # A zero budget leaves every image where it was: exactly the clean numbers.
    assert r['accuracy'][0] == report['clean_accuracy'], name
    assert r['success_rate'][0] == 0 and r['linf_255_median'][0] == 0, name
  assert report['attacks']['fgsm']['epsilons_255'] == [0, 8]
  assert 'epsilons_255' not in report['attacks']['pgd_l2']


def test_numbers_are_those_of_the_returned_images(model, data, report):
  images, labels = data
  clean = robustness.predict_pixels(model, images / 255) == labels
  arrays = report['_arrays']
  for name, r in report['attacks'].items():
    run = arrays[name]
    # Epsilon 0 returns the clean pixels, up to the float32 round trip through the
    # normalisation (x * std + mean of (p - mean) / std: a few 1e-8).
    np.testing.assert_allclose(run.pixels[0], images / 255, atol=1e-6, rtol=0)
    for k, epsilon in enumerate(r['epsilons']):
      # Classifying the returned pixels again gives the report's accuracy and success
      # (the same argmax in another batch shape: ties within float rounding would be
      # needed to differ, and random logits are ~1e-2 apart).
      wrong = robustness.predict_pixels(model, run.pixels[k]) != labels
      assert r['accuracy'][k] == pytest.approx(1 - wrong.mean(), abs=1e-12), (name, k)
      assert r['success_rate'][k] == pytest.approx(wrong[clean].mean(), abs=1e-12)
      # Inside the budget, up to float32 rounding of one addition (6e-8 per pixel).
      norm = run.linf[k] if r['norm'] == 'linf' else run.l2[k]
      assert (norm <= epsilon + 1e-5).all(), (name, epsilon, norm.max())
  assert report['attacks']['pgd_l2']['accuracy'][1] < 0.75  # the budget does something


def test_naive_method_norms_in_pixel_units(model, data, report):
  """The course's method steps in the normalised space; its pixel-unit Linf is the
  normalised one times std when std is the same for every channel."""
  images, labels = data
  naive = report['naive']
  assert naive['images'] == N and 0 <= naive['success_rate'] <= 1
  assert naive['iterations'] == 3 and naive['learning_rate'] == 1
  std = 0.25
  same_std = dataclasses.replace(model, std=(std,) * 3)  # the same apply: no new compile
  ours = robustness.naive_fooling(same_std, images / 255, labels, iterations=3)
  arrays = ours.pop('_arrays')
  mean = np.asarray(model.mean, np.float32)
  x = (images / np.float32(255) - mean) / std
  direct = jaxviz.fooling_images(model.apply, model.params, jnp.asarray(x),
                                 arrays['targets'], 1.0, 3, cpu_kernels=model.cpu_kernels)
  # float32: the normalised delta times std against the pixel delta, ~1e-7 relative.
  np.testing.assert_allclose(arrays['linf'], np.asarray(direct.linf) * std, rtol=1e-4)
  np.testing.assert_allclose(arrays['l2'], np.asarray(direct.l2) * std, rtol=1e-4)
  assert (arrays['targets'] != labels).all()  # towards another class


def test_one_compiled_program_per_attack(model, data, report):
  """Epsilon is traced: a sweep over new epsilons compiles nothing new, looped or vmapped,
  and the two batchings agree."""
  images, labels = data
  pixels = images / np.float32(255)
  vmapped = robustness._sweep(model.cpu_kernels)
  size = vmapped._cache_size()  # the report's sweeps (vmap, the default) compiled it
  first = robustness.sweep(model, pixels, labels, 'fgsm', [2 / 255, 5 / 255], batching='vmap')
  assert vmapped._cache_size() == size
  looped = attack_lib._batched._compiled(model.cpu_kernels, None, False)
  run = robustness.sweep(model, pixels, labels, 'fgsm', [1 / 255, 3 / 255])
  size = looped._cache_size()
  run = robustness.sweep(model, pixels, labels, 'fgsm', [2 / 255, 5 / 255, 0.1])
  assert looped._cache_size() == size
  # One sign step either way: the same images but for gradient components within
  # float rounding of zero (the two programs use different convolution kernels).
  assert np.mean(np.abs(first.pixels - run.pixels[:2]) > 1e-5) < 1e-3
  np.testing.assert_array_equal(first.predicted, run.predicted[:2])
  assert report['config']['batching'] == 'vmap'


def _renormalised(model, mean, std):
  """`model` under another normalisation: the same function of the pixels, so any
  difference in a transfer matrix comes from normalising with the wrong constants."""
  own_mean, own_std = jnp.asarray(model.mean), jnp.asarray(model.std)
  mean_, std_ = jnp.asarray(mean), jnp.asarray(std)

  def apply(params, x):
    return model.apply(params, (x * std_ + mean_ - own_mean) / own_std)

  return dataclasses.replace(model, apply=apply, mean=mean, std=std)


def test_transfer_diagonal_and_own_normalisation(model, data, report):
  images, labels = data
  other = _renormalised(model, (0.0, 0.1, 0.9), (1.0, 0.5, 2.0))
  t = robustness.transfer_matrix([model, other], images, labels, attack='fgsm',
                                 epsilon=8 / 255, keep_arrays=True)
  assert json.dumps(t, default=lambda a: None, allow_nan=False)
  assert len(set(t['models'])) == 2  # two shapes models, told apart
  # Normalised with its own constants, `other` is `model`: the same clean accuracy.
  assert t['clean_accuracy'] == [0.75, 0.75]
  # The diagonal is the white-box success: the robustness study's FGSM at 8/255.
  white_box = report['attacks']['fgsm']['success_rate'][1]
  assert t['rate'][0][0] == white_box == t['white_box'][0]
  # Made on `other` in its own normalisation, the images are FGSM's on `model` (up to
  # gradient components within rounding of zero), so every entry agrees.
  arrays = t['_arrays']
  # The clean pixels themselves differ by the float32 round trip through each
  # normalisation (~1e-7); a flipped gradient sign would move a value by 2 * 8/255.
  assert np.mean(np.abs(arrays['pixels'][0] - arrays['pixels'][1]) > 1e-5) < 1e-3
  assert t['rate'] == [[white_box] * 2] * 2
  assert t['conditional'][0][0] in (1.0, None) and t['pairs'] == [[6, 6], [6, 6]]
  # The same noisy pixels, the same function of them: the same control.
  assert len(t['random_control']) == 2
  assert t['random_control'][0] == t['random_control'][1]
  expected = 1 - report['attacks']['fgsm']['accuracy'][1]
  assert np.mean(arrays['predicted'][0, 1] != labels) == pytest.approx(expected, abs=1e-12)


def test_bad_input_is_one_line(model, data):
  images, labels = data
  cases = [
      (lambda: robustness.robust_accuracy(model, images, labels, {'linfinity': [0]}),
       'epsilons has keys'),
      (lambda: robustness.robust_accuracy(model, images, labels, attacks=('cw',)), 'attack'),
      (lambda: robustness.robust_accuracy(model, images, labels, {'l2': [-1]}),
       'non-negative'),
      (lambda: robustness.robust_accuracy(model, model.preprocess(images), labels),
       '[0, 1]'),
      (lambda: robustness.transfer_matrix([], images, labels, epsilon=0.1), 'at least one'),
      (lambda: robustness.parse_model_spec('resnet51'), "unknown model 'resnet51'"),
      (lambda: robustness.parse_model_spec('shapes:one'), 'integer'),
  ]
  for call, text in cases:
    with pytest.raises(jaxviz.InputError) as info:
      call()
    assert text in str(info.value) and '\n' not in str(info.value)


def _ok(scripts, name):
  result, tmp = scripts
  code, out, err = result(name)
  assert code == 0, err[-3000:]
  return out, tmp


@pytest.mark.slow
def test_robustness_script(scripts):
  out, tmp = _ok(scripts, 'robustness')
  folder = tmp / 'r'
  with open(folder / 'robustness.json') as f:
    r = json.load(f)
  assert set(r['attacks']) == {'fgsm', 'pgd_l2'} and r['images'] == 4
  assert r['attacks']['fgsm']['epsilons_255'] == [0, 4]
  assert r['attacks']['pgd_l2']['epsilons'] == [0, 0.5]
  assert r['attacks']['fgsm']['accuracy'][0] == r['clean_accuracy']
  assert r['naive']['iterations'] == 2 and r['data'].endswith('four.npz')
  with open(folder / 'manifest.json') as f:
    manifest = json.load(f)
  assert manifest['flags']['steps'] == 1 and 'fgsm_s' in manifest['timings']
  assert (folder / 'robustness.png').stat().st_size > 0
  assert 'clean accuracy' in out and 'pgd_l2' in out


@pytest.mark.slow
def test_transfer_script(scripts):
  out, tmp = _ok(scripts, 'transfer')
  with open(tmp / 't' / 'transfer.json') as f:
    t = json.load(f)
  assert t['models'] == ['shapes:0', 'shapes:1'] and t['epsilon_255'] == pytest.approx(4)
  assert len(t['rate']) == 2 and all(len(row) == 2 for row in t['rate'])
  assert (tmp / 't' / 'transfer.png').stat().st_size > 0
  assert (tmp / 't' / 'manifest.json').is_file()
  assert 'made on / evaluated on' in out


@pytest.mark.slow
@pytest.mark.parametrize('name, text', [
    ('bad_epsilon', "--linf_epsilons='eight'"), ('one_model', 'at least two models')])
def test_scripts_bad_flags_one_line(scripts, name, text):
  result, _ = scripts
  code, _, err = result(name)
  lines = err.strip().splitlines()
  assert code == 1 and len(lines) == 1 and lines[0].startswith('error: '), err[-2000:]
  assert text in lines[0], lines[0]


def test_figures(tmp_path):
  from jaxviz import figures
  fig = figures.robustness_figure(
      {'fgsm': ([0, 4, 8], [0.9, 0.5, None])}, {'pgd_l2': ([0, 0.5], [0.9, 0.1])},
      {'linf_255': 30.0, 'l2': None, 'success_rate': 0.8, 'label': 'course'}, 'title')
  assert len(fig.axes) == 2
  linf_axis = fig.axes[0]
  assert linf_axis.get_xlim()[1] >= 30  # the course's method's size is on the axis
  figures.save(fig, str(tmp_path / 'r.png'))
  only_l2 = figures.robustness_figure({}, {'pgd_l2': ([0, 0.5], [0.9, 0.1])})
  assert len(only_l2.axes) == 1
  matrix = figures.transfer_figure([[0.9, None], [0.2, 1.0]], ['a', 'b'], 't',
                                   counts=[[5, 0], [5, 5]], control=[0.05, None])
  assert [t.get_text() for t in matrix.axes[0].get_yticklabels()] == [
      'a', 'b', 'random noise (control)']
  figures.save(matrix, str(tmp_path / 't.png'))
  assert (tmp_path / 'r.png').stat().st_size > 0 and (tmp_path / 't.png').stat().st_size > 0
  for call in (lambda: figures.robustness_figure({}, {}),
               lambda: figures.robustness_figure({'a': ([0, 1], [1.0])}, {}),
               lambda: figures.transfer_figure([[1.0]], ['a', 'b']),
               lambda: figures.transfer_figure([[1.0]], ['a'], control=[0.1, 0.2])):
    with pytest.raises(jaxviz.InputError):
      call()
