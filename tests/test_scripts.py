"""The absl scripts end to end, as subprocesses: outputs, their shapes, manifests, and
one-line errors for bad input.

Every run uses random weights and tiny settings. The runs go two at a time (they are
independent), after one warm-up run that fills a shared XLA compilation cache with the
model's init programs, which every later run reads instead of compiling them again
(~13 s each on CPU otherwise).
"""

import concurrent.futures
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import jaxviz
from conftest import XLA_CACHE

# The scripts end to end: a few minutes of compiling on two cores, the module's fixture all
# of it.
pytestmark = pytest.mark.slow
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 600


def _env(cache_dir: str) -> dict:
  env = dict(os.environ, JAX_PLATFORMS='cpu', JAXVIZ_CACHE=os.path.join(cache_dir, 'jaxviz'),
             **XLA_CACHE)
  # These runs take a few steps on tiny images: compile time is all there is, and XLA's
  # backend optimisations double it for no gain here.
  env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' --xla_backend_optimization_level=0').strip()
  return env


class _Runs:
  """Runs scripts two at a time in the background; `result(name)` waits for one.

  Two, because the machines that run these tests have two cores: more processes at once
  only fight over them (XLA compiles and runs multi-threaded).
  """

  def __init__(self, env, workers: int = 2):
    self.env, self.futures = env, {}
    self.pool = concurrent.futures.ThreadPoolExecutor(workers)

  def start(self, name: str, script: str, *args: str):
    self.futures[name] = self.pool.submit(
        subprocess.run, [sys.executable, os.path.join('scripts', f'{script}.py'), *args],
        cwd=REPO, env=self.env, capture_output=True, text=True, timeout=TIMEOUT_S)

  def result(self, name: str) -> subprocess.CompletedProcess:
    return self.futures[name].result()

  def stop(self):
    self.pool.shutdown(cancel_futures=True)


@pytest.fixture(scope='module')
def inputs(tmp_path_factory):
  root = tmp_path_factory.mktemp('inputs')
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
  # A class name and an index: .npz labels may be either.
  np.savez(root / 'two.npz', images=images, labels=np.array(['tabby', '7']))
  np.savez(root / 'gray.npz', images=images[..., 0])
  (root / 'empty').mkdir()
  return {'npz': str(root / 'two.npz'), 'gray': str(root / 'gray.npz'),
          'empty': str(root / 'empty'), 'images': images}


@pytest.fixture(scope='module')
def runs(tmp_path_factory, inputs):
  out = tmp_path_factory.mktemp('outputs')
  runs = _Runs(_env(str(tmp_path_factory.mktemp('xla_cache'))))
  common = ['--weights=random', '--image_size=64']
  # First the run that loads the model (filling the cache) and then fails on the class
  # name, beside errors that come before any model is loaded.
  runs.start('unknown_target', 'adversarial', *common, f'--images={inputs["npz"]}',
             '--target=stingrayy')
  runs.start('empty_folder', 'saliency', *common, f'--images={inputs["empty"]}')
  runs.start('grayscale_npz', 'saliency', *common, f'--images={inputs["gray"]}')
  runs.start('unknown_sample', 'class_visualization', *common, '--init=samples:nosuch')
  runs.result('unknown_target')
  # --quick, and smaller still: 1 to 10 steps per run on 32-pixel images. The longest
  # run, so it goes first.
  runs.start('make_figures', 'make_figures', '--quick', '--models=squeezenet1_1',
             '--weights=random', '--image_size=32', '--iterations_divisor=200',
             f'--output_dir={out / "figures"}')
  runs.start('saliency', 'saliency', *common, f'--images={inputs["npz"]}', '--seed=3',
             f'--output_dir={out / "saliency"}')
  runs.start('adversarial', 'adversarial', *common, f'--images={inputs["npz"]}',
             '--num_images=0', '--max_iterations=3', '--objective=cross_entropy',
             f'--output_dir={out / "adversarial"}')
  runs.start('class_visualization', 'class_visualization', *common, '--targets=tarantula,3',
             '--num_iterations=4', '--snapshot_every=2', '--optimizer=adam',
             f'--init={inputs["npz"]}', f'--output_dir={out / "class_visualization"}')
  runs.start('too_many_labels', 'saliency', *common, f'--images={inputs["npz"]}',
             '--labels=tabby,gorilla,tarantula')
  # Every architecture goes through the same scripts; one run each for the newest two.
  runs.start('saliency_resnet50', 'saliency', *common, '--model=resnet50',
             f'--images={inputs["npz"]}', f'--output_dir={out / "saliency_resnet50"}')
  runs.start('adversarial_alexnet', 'adversarial', *common, '--model=alexnet',
             f'--images={inputs["npz"]}', '--max_iterations=2',
             f'--output_dir={out / "adversarial_alexnet"}')
  runs.out = out
  yield runs
  runs.stop()


def _ok(runs, name):
  result = runs.result(name)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def _manifest(folder):
  with open(os.path.join(folder, 'manifest.json')) as f:
    return json.load(f)


def _png_size(path):
  with Image.open(path) as image:
    assert image.format == 'PNG'
    return image.size


def _class(name: str) -> int:
  return jaxviz.imagenet_class_names().index(name)


def test_saliency_writes_maps_figure_and_manifest(runs, inputs):
  result = _ok(runs, 'saliency')
  folder = runs.out / 'saliency'
  width, height = _png_size(folder / 'saliency.png')
  assert height > width  # 2 images: two columns of (image over map)
  with np.load(folder / 'results.npz') as r:
    assert np.array_equal(r['images'], inputs['images'])
    assert r['maps'].shape == (2, 64, 64) and np.isfinite(r['maps']).all()
    assert (r['maps'] >= 0).all()
    # The labels came from the .npz: a name and an index.
    assert r['labels'].tolist() == [_class('tabby'), 7]
  manifest = _manifest(folder)
  assert manifest['flags']['seed'] == 3 and manifest['flags']['objective'] == 'score'
  assert manifest['flags']['images'] == inputs['npz']
  assert manifest['weights']['source'] == 'random'
  assert manifest['label_source'] == "the images' labels"
  # Both calls timed; the first compiles, so it takes time at any rounding (the second,
  # already compiled on two 64-pixel images, may round to 0.000 s). The line printed
  # reports the same numbers.
  timings = manifest['timings']
  assert set(timings) == {'first_call_s', 'second_call_s'}, timings
  assert timings['first_call_s'] > 0 and timings['second_call_s'] <= timings['first_call_s']
  assert f"first call {timings['first_call_s']:.2f} s (compiles)" in result.stdout
  assert 'tabby' in result.stdout


def test_adversarial_records_a_consistent_perturbation(runs, inputs):
  result = _ok(runs, 'adversarial')
  folder = runs.out / 'adversarial'
  _png_size(folder / 'fooling.png')
  with np.load(folder / 'results.npz') as r:
    assert r['original'].shape == r['fooled'].shape == (2, 64, 64, 3)
    assert np.allclose(r['original'], jaxviz.preprocess(inputs['images']), atol=1e-6)
    assert ((0 <= r['iterations']) & (r['iterations'] <= 3)).all()
    # The recorded norms are those of the saved images' difference.
    delta = (r['fooled'] - r['original']).reshape(2, -1)
    np.testing.assert_allclose(r['l2'], np.linalg.norm(delta, axis=1), rtol=1e-4, atol=1e-5)
    target = _class('stingray')
    assert (r['target'] == target).all()
    assert np.array_equal(r['success'], r['predicted'] == target)
    assert r['fooled_uint8'].dtype == np.uint8
  manifest = _manifest(folder)
  assert manifest['flags']['max_iterations'] == 3 and manifest['flags']['seed'] == 0
  assert manifest['flags']['objective'] == 'cross_entropy'
  assert 'image0:' in result.stdout and 'image1:' in result.stdout  # a line per image


def test_scripts_take_resnet50_and_alexnet(runs):
  _ok(runs, 'saliency_resnet50')
  folder = runs.out / 'saliency_resnet50'
  with np.load(folder / 'results.npz') as r:
    assert r['maps'].shape == (2, 64, 64) and np.isfinite(r['maps']).all()
    assert r['maps'].max() > 0
  assert _manifest(folder)['weights']['model'] == 'resnet50'
  _ok(runs, 'adversarial_alexnet')
  folder = runs.out / 'adversarial_alexnet'
  with np.load(folder / 'results.npz') as r:
    assert ((0 <= r['iterations']) & (r['iterations'] <= 2)).all()
    assert np.abs(r['fooled'] - r['original']).max() > 0  # a step was taken
  assert _manifest(folder)['weights']['model'] == 'alexnet'


def test_class_visualization_from_images_with_adam_and_snapshots(runs):
  result = _ok(runs, 'class_visualization')
  folder = runs.out / 'class_visualization'
  for png in ('class_visualization.png', 'probability.png', 'snapshots.png'):
    _png_size(folder / png)
  with np.load(folder / 'results.npz') as r:
    assert r['images'].shape == r['normalised'].shape == (2, 64, 64, 3)
    assert 0 <= r['images'].min() and r['images'].max() <= 1
    low, high = jaxviz.valid_range()
    assert (r['normalised'] >= low - 1e-5).all() and (r['normalised'] <= high + 1e-5).all()
    assert r['targets'].tolist() == [_class('tarantula'), 3]
    assert r['probability_trace'].shape == (2, 4)
    assert r['snapshots'].shape == (2, 2, 64, 64, 3)
    assert r['init'].shape == (2, 64, 64, 3)
  assert _manifest(folder)['flags']['optimizer'] == 'adam'
  # The progress bar counted the 4 steps once each (not once per image).
  assert '4/4' in result.stderr and '8/4' not in result.stderr


def test_make_figures_quick_indexes_every_figure(runs):
  result = _ok(runs, 'make_figures')
  folder = runs.out / 'figures'
  with open(folder / 'index.md') as f:
    index = f.read()
  with open(folder / 'index.html') as f:
    page = f.read()
  for n in range(1, 37):
    assert f'## Figure {n}:' in index
  # 25: receptive fields (no weights); 29, 35, 36: scripts run as their own processes.
  made = [1, 2, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 17, 18, 21, 25, 29, 35, 36]
  for n in made:
    (png,) = [p for p in os.listdir(folder) if p.startswith(f'fig{n:02d}_')]
    assert f'src="{png}"' in page
    assert os.path.getsize(folder / png) < 400_000
  assert index.count('Skipped: vgg16 is not in --models') == 4  # figures 3, 4, 15, 16
  assert 'WEIGHTS WERE RANDOM' in index and 'QUICK MODE' in page
  assert 'scripts/class_visualization.py' in index  # each figure names its command
  for script in ('feature_visualization', 'activations', 'filters'):
    assert f'python scripts/{script}.py --weights=random --image_size=32' in index
  for label in ('figures 1-2', 'figures 5-6', 'figures 7-10', 'figures 13-14'):
    assert label in result.stdout  # progress per figure
  assert _manifest(folder)['flags']['quick'] is True


@pytest.mark.parametrize('name, message', [
    ('unknown_target', "unknown class 'stingrayy'"),
    ('empty_folder', 'no image files'),
    ('grayscale_npz', 'expected (N, H, W, 3) RGB'),
    ('too_many_labels', '--labels has 3 classes for 2 images'),
    ('unknown_sample', "no sample photo 'nosuch'"),
])
def test_bad_input_is_a_one_line_error(runs, name, message):
  result = runs.result(name)
  assert result.returncode == 1
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), result.stderr[-2000:]
  assert message in lines[0]


# scripts/attribution.py and scripts/occlusion.py: their own runs (and compilation cache),
# so that `-k "attribution or occlusion"` does not wait for the runs above.

# scripts/attribution.py's default columns.
ATTRIBUTION_DEFAULTS = ('gradient', 'smoothgrad', 'integrated_gradients', 'guided_backprop',
                        'deconvnet', 'grad_cam', 'guided_grad_cam', 'occlusion')


@pytest.fixture(scope='module')
def attribution_runs(tmp_path_factory, inputs):
  out = tmp_path_factory.mktemp('attribution_outputs')
  runs = _Runs(_env(str(tmp_path_factory.mktemp('attribution_xla_cache'))))
  common = ['--weights=random', '--image_size=64', f'--images={inputs["npz"]}']
  shapes = ['--model=shapes', '--weights=random', '--images=shapes:2']
  # The errors that come before any model is loaded first, then the longest run.
  runs.start('bad_methods', 'attribution', *common, '--methods=gradient,gradcam')
  runs.start('big_window', 'occlusion', *common, '--window=65')
  runs.start('attribution', 'attribution', *common, '--samples=2', '--steps=2',
             '--window=16', '--stride=8', '--seed=1', f'--output_dir={out / "attribution"}')
  # The small model: the default occluder scaled to its 64-px images, grey maps.
  runs.start('attribution_shapes', 'attribution', *shapes, '--samples=2', '--nooverlay',
             '--methods=gradient_x_input,grad_cam,occlusion,smoothgrad',
             f'--output_dir={out / "attribution_shapes"}')
  runs.start('occlusion_shapes', 'occlusion', *shapes, f'--output_dir={out / "occlusion_shapes"}')
  runs.start('occlusion', 'occlusion', *common, '--window=16', '--stride=8', '--labels=tabby',
             f'--output_dir={out / "occlusion"}')
  runs.start('bad_layer', 'attribution', *shapes, '--methods=grad_cam', '--layer=features.99')
  runs.out = out
  yield runs
  runs.stop()


def test_attribution_writes_every_method_grid_and_timings(attribution_runs, inputs):
  result = _ok(attribution_runs, 'attribution')
  folder = attribution_runs.out / 'attribution'
  width, height = _png_size(folder / 'attribution.png')
  assert width > height  # 2 rows of 1 + 8 panels
  assert os.path.getsize(folder / 'attribution.png') < 400_000
  with np.load(folder / 'results.npz') as r:
    assert np.array_equal(r['images'], inputs['images'])
    assert r['labels'].tolist() == [_class('tabby'), 7]
    assert r['methods'].tolist() == list(ATTRIBUTION_DEFAULTS)
    for method in ATTRIBUTION_DEFAULTS:
      maps = r[f'maps_{method}']
      assert maps.shape == (2, 64, 64) and np.isfinite(maps).all(), method
      if method != 'occlusion':  # occlusion's score drop may be negative
        assert (maps >= 0).all(), method
  manifest = _manifest(folder)
  assert list(manifest['seconds']) == list(ATTRIBUTION_DEFAULTS)
  assert all(s > 0 for s in manifest['seconds'].values())
  assert manifest['options']['grad_cam']['layer'] == 'features.12'
  assert manifest['options']['smoothgrad']['samples'] == 2
  assert manifest['options']['integrated_gradients'] == {
      'steps': 2, 'rule': 'gausslegendre', 'step_chunk': 2}
  assert manifest['occlusion'] == {'window': 16, 'stride': 8, 'chosen': 'given'}
  assert manifest['flags']['seed'] == 1
  for method in ATTRIBUTION_DEFAULTS:  # a summary line per method
    assert f'  {method} ' in result.stdout


def test_attribution_on_shapes_scales_the_occluder(attribution_runs):
  result = _ok(attribution_runs, 'attribution_shapes')
  folder = attribution_runs.out / 'attribution_shapes'
  _png_size(folder / 'attribution.png')
  methods = ['gradient_x_input', 'grad_cam', 'occlusion', 'smoothgrad']
  with np.load(folder / 'results.npz') as r:
    assert r['methods'].tolist() == methods
    for method in methods:
      assert r[f'maps_{method}'].shape == (2, 64, 64), method
      assert np.isfinite(r[f'maps_{method}']).all(), method
  occluder = _manifest(folder)['occlusion']
  assert (occluder['window'], occluder['stride']) == (5, 2)  # 16 / 8 px scaled by 64 / 224
  assert 'scaled' in occluder['chosen'] and 'scaled' in result.stdout


def test_occlusion_writes_panels_per_image_and_consistent_maps(attribution_runs, inputs):
  _ok(attribution_runs, 'occlusion')
  folder = attribution_runs.out / 'occlusion'
  for name in ('image0', 'image1'):  # the .npz has no names
    assert os.path.getsize(folder / f'occlusion_{name}.png') < 300_000
  with np.load(folder / 'results.npz') as r:
    grid = (2, 7, 7)  # (64 - 16) // 8 + 1 positions a side
    assert r['probability'].shape == r['score_drop'].shape == r['predicted'].shape == grid
    assert ((0 <= r['probability']) & (r['probability'] <= 1)).all()
    assert np.isfinite(r['score_drop']).all() and np.isfinite(r['attribution']).all()
    assert r['attribution'].shape == (2, 64, 64)
    assert ((0 <= r['predicted']) & (r['predicted'] < 1000)).all()
    assert r['labels'].tolist() == [_class('tabby')] * 2
    # Pixel (0, 0) lies in the first window only: its attribution is that window's drop.
    np.testing.assert_allclose(r['attribution'][:, 0, 0], r['score_drop'][:, 0, 0],
                               rtol=1e-5, atol=1e-6)
  manifest = _manifest(folder)
  assert manifest['occlusion']['grid'] == [7, 7]
  assert manifest['figures'] == ['occlusion_image0.png', 'occlusion_image1.png']


def test_occlusion_on_shapes_scales_the_occluder(attribution_runs):
  result = _ok(attribution_runs, 'occlusion_shapes')
  folder = attribution_runs.out / 'occlusion_shapes'
  _png_size(folder / 'occlusion_shape0.png')
  with np.load(folder / 'results.npz') as r:
    assert r['probability'].shape == (2, 30, 30)  # window 5, stride 2 on 64 px
    assert int(r['window']) == 5 and int(r['stride']) == 2
    assert np.isfinite(r['attribution']).all()
  assert 'scaled' in result.stdout


@pytest.mark.parametrize('name, message', [
    ('bad_methods', "--methods: unknown method(s) 'gradcam'; known: gradient"),
    ('bad_layer', "--layer: unknown layer 'features.99' for shapes"),
    ('big_window', '--window=65 is larger than the 64-px images'),
])
def test_attribution_and_occlusion_bad_input_is_a_one_line_error(attribution_runs, name,
                                                                 message):
  result = attribution_runs.result(name)
  assert result.returncode == 1
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), result.stderr[-2000:]
  assert message in lines[0]


# scripts/attack.py: its own runs (and compilation cache), so that `-k attack` does not wait
# for the runs above.

# Float32 slack of a budget check on pixels compared with the uint8 originals / 255: the
# attack's clean pixels are clip(x * std + mean) of the preprocessed images (a few 1e-8
# from u / 255), plus one rounding of the final addition (6e-8); 1e-6 is 10x that.
PIXEL_ATOL = 1e-6


@pytest.fixture(scope='module')
def attack_runs(tmp_path_factory, inputs):
  out = tmp_path_factory.mktemp('attack_outputs')
  runs = _Runs(_env(str(tmp_path_factory.mktemp('attack_xla_cache'))))
  common = ['--weights=random', '--image_size=64']
  # Each attack compiles its own program (seconds each): SqueezeNet runs one L-infinity
  # and one L2 attack, the small shapes model the iterative L-infinity ones and the
  # course's fooling method, targeted. The two one-line errors come before any model.
  runs.start('attack', 'attack', *common, f'--images={inputs["npz"]}', '--num_images=0',
             '--attacks=fgsm,pgd_l2', '--steps=2', f'--output_dir={out / "attack"}')
  runs.start('attack_junk_epsilon', 'attack', *common, '--epsilon=junk')
  runs.start('attack_negative_epsilon', 'attack', *common, '--epsilon=-8/255')
  runs.start('attack_shapes', 'attack', '--model=shapes', '--weights=random',
             '--targeted', '--target=ring', '--attacks=bim,pgd,fooling', '--steps=3',
             '--fooling_iterations=3', '--epsilon=0.05', f'--output_dir={out / "shapes"}')
  runs.out = out
  yield runs
  runs.stop()


def test_attack_stays_in_the_budget_and_checks_the_saved_pngs(attack_runs, inputs):
  result = _ok(attack_runs, 'attack')
  folder = attack_runs.out / 'attack'
  manifest = _manifest(folder)
  assert manifest['figures'] == ['attack_image0.png', 'attack_image1.png']
  for png in manifest['figures']:
    _png_size(folder / png)
    assert os.path.getsize(folder / png) < 300_000
  epsilon, epsilon_l2 = 8 / 255, 3.0 * 64 / 224  # the defaults at 64 px
  assert manifest['epsilon'] == pytest.approx(epsilon, rel=1e-12)
  assert manifest['epsilon_l2'] == pytest.approx(epsilon_l2, rel=1e-12)
  assert manifest['epsilon_l2_chosen'] == 'default'
  assert list(manifest['seconds']) == ['fgsm', 'pgd_l2']
  with np.load(folder / 'results.npz') as r:
    assert r['attacks'].tolist() == ['fgsm', 'pgd_l2']
    assert r['norm'].tolist() == ['linf', 'l2']
    np.testing.assert_allclose(r['epsilon'], [epsilon, epsilon_l2], rtol=1e-12)
    assert np.array_equal(r['original'], inputs['images'])
    assert r['labels'].tolist() == [_class('tabby'), 7]  # the .npz's labels
    assert r['pixels'].shape == (2, 2, 64, 64, 3)
    assert ((0 <= r['pixels']) & (r['pixels'] <= 1)).all()
    delta = (r['pixels'] - inputs['images'] / 255).reshape(2, 2, -1)
    linf, l2 = np.abs(delta).max(axis=-1), np.linalg.norm(delta, axis=-1)
    # The recorded norms are those of the saved images; each image lies in its ball.
    np.testing.assert_allclose(r['linf'], linf, atol=PIXEL_ATOL)
    np.testing.assert_allclose(r['l2'], l2, rtol=1e-5, atol=1e-5)
    # FGSM moves every pixel whose gradient is not zero by the whole budget.
    np.testing.assert_allclose(linf[0], epsilon, atol=PIXEL_ATOL)
    # L2: 12,288 float32 terms summed, a relative 1e-5 at most.
    assert (l2[1] <= epsilon_l2 * (1 + 1e-5)).all()
    assert r['steps'].tolist() == [[1, 1], [2, 2]]
    assert np.array_equal(r['success'], r['predicted'] != r['labels'])
    # The 8-bit check: what was read back is what the files hold, the rounded images,
    # and its verdict follows its own predictions.
    files = r['files']
    assert files.tolist() == [['image0_fgsm.png', 'image1_fgsm.png'],
                              ['image0_pgd_l2.png', 'image1_pgd_l2.png']]
    for a in range(2):
      for i in range(2):
        with Image.open(folder / files[a, i]) as png:
          assert png.mode == 'RGB'
          assert np.array_equal(np.asarray(png), r['uint8'][a, i])
    assert np.array_equal(r['uint8'], np.round(r['pixels'] * 255).astype(np.uint8))
    assert np.array_equal(r['uint8_success'], r['uint8_predicted'] != r['labels'])
    grey_levels = np.abs(r['uint8'].astype(int) - inputs['images']).reshape(2, 2, -1).max(-1)
    np.testing.assert_allclose(r['uint8_linf'], grey_levels / 255, rtol=1e-12)
    # 8/255 is a whole number of grey levels: rounding keeps FGSM's PNGs in the budget.
    assert grey_levels[0].tolist() == [8, 8]
  for name in ('image0', 'image1'):
    for title in ('FGSM', 'PGD-L2'):  # the table: a line per image and attack
      assert any(line.split()[:2] == [name, title] for line in result.stdout.splitlines())
  assert 'Linf at most 8/255 (within the budget' in result.stdout
  assert '2/2' in result.stderr  # PGD-L2's progress bar


def test_attack_targeted_on_shapes_with_the_fooling_method(attack_runs):
  result = _ok(attack_runs, 'attack_shapes')
  folder = attack_runs.out / 'shapes'
  manifest = _manifest(folder)
  assert manifest['figures'] == ['attack_shape0.png']  # --images=samples: shapes images
  assert os.path.getsize(folder / 'attack_shape0.png') < 300_000
  assert manifest['label_source'] == '--target'
  with np.load(folder / 'results.npz') as r:
    assert r['attacks'].tolist() == ['bim', 'pgd', 'fooling'] and bool(r['targeted'])
    assert r['original'].shape == (1, 64, 64, 3)
    assert r['labels'].tolist() == [jaxviz.shapes.CLASS_NAMES.index('ring')]
    assert np.array_equal(r['success'], r['predicted'] == r['labels'])
    assert np.array_equal(r['uint8_success'], r['uint8_predicted'] == r['labels'])
    assert r['norm'].tolist() == ['linf', 'linf', 'none'] and np.isinf(r['epsilon'][2])
    linf = np.abs(r['pixels'][:2] - r['original'] / 255).reshape(2, -1).max(-1)
    assert (linf <= 0.05 + PIXEL_ATOL).all()
    # 0.05 is 12.75 grey levels: rounding may reach 13, never more.
    assert (r['uint8_linf'][:2] * 255 <= 13 + 1e-9).all()
    assert r['steps'][:2].tolist() == [[3], [3]] and 0 <= r['steps'][2, 0] <= 3
  assert 'not a whole number of grey levels' in result.stdout
  assert 'fooling (course)' in result.stdout


@pytest.mark.parametrize('name, message', [
    ('attack_junk_epsilon', "--epsilon='junk': expected a number or a fraction such as "
                            '8/255'),
    ('attack_negative_epsilon', '--epsilon=-8/255 is negative'),
])
def test_attack_bad_epsilon_is_a_one_line_error(attack_runs, name, message):
  result = attack_runs.result(name)
  assert result.returncode == 1
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), result.stderr[-2000:]
  assert message in lines[0]
