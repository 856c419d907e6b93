"""The attribution methods of the lecture and the reading: certified in float64 against the
torch implementations of tests/torch_attribution.py (written from the papers), and their
behaviour (batching, vmap over targets and hyperparameters, compilation, properties, bad
input) in float32."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip('torch')  # the float64 references; the [test] extra

import jaxviz  # noqa: E402
import torch_attribution as ta  # noqa: E402
from conftest import counting, rel_err  # noqa: E402
from jaxviz import methods as M  # noqa: E402
from jaxviz.errors import InputError  # noqa: E402
from jaxviz.methods.attribution import resolve  # noqa: E402
from jaxviz.methods.integrated_gradients import RULES as IG_RULES  # noqa: E402
from jaxviz.methods.layers import layer_activation  # noqa: E402
from torch_helpers import converted_weights, to_nhwc, torch_model  # noqa: E402

NAME, SEED, SIZE = 'squeezenet1_1', 0, 64
# float64 agreement: both sides compute the same sums in another order (~1e-15 relative
# per operation, ~1e-13 over a network). 1e-9 leaves room for that and still catches any
# slip of a rule, a mean or an index, which moves results by >= 1e-3.
TOL64 = 1e-9



@pytest.fixture(scope='module')
def inputs():
  return np.random.default_rng(0).standard_normal((2, SIZE, SIZE, 3))


LABELS = np.array([930, 150])


def _nchw(x):
  return torch.tensor(np.asarray(x).transpose(0, 3, 1, 2))


def _x64(fn, *args, **kwargs):
  with jax.enable_x64(True):
    return jax.tree.map(np.asarray, fn(*args, **kwargs))


@pytest.mark.parametrize('rule', ['guided_backprop', 'deconvnet'])
def test_relu_rules_equal_torch_float64(model64, inputs, rule):
  got = _x64(getattr(jaxviz, rule), model64, model64.params, inputs, LABELS)
  expected = to_nhwc(getattr(ta, rule)(torch_model(NAME, SEED), _nchw(inputs),
                                       torch.tensor(LABELS)))
  gradient = to_nhwc(ta.gradient(torch_model(NAME, SEED), _nchw(inputs), torch.tensor(LABELS)))
  assert rel_err(got, expected) <= TOL64
  assert rel_err(expected, gradient) > 0.1  # the rule really changes the gradient


@pytest.mark.parametrize('name', ['squeezenet1_1', 'vgg16', 'alexnet', 'resnet50'])
def test_every_relu_of_the_network_is_rewritten(name):
  """As many ReLUs rewritten as torch's model calls: the classifier's and SqueezeNet's
  final one included (a popular torch implementation misses the classifier's)."""
  model = jaxviz.load_model(name, 'random')
  x = jnp.zeros((1, 64, 64, 3))
  torch_net = ta.relu_free(torch_model(name, 0), 'guided')
  calls = []
  for module in torch_net.modules():
    if isinstance(module, ta.RuleReLU):
      module.register_forward_hook(lambda *_: calls.append(1))
  with torch.no_grad():
    torch_net(torch.zeros(1, 3, 64, 64, dtype=torch.float64))
  assert M.count_relus(model.apply, model.params, x) == len(calls) > 0


def test_the_shapes_model_relus_are_rewritten():
  model = jaxviz.load_model('shapes', 'random')
  x = jnp.zeros((1, 64, 64, 3))
  relus = [n for n in model.layer_names if n.endswith('_activation')]
  assert M.count_relus(model.apply, model.params, x) == len(relus) == 16
  guided = jax.grad(lambda x: M.with_relu_rule(model.apply, 'guided')(model.params, x)[0, 1])(
      jax.random.normal(jax.random.key(0), (1, 64, 64, 3)))
  assert np.isfinite(guided).all() and np.abs(guided).max() > 0


@pytest.mark.parametrize('layer', [None, 'features.7', 'features.12.expand3x3_activation'])
def test_grad_cam_and_guided_grad_cam_equal_torch_float64(model64, inputs, layer):
  torch_layer = layer or 'features.12'  # the documented default
  tm, X, y = torch_model(NAME, SEED), _nchw(inputs), torch.tensor(LABELS)
  cam = _x64(jaxviz.grad_cam, model64, model64.params, inputs, LABELS, layer=layer)
  expected = ta.grad_cam(tm, X, y, torch_layer).numpy()
  assert cam.shape == expected.shape and expected.max() > 0
  assert rel_err(cam, expected) <= TOL64
  guided = _x64(jaxviz.guided_grad_cam, model64, model64.params, inputs, LABELS, layer=layer)
  assert rel_err(guided, to_nhwc(ta.guided_grad_cam(tm, X, y, torch_layer))) <= TOL64


@pytest.mark.parametrize('shape,size', [((7, 7), (224, 224)), ((3, 5), (31, 17)),
                                        ((13, 11), (13, 40)), ((8, 9), (3, 5))])
def test_upsample_equals_torch_bilinear_float64(shape, size):
  maps = np.random.default_rng(1).random((2, *shape))
  got = _x64(jaxviz.upsample, maps, size)
  assert rel_err(got, ta.upsample(torch.tensor(maps), size).numpy()) <= 1e-14


def test_occlusion_equals_torch_float64_at_odd_sizes(model64):
  """A 61x67 image, an 11-pixel window every 7 pixels: 8x9 positions, and a trailing
  row no window covers."""
  x = np.random.default_rng(2).standard_normal((2, 61, 67, 3))
  got = _x64(jaxviz.occlusion, model64, model64.params, x, LABELS, window=11, stride=7,
             fill=0.25, window_chunk=16)
  expected = ta.occlusion(torch_model(NAME, SEED), _nchw(x), torch.tensor(LABELS), 11, 7,
                          fill=0.25)
  assert got.score_drop.shape == (2, 8, 9) and got.attribution.shape == (2, 61, 67)
  for field in ('probability', 'score_drop', 'attribution'):
    assert rel_err(getattr(got, field), expected[field].numpy()) <= TOL64, field
  np.testing.assert_array_equal(got.predicted, expected['predicted'].numpy())
  # Row 60 lies below the last window (rows 49-59); every column is covered (56-66).
  assert (got.attribution[:, 60:] == 0).all() and (got.attribution[:, :60] != 0).all()


@pytest.mark.parametrize('base,squared', [('gradient', False), ('gradient', True),
                                          ('guided_backprop', False)])
def test_smoothgrad_equals_torch_with_the_noise_replayed_float64(model64, inputs, base,
                                                                  squared):
  samples, level, key = 5, 0.2, jax.random.key(7)
  got = _x64(jaxviz.smoothgrad, model64, model64.params, inputs, LABELS, key=key, method=base,
             samples=samples, noise_level=level, squared=squared, sample_chunk=2)
  with jax.enable_x64(True):  # the draw smoothgrad_one documents, per image's key
    eps = np.stack([np.asarray(jax.random.normal(jax.random.split(k)[0],
                                                 (samples, SIZE, SIZE, 3), jnp.float64))
                    for k in jax.random.split(key, len(inputs))])
  expected = ta.smoothgrad(torch_model(NAME, SEED), _nchw(inputs), torch.tensor(LABELS),
                           torch.tensor(eps.transpose(0, 1, 4, 2, 3)), level, squared,
                           getattr(ta, base))
  assert rel_err(got, to_nhwc(expected)) <= TOL64


def _baseline(shape):
  """A smooth non-zero baseline: with zero biases (torchvision's init) and the zero
  baseline the network is positively homogeneous along the path and every rule is exact."""
  return 0.5 * np.sin(np.linspace(0, 6, np.prod(shape))).reshape(shape)


@pytest.mark.parametrize('rule', IG_RULES)
def test_integrated_gradients_equal_torch_float64(model64, inputs, rule):
  baseline = _baseline(inputs.shape)
  got = _x64(jaxviz.integrated_gradients, model64, model64.params, inputs, LABELS,
             baseline=baseline, steps=6, rule=rule, step_chunk=4)
  attributions, gap = ta.integrated_gradients(torch_model(NAME, SEED), _nchw(inputs),
                                              torch.tensor(LABELS), _nchw(baseline), 6, rule)
  assert rel_err(got.attributions, to_nhwc(attributions)) <= TOL64
  assert rel_err(got.gap, gap.numpy()) <= 1e-7  # a difference of near-equal sums


def test_integrated_gradients_completeness_gap_shrinks_with_steps(model64, inputs):
  baseline = _baseline(inputs.shape)
  gaps = [np.abs(_x64(jaxviz.integrated_gradients, model64, model64.params, inputs, LABELS,
                      baseline=baseline, steps=steps).gap).max() for steps in (2, 16, 128)]
  change = np.abs(np.asarray(_x64(lambda: model64.apply(model64.params, jnp.asarray(inputs))
                                  - model64.apply(model64.params, jnp.asarray(baseline)))
                             )[np.arange(2), LABELS]).max()
  assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 0.05 * change


# Each rule on a whole channel and on single units, at a Fire module and at a ReLU output.
@pytest.mark.parametrize('rule,layer,units', [
    ('gradient', 'features.7', None),
    ('gradient', 'features.12.expand3x3_activation', [[1, 1], [2, 0]]),
    ('guided', 'features.7', [[3, 4], [0, 6]]),
    ('guided', 'features.12.expand3x3_activation', None),
    ('deconvnet', 'features.7', None),
    ('deconvnet', 'features.12.expand3x3_activation', [[1, 1], [2, 0]]),
])
def test_layer_gradient_equals_torch_float64(model64, inputs, rule, layer, units):
  channels = np.array([5, 17])
  got = _x64(jaxviz.layer_gradient, model64, model64.params, inputs, layer=layer,
             channels=channels, units=units, rule=rule)
  expected = to_nhwc(ta.layer_gradient(torch_model(NAME, SEED), _nchw(inputs), layer,
                                       torch.tensor(channels), units, rule))
  assert np.abs(expected).max() > 0
  assert rel_err(got, expected) <= TOL64


@pytest.mark.slow  # VGG16 in float64: ~1 GB of weights per side
def test_every_method_equals_torch_float64_on_vgg16(weights_dir):
  size, name = 32, 'vgg16'
  x = np.random.default_rng(3).standard_normal((2, size, size, 3))
  y = np.array([3, 700])
  tm, X, Y = torch_model(name, 0), _nchw(x), torch.tensor(y)
  with jax.enable_x64(True):
    m = jaxviz.load_model(name, converted_weights(name, 0, weights_dir), dtype=jnp.float64)
  checks = [
      (_x64(jaxviz.guided_backprop, m, m.params, x, y), to_nhwc(ta.guided_backprop(tm, X, Y))),
      (_x64(jaxviz.deconvnet, m, m.params, x, y), to_nhwc(ta.deconvnet(tm, X, Y))),
      (_x64(jaxviz.grad_cam, m, m.params, x, y), ta.grad_cam(tm, X, Y, 'features.29').numpy()),
      (_x64(jaxviz.guided_grad_cam, m, m.params, x, y),
       to_nhwc(ta.guided_grad_cam(tm, X, Y, 'features.29'))),
      (_x64(jaxviz.occlusion, m, m.params, x, y, window=12, stride=10).attribution,
       ta.occlusion(tm, X, Y, 12, 10)['attribution'].numpy()),
      (_x64(jaxviz.integrated_gradients, m, m.params, x, y, baseline=_baseline(x.shape),
            steps=3).attributions,
       to_nhwc(ta.integrated_gradients(tm, X, Y, _nchw(_baseline(x.shape)), 3,
                                       'gausslegendre')[0])),
      (_x64(jaxviz.layer_gradient, m, m.params, x, layer='features.22', channels=[1, 2],
            rule='deconvnet'),
       to_nhwc(ta.layer_gradient(tm, X, 'features.22', torch.tensor([1, 2]), None,
                                 'deconvnet'))),
  ]
  for i, (got, expected) in enumerate(checks):
    assert np.abs(expected).max() > 0, i
    assert rel_err(got, expected) <= TOL64, i


@pytest.mark.slow
@pytest.mark.parametrize('name,layer', [('resnet18', 'layer4'), ('alexnet', 'features.11')])
def test_relu_rules_and_grad_cam_equal_torch_float64_on_more_architectures(name, layer,
                                                                           weights_dir):
  x = np.random.default_rng(4).standard_normal((2, 80, 80, 3))
  y = np.array([1, 500])
  tm, X, Y = torch_model(name, 0), _nchw(x), torch.tensor(y)
  with jax.enable_x64(True):
    m = jaxviz.load_model(name, converted_weights(name, 0, weights_dir), dtype=jnp.float64)
  assert rel_err(_x64(jaxviz.guided_backprop, m, m.params, x, y),
                 to_nhwc(ta.guided_backprop(tm, X, Y))) <= TOL64
  assert rel_err(_x64(jaxviz.grad_cam, m, m.params, x, y),
                 ta.grad_cam(tm, X, Y, layer).numpy()) <= TOL64


# float32 behaviour, on a random-init SqueezeNet at 48 px.

@pytest.fixture(scope='module')
def model():
  return jaxviz.load_model(NAME, 'random', seed=1)


@pytest.fixture(scope='module')
def images():
  return jax.random.normal(jax.random.key(5), (3, 48, 48, 3))


_OPTIONS = {'occlusion': dict(window=12, stride=9), 'smoothgrad': dict(samples=4),
            'integrated_gradients': dict(steps=4)}


@pytest.mark.parametrize('name', ['guided_backprop', 'deconvnet', 'grad_cam',
                                  'guided_grad_cam', 'integrated_gradients', 'occlusion',
                                  'smoothgrad'])
def test_batch_equals_single_calls(model, images, name):
  labels, key = np.array([1, 400, 999]), jax.random.key(2)
  options = _OPTIONS.get(name, {})
  batch = jaxviz.attribute(name, model, model.params, images, labels, key=key, reduce=None,
                           **options)
  one = resolve(name)
  keys = jax.random.split(key, 3)
  # float32 round-off of a batched against a single pass, ~1e-7 of the values; occlusion's
  # score drops are differences of logits, so their round-off is ~1e-7 of the logits.
  scale = (np.abs(model.apply(model.params, images)).max() if name == 'occlusion'
           else None)
  for i in range(3):
    single = jax.jit(lambda x, y, k: one(model, model.params, x, y, k, **options))(
        images[i], labels[i], keys[i])
    atol = 1e-6 * (scale if scale is not None else np.abs(single).max())
    np.testing.assert_allclose(batch[i], single, rtol=1e-5, atol=atol)


_MANY_TARGETS = {  # the public functions that take one image with many labels
    'gradient': lambda m, x, y, k: jaxviz.attribute('gradient', m, m.params, x, y, reduce=None),
    'guided_backprop': lambda m, x, y, k: jaxviz.guided_backprop(m, m.params, x, y),
    'grad_cam': lambda m, x, y, k: jaxviz.grad_cam(m, m.params, x, y),
    'smoothgrad': lambda m, x, y, k: jaxviz.smoothgrad(m, m.params, x, y, key=k, samples=4),
    'integrated_gradients': lambda m, x, y, k: jaxviz.integrated_gradients(
        m, m.params, x, y, steps=4, step_chunk=None).attributions,
    'occlusion': lambda m, x, y, k: jaxviz.occlusion(m, m.params, x, y, window=12, stride=9,
                                                     window_chunk=None).attribution,
}


@pytest.mark.parametrize('name', list(_MANY_TARGETS))
def test_one_image_many_labels_equals_separate_calls(model, images, name):
  labels, key = np.array([3, 400, 999, 3]), jax.random.key(2)
  fn = _MANY_TARGETS[name]
  many = fn(model, images[:1], labels, key)
  assert many.shape[0] == len(labels)
  keys = jax.random.split(key, len(labels))  # one key per label, as for one per image
  for i, label in enumerate(labels):
    single = fn(model, images[:1], labels[i:i + 1], keys[i:i + 1])[0]
    # float32 round-off of a batched against an unbatched backward pass, ~1e-7 of the
    # values; the forward pass is the same computation either way.
    np.testing.assert_allclose(many[i], single, rtol=1e-5, atol=1e-6 * np.abs(single).max())
  if name != 'smoothgrad':  # (whose keys, one per label, draw other noise)
    np.testing.assert_array_equal(many[0], many[3])  # the same label twice: the same map


def _conv_inputs(fn) -> list[tuple[int, int]]:
  """(batch size, input size) of every convolution in fn's program (vmap folds a batch
  into a convolution's batch axis, so work done once per label shows here T times)."""
  convs = []

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == 'conv_general_dilated':
        shape = eqn.invars[0].aval.shape
        convs.append((shape[eqn.params['dimension_numbers'].lhs_spec[0]],
                      int(np.prod(shape))))
      for value in eqn.params.values():
        for sub in value if isinstance(value, (list, tuple)) else (value,):
          sub = getattr(sub, 'jaxpr', sub)
          if hasattr(sub, 'eqns'):
            walk(sub)

  walk(jax.make_jaxpr(fn)().jaxpr)
  return convs


def _conv_input_elements(fn) -> int:
  return sum(size for _, size in _conv_inputs(fn))


def test_one_image_many_labels_shares_the_forward_pass(model, images):
  labels = np.array([3, 50, 400, 999])
  image, copies = images[:1], jnp.repeat(images[:1], 4, axis=0)
  work = lambda name, x, y: _conv_input_elements(
      lambda: _MANY_TARGETS[name](model, x, y, jax.random.key(0)))
  # Occlusion's forward passes do not depend on the label: 4 labels cost what 1 does.
  assert work('occlusion', image, labels) == work('occlusion', image, labels[:1])
  assert work('occlusion', copies, labels) == 4 * work('occlusion', image, labels[:1])
  # Grad-CAM: one forward pass, and a backward pass per label only from the logits to
  # the layer (SqueezeNet's classifier convolution): about a quarter of 4 copies' work.
  assert work('grad_cam', image, labels) < 0.4 * work('grad_cam', copies, labels)
  # Integrated gradients: the path's forward passes once, its backward passes per label
  # (each as large as the forward): (1 + 4) / (4 + 4) of 4 copies' work.
  shared, repeated = work('integrated_gradients', image, labels), work(
      'integrated_gradients', copies, labels)
  assert shared < 0.7 * repeated, (shared, repeated)
  # With labels sharing the path, step_chunk bounds points x labels per pass (4 labels,
  # step_chunk 8: 2 points a pass, 8 backward passes), as it bounds points for one label.
  chunked = _conv_inputs(lambda: jaxviz.integrated_gradients(
      model, model.params, image, labels, steps=6, step_chunk=8).attributions)
  assert max(batch for batch, _ in chunked) == 8
  one = _conv_inputs(lambda: jaxviz.integrated_gradients(
      model, model.params, image, labels[:1], steps=6, step_chunk=8).attributions)
  assert max(batch for batch, _ in one) == 6  # one label: all 6 points in one pass


def test_vmap_over_targets_equals_separate_calls(model, images):
  targets = jnp.array([3, 50, 700, 999])
  cams = jax.jit(jax.vmap(lambda t: M.grad_cam_one(model, model.params, images[0], t)))(targets)
  occluded = jax.jit(jax.vmap(lambda t: M.occlusion_one(
      model, model.params, images[0], t, window=16, stride=16).score_drop))(targets)
  for cam, drop, t in zip(cams, occluded, targets):
    np.testing.assert_allclose(cam, jaxviz.grad_cam(model, model.params, images[:1], [t])[0],
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(drop, jaxviz.occlusion(model, model.params, images[:1], [t],
                                                      window=16, stride=16).score_drop[0],
                               rtol=1e-5, atol=1e-6)


def test_vmap_over_hyperparameters_equals_separate_calls(model, images):
  key, levels = jax.random.key(3), jnp.array([0.0, 0.1, 0.3])
  sweep = jax.jit(jax.vmap(lambda s: M.smoothgrad_one(
      model, model.params, images[0], 7, key, samples=3, noise_level=s)))(levels)
  baselines = jnp.stack([jnp.zeros((48, 48, 3)), images[1], -images[2]])
  paths = jax.jit(jax.vmap(lambda b: M.integrated_gradients_one(
      model, model.params, images[0], 7, baseline=b, steps=3).attributions))(baselines)
  # The separate calls: one compiled function, called once per noise level.
  separate = jax.jit(lambda s: M.smoothgrad_one(model, model.params, images[0], 7, key,
                                                samples=3, noise_level=s))
  for i in range(3):
    one = separate(levels[i])
    np.testing.assert_allclose(sweep[i], one, rtol=1e-5, atol=1e-6 * np.abs(one).max())
    ig = jaxviz.integrated_gradients(model, model.params, images[:1], [7],
                                     baseline=baselines[i], steps=3).attributions[0]
    np.testing.assert_allclose(paths[i], ig, rtol=1e-5, atol=1e-6 * np.abs(ig).max())
  # noise level 0 is the plain gradient
  np.testing.assert_allclose(sweep[0], M.gradient(model, model.params, images[0], 7),
                             rtol=1e-5, atol=1e-8)



def test_each_method_compiles_once_per_shape(model, images):
  counted, traces = counting(model.apply)
  calls = [
      lambda x: jaxviz.guided_backprop(counted, model.params, x, 1),
      lambda x: jaxviz.deconvnet(counted, model.params, x, 1),
      lambda x: jaxviz.occlusion(counted, model.params, x, 1, window=16, stride=16),
      lambda x: jaxviz.smoothgrad(counted, model.params, x, 1, samples=2),
      lambda x: jaxviz.integrated_gradients(counted, model.params, x, 1, steps=2),
      lambda x: jaxviz.grad_cam(model, model.params, x, 1),
      lambda x: jaxviz.layer_gradient(model, model.params, x, layer='features.4', channels=1),
  ]
  for call in calls:
    call(images)
    after_first = len(traces)
    call(images)
    call(images + 1.0)  # new values, same shape
    assert len(traces) == after_first
  jaxviz.smoothgrad(counted, model.params, images, 1, samples=2, noise_level=0.3)
  assert len(traces) > after_first  # a new static option compiles anew


def test_grad_cam_is_zero_for_a_class_whose_weights_are_zero(model, images):
  params = jax.tree.map(lambda a: a, model.params)
  layer = params['classifier'][1]  # the 1x1 convolution that makes the class maps
  layer['kernel'] = layer['kernel'].at[..., 42].set(0)
  layer['bias'] = layer['bias'].at[42].set(0)
  cams = jaxviz.grad_cam(model, params, images, [42, 42, 43])
  assert (cams[:2] == 0).all() and cams[2].max() > 0


def test_guided_gradients_are_non_negative_below_every_gated_relu(model, images):
  """Guided backprop passes only positive gradients through a ReLU: the gradient with
  respect to a ReLU's input (a pre-activation layer) is >= 0 everywhere, while the plain
  gradient there is signed."""
  layer = 'features.6.expand3x3'  # the pre-activation of a Fire module's 3x3 expand
  shape = jax.eval_shape(lambda x: layer_activation(model, model.params, x, layer)[1],
                         images[:1]).shape

  def grad_at_layer(rule):
    fn = M.with_relu_rule(lambda p, x, d: layer_activation(
        model, p, x, layer, lambda a: a + d)[0], rule)
    return jax.grad(lambda d: fn(model.params, images[:1], d)[0, 5])(jnp.zeros(shape))

  guided, plain = grad_at_layer('guided'), grad_at_layer('gradient')
  assert (guided >= 0).all() and guided.max() > 0 and (plain < 0).any()
  assert (grad_at_layer('deconvnet') >= 0).all()


@pytest.mark.parametrize('call,match', [
    (lambda m, x: jaxviz.grad_cam(m, m.params, x, 1, layer='features.99'), 'unknown layer'),
    (lambda m, x: jaxviz.grad_cam(m.apply, m.params, x, 1), 'load_model'),
    (lambda m, x: jaxviz.layer_gradient(m.apply, m.params, x, layer='features.4',
                                        channels=1), 'load_model'),
    (lambda m, x: jaxviz.occlusion(m, m.params, x, 1, window=64), 'larger than the image'),
    (lambda m, x: jaxviz.occlusion(m, m.params, x, 1, stride=0), 'stride'),
    (lambda m, x: jaxviz.integrated_gradients(m, m.params, x, 1, rule='simpson'), 'rule'),
    (lambda m, x: jaxviz.integrated_gradients(m, m.params, x, 1, steps=1,
                                              rule='riemann_trapezoid'), 'steps >= 2'),
    (lambda m, x: jaxviz.integrated_gradients(m, m.params, x, 1,
                                              baseline=np.zeros((2, 48, 48, 3))), 'baseline'),
    (lambda m, x: jaxviz.smoothgrad(m, m.params, x, 1, noise_level=-1), 'noise_level'),
    (lambda m, x: jaxviz.smoothgrad(m, m.params, x, 1, method='smoothgrad'), 'base method'),
    (lambda m, x: jaxviz.smoothgrad(m, m.params, x, 1, method='magic'), 'unknown attribution'),
    (lambda m, x: jaxviz.layer_gradient(m, m.params, x, layer='features.4', channels=999),
     'out of range'),
    (lambda m, x: jaxviz.layer_gradient(m, m.params, x, layer='features.4', channels=1,
                                        units=[99, 0]), 'outside'),
    (lambda m, x: jaxviz.layer_gradient(m, m.params, x, layer='features.4', channels=1,
                                        rule='lrp'), 'rule'),
    (lambda m, x: jaxviz.attribution_maps(m, 'grad_cam', x, 1, reduce='mean'), 'reduce'),
])
def test_bad_input_is_a_one_line_error(model, images, call, match):
  with pytest.raises(InputError, match=match) as info:
    call(model, images)
  assert '\n' not in str(info.value)


_EVERY_METHOD = {
    'guided_backprop': lambda m, x: jaxviz.guided_backprop(m, m.params, x, 1),
    'deconvnet': lambda m, x: jaxviz.deconvnet(m, m.params, x, 1),
    'grad_cam': lambda m, x: jaxviz.grad_cam(m, m.params, x, 1),
    'guided_grad_cam': lambda m, x: jaxviz.guided_grad_cam(m, m.params, x, 1),
    'occlusion': lambda m, x: jaxviz.occlusion(m, m.params, x, 1),
    'smoothgrad': lambda m, x: jaxviz.smoothgrad(m, m.params, x, 1, samples=2),
    'integrated_gradients': lambda m, x: jaxviz.integrated_gradients(m, m.params, x, 1),
    'layer_gradient': lambda m, x: jaxviz.layer_gradient(m, m.params, x, layer='features.4',
                                                         channels=1),
    'attribution_maps': lambda m, x: jaxviz.attribution_maps(m, 'grad_cam', x, 1),
}


@pytest.mark.parametrize('name', sorted(_EVERY_METHOD))
@pytest.mark.parametrize('bad,match', [
    (lambda x: jnp.concatenate([x, x[..., :1]], -1), 'RGBA'),
    (lambda x: x[..., :1], 'grayscale'),
    (lambda x: x[0], r'\(N, H, W, 3\)'),
    (lambda x: x.at[1, 3, 3, 0].set(jnp.nan), 'NaN'),
])
def test_every_method_refuses_bad_images_in_one_line(model, images, name, bad, match):
  with pytest.raises(InputError, match=match) as info:
    _EVERY_METHOD[name](model, bad(images))
  assert '\n' not in str(info.value)


def test_a_zero_gradient_gives_zero_maps_not_nan(model, images):
  """A model whose logits do not depend on the image (all weights zero): every method's
  map is all zero and finite (none of them divides by the gradient's size)."""
  params = jax.tree.map(jnp.zeros_like, model.params)
  for name in jaxviz.attribution_methods():
    maps = jaxviz.attribution_maps(model, name, images[:1], 1, params=params,
                                   **_OPTIONS.get(name, {}))
    assert np.isfinite(maps).all() and (np.asarray(maps) == 0).all(), name
