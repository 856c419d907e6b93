"""Activation maps and filters (jaxviz.inspection): activation maps certified in float64
against torch forward hooks on the random-init torchvision model; kernels equal to torch's
weights exactly; compilation, bad input, the figures, and the two scripts end to end."""

import concurrent.futures
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip('torch')  # the float64 references; the [test] extra

import jaxviz  # noqa: E402
import weights_convert  # noqa: E402
from conftest import XLA_CACHE, counting_hooks, rel_err  # noqa: E402
from jaxviz import figures, inspection, models  # noqa: E402
from jaxviz.errors import InputError  # noqa: E402
from torch_helpers import to_nhwc, torch_model  # noqa: E402

NAME, SEED, SIZE = 'squeezenet1_1', 0, 64
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# torch module names; jaxviz's layer names are the same strings.
TORCH_LAYERS = ('features.1', 'features.3.expand3x3_activation', 'features.5',
                'features.12')



@pytest.fixture(scope='module')
def images64():
  rng = np.random.default_rng(0)
  pixels = rng.random((2, SIZE, SIZE, 3))
  return (pixels - np.array(jaxviz.IMAGENET_MEAN)) / np.array(jaxviz.IMAGENET_STD)


def _x64(fn, *args, **kwargs):
  with jax.enable_x64(True):
    return jax.tree.map(np.asarray, fn(*args, **kwargs))


def _torch_hooks(model, x_nhwc, names):
  """{module name: NHWC output}, copied as each forward hook fires (torchvision's ReLUs
  are in place: a later module would rewrite a captured tensor)."""
  captured, handles = {}, []
  modules = dict(model.named_modules())

  def keep(name):
    def hook(module, inputs, output):  # returns None: a hook's value would replace output
      captured.setdefault(name, to_nhwc(output))
    return hook

  for name in names:
    handles.append(modules[name].register_forward_hook(keep(name)))
  try:
    with torch.no_grad():
      model(torch.tensor(np.asarray(x_nhwc).transpose(0, 3, 1, 2)))
  finally:
    for h in handles:
      h.remove()
  return captured


def test_activation_maps_equal_torch_forward_hooks_float64(model64, images64):
  expected = _torch_hooks(torch_model(NAME, SEED), images64, TORCH_LAYERS)
  _, inter = _x64(lambda: jax.jit(lambda p, x: model64.intermediates(p, x, TORCH_LAYERS))(
      model64.params, images64))
  for layer in TORCH_LAYERS:
    got = _x64(inspection.activation_maps, model64, model64.params, images64, layer)
    assert got.shape == expected[layer].shape, layer
    # float64: the frameworks differ only in the order of some sums, ~1e-16 relative
    # (measured <= 3e-16); a wrong layer, a missed ReLU or a pool off by one pixel is
    # O(1) off.
    assert rel_err(got, expected[layer]) <= 1e-12, (layer, rel_err(got, expected[layer]))
    # The same computation as model.intermediates under jit: equal to the last bit.
    np.testing.assert_array_equal(got, inter[layer])
  assert (_x64(inspection.activation_maps, model64, model64.params, images64,
               'features.1') >= 0).all()  # after the ReLU


@pytest.fixture(scope='module')
def shapes_random():
  return jaxviz.load_model('shapes', 'random')


def test_activation_maps_default_and_any_model(shapes_random):
  model = shapes_random
  x = model.preprocess(jaxviz.shapes.generate(2, seed=3).images)
  got = inspection.activation_maps(model, model.params, x)  # the first conv's ReLU
  names = ('features.0_activation', 'features.2.squeeze')
  _, inter = jax.jit(lambda p, x: model.intermediates(p, x, names))(model.params, x)
  # One jitted program against another holding more layers: XLA may fuse differently,
  # float32 rounding (measured 0); a wrong layer differs by O(1).
  assert rel_err(got, inter['features.0_activation']) <= 1e-6
  assert got.shape == (2, 32, 32, 32)
  pre_relu = inspection.activation_maps(model, model.params, x, 'features.2.squeeze')
  assert rel_err(pre_relu, inter['features.2.squeeze']) <= 1e-6
  assert (np.asarray(pre_relu) < 0).any()  # the conv + BN output, before its ReLU


def test_activation_maps_compile_once_per_shape_and_layer(shapes_random):
  model = shapes_random
  counting, traces = counting_hooks(model)
  x = model.preprocess(jaxviz.shapes.generate(3, seed=3).images)
  layer = 'features.3.expand1x1_activation'
  first = inspection.activation_maps(counting, model.params, x[:2], layer)
  second = inspection.activation_maps(counting, model.params, x[1:], layer)
  assert len(traces) == 1
  np.testing.assert_array_equal(np.asarray(first[1]), np.asarray(second[0]))
  inspection.activation_maps(counting, model.params, x, layer)  # a new batch size
  inspection.activation_maps(counting, model.params, x[:2], 'features.5')  # a new layer
  assert len(traces) == 3


def test_activation_maps_bad_input(shapes_random):
  model = shapes_random
  x = model.preprocess(jaxviz.shapes.generate(1, seed=3).images)
  cases = [
      (lambda: inspection.activation_maps(model, model.params, x, 'features.99'),
       'unknown layer'),
      (lambda: inspection.activation_maps(model.apply, model.params, x, 'features.1'),
       'pass the model from jaxviz.load_model'),
      (lambda: inspection.activation_maps(model, model.params, np.zeros((1, 8, 8, 3),
                                                                        np.uint8)),
       'normalised floats'),
      (lambda: inspection.activation_maps(model, model.params, x.at[0, 0, 0, 0].set(
          jnp.nan)), 'NaN'),
      (lambda: inspection.activation_maps(model, model.params, x[0]), 'shape'),
  ]
  for call, match in cases:
    with pytest.raises(InputError, match=match) as info:
      call()
    assert '\n' not in str(info.value)


# ----------------------------------------------------------------------------------------
# Filters.

def test_first_layer_filters_equal_the_torch_weight(model64):
  w = torch_model(NAME, SEED).features[0].weight.detach().numpy()  # (64, 3, 3, 3) OIHW
  raw = inspection.first_layer_filters(model64, model64.params, 'none')
  # Exact: the conversion is a transpose and a float64 -> float32 -> float64 round trip of
  # values torch initialised in float32.
  np.testing.assert_array_equal(raw, w.transpose(0, 2, 3, 1))
  tiles = inspection.first_layer_filters(model64, model64.params)  # scale='filter'
  ref = w.transpose(0, 2, 3, 1)
  low = ref.min(axis=(1, 2, 3), keepdims=True)
  high = ref.max(axis=(1, 2, 3), keepdims=True)
  np.testing.assert_array_equal(tiles, (ref - low) / (high - low))
  assert (tiles.min(axis=(1, 2, 3)) == 0).all() and (tiles.max(axis=(1, 2, 3)) == 1).all()
  joint = inspection.first_layer_filters(model64, model64.params, 'joint')
  np.testing.assert_array_equal(joint, (ref - ref.min()) / (ref.max() - ref.min()))
  assert joint.min() == 0 and joint.max() == 1
  assert (joint.max(axis=(1, 2, 3)) < 1).sum() == len(joint) - 1  # one filter holds the max


@pytest.mark.parametrize('name,shape', [
    ('squeezenet1_1', (64, 3, 3, 3)), ('vgg16', (64, 3, 3, 3)),
    ('alexnet', (64, 3, 11, 11)), ('resnet18', (64, 3, 7, 7)), ('resnet50', (64, 3, 7, 7)),
    ('shapes', (32, 3, 3, 3))])
def test_first_convolution_of_every_model(name, shape):
  apply, hooked, params = models.functionalize(models.build_abstract(name))
  model = jaxviz.Model(name, apply, hooked, params, ('x',) * 10, (0, 0, 0), (1, 1, 1),
                       {'image_size': 64 if name == 'shapes' else 224})
  first = inspection.first_conv(model)
  assert first == ('conv1' if name.startswith('resnet') else 'features.0')
  kernel = inspection.conv_kernel(model, params, first)
  assert (kernel.shape[3], kernel.shape[2], *kernel.shape[:2]) == shape


def _torch_params(name):
  """(torchvision model with float32 random init, its weights converted to jaxviz's params,
  a jaxviz Model of that architecture with abstract parameters for the layer names)."""
  torch.manual_seed(1)
  import torchvision
  model = torchvision.models.get_model(name, weights=None).eval()
  params = weights_convert.convert_state_dict(name, model.state_dict())
  apply, hooked, abstract = models.functionalize(models.build_abstract(name))
  jax_model = jaxviz.Model(name, apply, hooked, abstract, jaxviz.imagenet_class_names(),
                           jaxviz.IMAGENET_MEAN, jaxviz.IMAGENET_STD, {})
  return model, params, jax_model


def test_layer_filters_equal_torch_weights(model64):
  """A Fire module's sub-convolution, deeper ResNet convolutions, and (below) VGG16's."""
  torch_sq = torch_model(NAME, SEED)
  sq = model64  # for its layer names; the parameters are converted here
  sq_params = weights_convert.convert_state_dict(NAME, torch_sq.state_dict())
  for layer, module in (('features.3.expand3x3', torch_sq.features[3].expand3x3),
                        ('features.12.squeeze', torch_sq.features[12].squeeze),
                        ('classifier.1', torch_sq.classifier[1])):
    got = inspection.layer_filters(sq, sq_params, layer)
    np.testing.assert_array_equal(got, module.weight.detach().numpy())  # exact: a transpose
  assert inspection.layer_filters(sq, sq_params, 'features.3.expand3x3').shape == (64, 16, 3, 3)
  torch_rn, rn_params, rn = _torch_params('resnet18')
  for layer in ('conv1', 'layer1.0.conv2', 'layer2.0.downsample.0'):
    module = dict(torch_rn.named_modules())[layer]
    np.testing.assert_array_equal(inspection.layer_filters(rn, rn_params, layer),
                                  module.weight.detach().numpy())


@pytest.mark.slow  # torchvision's VGG16 init: 138 M parameters, ~10 s
def test_layer_filters_vgg16_equal_torch_weights():
  torch_vgg, params, vgg = _torch_params('vgg16')
  for layer in ('features.0', 'features.5', 'features.28'):
    module = dict(torch_vgg.named_modules())[layer]
    np.testing.assert_array_equal(inspection.layer_filters(vgg, params, layer),
                                  module.weight.detach().numpy())
  assert inspection.conv_layers(vgg, params) == tuple(
      f'features.{i}' for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28))
  with pytest.raises(InputError, match="'classifier.0' of vgg16 is not a convolution"):
    inspection.layer_filters(vgg, params, 'classifier.0')  # a Linear layer


def test_layer_filters_shapes_model_reads_the_conv_before_batch_norm(shapes_random):
  model = shapes_random
  got = inspection.layer_filters(model, model.params, 'features.2.squeeze')
  expected = np.asarray(model.params['features'][2]['squeeze']['conv']['kernel'])
  np.testing.assert_array_equal(got, expected.transpose(3, 2, 0, 1))


def test_filters_bad_input(model64):
  model, p = model64, model64.params
  cases = [
      (lambda: inspection.layer_filters(model, p, 'features.1'),
       "'features.1' of squeezenet1_1 is not a convolution; convolutions: features.0, "),
      (lambda: inspection.layer_filters(model, p, 'features.3'),
       'its convolutions are features.3.squeeze, features.3.expand1x1, '
       'features.3.expand3x3'),
      (lambda: inspection.layer_filters(model, p, 'features.3.squeeze_activation'),
       'not a convolution'),
      (lambda: inspection.layer_filters(model, p, 'conv1'), 'unknown layer'),
      (lambda: inspection.layer_filters(model.apply, p, 'features.0'), 'jaxviz.load_model'),
      (lambda: inspection.first_layer_filters(model, p, 'minmax'), 'scale must be one of'),
  ]
  for call, match in cases:
    with pytest.raises(InputError, match=match.replace('.', r'\.')) as info:
      call()
    assert '\n' not in str(info.value)


# ----------------------------------------------------------------------------------------
# Figures.

def _titles(fig):
  """Every axis title, line breaks of the wrapping as spaces."""
  return ' '.join(' '.join(ax.get_title().split()) for ax in fig.axes)


def test_activation_maps_figure_counts_dead_channels(tmp_path):
  rng = np.random.default_rng(0)
  acts = rng.random((6, 5, 7))
  acts[..., [1, 4]] = 0  # dead
  acts[..., 5] = 2.0  # constant, not dead
  image = rng.random((24, 24, 3))
  fig = figures.activation_maps_figure(image, acts, 'title')
  text = _titles(fig)
  assert '2 of 7 channels dead (all zero)' in text and '1 constant non-zero' in text
  mosaic = fig.axes[1].get_images()[0].get_array()
  blank = mosaic[0:6, 6:11]  # channel 1: row 0, column 1 of a 3-column grid, 1-px gaps
  assert np.allclose(blank, 0.85)
  assert figures.save(fig, str(tmp_path / 'a.png'))
  shared = figures.activation_maps_figure(image, acts, scale='shared', max_channels=4)
  assert '4 of 7 channels, one shared scale' in _titles(shared)
  assert '2 of 7 channels dead' in _titles(shared)  # counted over all, 4 drawn
  for bad, match in ((acts[0], 'expected one image'), (acts * np.nan, 'NaN')):
    with pytest.raises(InputError, match=match):
      figures.activation_maps_figure(image, bad)
  with pytest.raises(InputError, match='scale'):
    figures.activation_maps_figure(image, acts, scale='global')


def test_filter_figures(tmp_path):
  rng = np.random.default_rng(0)
  fig = figures.first_layer_filters_figure(rng.random((10, 11, 11, 3)), 'alexnet-like')
  assert '10 filters of 11 x 11 x 3' in _titles(fig)
  figures.save(fig, str(tmp_path / 'f.png'))
  fig = figures.layer_filters_figure(rng.normal(size=(20, 30, 3, 3)), max_outputs=4,
                                     max_inputs=6)
  ax = fig.axes[0]
  assert len(ax.get_xticks()) == 6 and len(ax.get_yticks()) == 4
  figures.save(fig, str(tmp_path / 'g.png'))
  with pytest.raises(InputError, match='expected \\(C_out, C_in, k, k\\)'):
    figures.layer_filters_figure(np.zeros((3, 3, 3)))


# ----------------------------------------------------------------------------------------
# The scripts end to end (random weights, the 64-pixel shapes model: seconds of compute,
# the rest start-up and compilation).

def _env(cache_dir: str) -> dict:
  env = dict(os.environ, JAX_PLATFORMS='cpu', JAXVIZ_CACHE=os.path.join(cache_dir, 'jaxviz'),
             **XLA_CACHE)
  env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' --xla_backend_optimization_level=0').strip()
  return env


@pytest.fixture(scope='module')
def script_runs(tmp_path_factory):
  root = tmp_path_factory.mktemp('inspection_scripts')
  env = _env(str(root / 'xla'))
  common = ['--model=shapes', '--weights=random']
  runs = {
      'activations': ('activations', *common, '--layer=features.2.expand3x3_activation',
                      '--num_images=2', '--max_channels=12', f'--output_dir={root}/act'),
      'filters': ('filters', *common, f'--output_dir={root}/filters'),
      'deeper': ('filters', *common, '--layer=features.3.expand3x3', '--max_filters=4',
                 '--max_inputs=5', f'--output_dir={root}/deeper'),
      'bad_layer': ('filters', *common, '--layer=features.3', f'--output_dir={root}/bad'),
      'bad_activation': ('activations', *common, '--layer=features.99',
                         f'--output_dir={root}/bad2'),
  }
  run = lambda script, *args: subprocess.run(
      [sys.executable, os.path.join('scripts', f'{script}.py'), *args], cwd=REPO, env=env,
      capture_output=True, text=True, timeout=600)
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    futures = {name: pool.submit(run, *args) for name, args in runs.items()}
    return root, {name: f.result() for name, f in futures.items()}


@pytest.mark.slow
def test_activations_script(script_runs, shapes_random):
  root, runs = script_runs
  r = runs['activations']
  assert r.returncode == 0, r.stderr
  with np.load(root / 'act' / 'results.npz') as f:
    acts = f['activations']
    assert acts.shape == (2, 16, 16, 32)  # all 32 channels saved, 12 drawn
    assert str(f['layer']) == 'features.2.expand3x3_activation'
    np.testing.assert_array_equal(f['dead_channels'], (acts == 0).all(axis=(1, 2)).sum(-1))
  model = shapes_random
  x = model.preprocess(jaxviz.data.load_images('shapes').images[:2])
  expected = inspection.activation_maps(model, model.params, x,
                                        'features.2.expand3x3_activation')
  # Another process, --xla_backend_optimization_level=0: float32 rounding only.
  assert rel_err(acts, expected) <= 1e-5
  assert sorted(os.listdir(root / 'act')) == ['activations_shape0.png',
                                              'activations_shape1.png', 'manifest.json',
                                              'results.npz']
  assert all(os.path.getsize(root / 'act' / f) < 300_000 for f in os.listdir(root / 'act'))
  bad = runs['bad_activation']
  assert bad.returncode == 1 and bad.stderr.strip().count('\n') == 0
  assert '--layer=features.99: unknown layer for shapes' in bad.stderr


@pytest.mark.slow
def test_filters_script(script_runs, shapes_random):
  root, runs = script_runs
  model = shapes_random
  for name, layer, shape in (('filters', 'features.0', (32, 3, 3, 3)),
                             ('deeper', 'features.3.expand3x3', (32, 16, 3, 3))):
    r = runs[name]
    assert r.returncode == 0, r.stderr
    with np.load(root / name / 'results.npz') as f:
      assert str(f['layer']) == layer
      np.testing.assert_array_equal(f['filters'], inspection.layer_filters(
          model, model.params, layer))  # the same seeded init in both processes
      assert f['filters'].shape == shape
    assert os.path.getsize(root / name / 'filters.png') < 300_000
  bad = runs['bad_layer']
  assert bad.returncode == 1 and bad.stderr.strip().count('\n') == 0
  assert 'its convolutions are features.3.squeeze' in bad.stderr
