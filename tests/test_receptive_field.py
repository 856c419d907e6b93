"""Receptive fields proven by brute force on every architecture, the crops they select, and
the Zeiler & Fergus projection of one unit (certified in float64 against the torch
transcription of tests/torch_projection.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxviz
from jaxviz import loading, models, ops
from jaxviz.errors import InputError
from jaxviz.receptive_field import (ReceptiveField, crop, field_box, input_extent,
                                    receptive_field, receptive_fields)
from jaxviz.receptive_field import _fields

ALL_MODELS = ('squeezenet1_0', 'squeezenet1_1', 'alexnet', 'vgg16', 'vgg16_bn', 'vgg19',
              'resnet18', 'resnet50', 'shapes')


def abstract_model(name: str) -> jaxviz.Model:
  """A Model with shape-only parameters: its layer names and hooks without the cost of
  initialising (VGG's classifier alone is 120M weights)."""
  apply, hooked_apply, params = models.functionalize(models.build_abstract(name))
  num_classes = 10 if name == 'shapes' else 1000
  metadata = {'model': name, 'source': 'abstract'}
  if name == 'shapes':
    metadata['image_size'] = 64
  return loading.Model(name, apply, hooked_apply, params,
                       tuple(str(c) for c in range(num_classes)), (0.0,) * 3, (1.0,) * 3,
                       metadata)


# --- the arithmetic ---------------------------------------------------------------------

def test_vgg16_conv5_3():
  """196 px, jump 16 (Simonyan & Zisserman's conv5_3), the same before (features.28) and
  after (features.29) its ReLU; unit 0 starts 90 px above the image (13 paddings of one
  pixel at jumps 1, 1, 2, 2, 4, 4, 4, 8, 8, 8, 16, 16, 16: 90)."""
  for layer in ('features.28', 'features.29'):
    assert receptive_field('vgg16', layer) == ReceptiveField(196, 16, -90)
  assert receptive_field('vgg16', 'features.30') == ReceptiveField(212, 32, -90)  # pool5
  assert receptive_field('vgg16', 'features.0') == ReceptiveField(3, 1, -1)


def test_known_values():
  """Hand-derived: AlexNet conv1 11 px jump 4 (padding 2); ResNet-50 (v1.5) layer4 427 px;
  SqueezeNet 1.1 stem 3 px jump 2, its first pool 7 px jump 4."""
  assert receptive_field('alexnet', 'features.0') == ReceptiveField(11, 4, -2)
  assert receptive_field('alexnet', 'features.12') == ReceptiveField(195, 32, -66)
  assert receptive_field('resnet50', 'layer4') == ReceptiveField(427, 32, -213)
  assert receptive_field('resnet18', 'layer4') == ReceptiveField(435, 32, -217)
  assert receptive_field('squeezenet1_1', 'features.0') == ReceptiveField(3, 2, 0)
  assert receptive_field('squeezenet1_1', 'features.2') == ReceptiveField(7, 4, 0)


def test_fire_channels():
  """A Fire output's 1x1-expand channels see the squeeze's field, its 3x3-expand channels
  one tap more on each side; the layer's field is their union."""
  small = receptive_field('squeezenet1_1', 'features.3', channel=0)
  large = receptive_field('squeezenet1_1', 'features.3', channel=64)
  assert small == receptive_field('squeezenet1_1', 'features.3.squeeze') == (7, 4, 0)
  assert large == receptive_field('squeezenet1_1', 'features.3.expand3x3') == (15, 4, -4)
  assert receptive_field('squeezenet1_1', 'features.3') == large
  assert receptive_field('squeezenet1_1', 'features.3', channel=63) == small
  # features.5 pools Fire features.4, whose squeeze sees all of features.3 (15 px):
  assert receptive_field('squeezenet1_1', 'features.5', channel=0) == (23, 8, -4)
  assert receptive_field('squeezenet1_1', 'features.5', channel=64) == (31, 8, -8)


@pytest.mark.parametrize('name', ALL_MODELS)
def test_every_layer_has_a_field_or_says_why(name):
  """The walk over the modules names every hookable layer in forward order; each spatial
  one has a field, each other raises a one-line InputError."""
  model = abstract_model(name)
  assert tuple(_fields(name, model.num_classes, model.image_size)) == model.layer_names
  fields = receptive_fields(model)
  assert list(fields) == [n for n in model.layer_names if n in fields]
  for layer in model.layer_names:
    if layer in fields:
      assert receptive_field(model, layer) == fields[layer]
      continue
    with pytest.raises(InputError) as err:
      receptive_field(model, layer)
    assert '\n' not in str(err.value) and f'{name} {layer} has no' in str(err.value)
  last_conv = {'squeezenet1_0': 'classifier.2', 'squeezenet1_1': 'classifier.2',
               'shapes': 'classifier.1', 'resnet18': 'layer4', 'resnet50': 'layer4'}
  assert list(fields)[-1] == last_conv.get(name, 'avgpool')  # identity at 224 px


def test_input_extent():
  """SqueezeNet 1.1's stem (3x3, stride 2, no padding) has 111 units on 224 px, reading
  rows 0..222; at 225 px it has 112 reading all. VGG reads all of 225 px too: its first
  pool drops conv row 224, but conv row 223 already read image row 224 (padding 1)."""
  assert input_extent('squeezenet1_1', 'features.12', 224) == (223, 223)
  assert input_extent('squeezenet1_1', 'features.0', (224, 225)) == (223, 225)
  assert input_extent('vgg16', 'features.29', 224) == (224, 224)
  assert input_extent('vgg16', 'features.3', 225) == (225, 225)
  assert input_extent('vgg16', 'features.29', 225) == (225, 225)
  assert input_extent('squeezenet1_1', 'features.12', 225) == (225, 225)


def test_adaptive_pool_is_spatial_only_as_the_identity():
  assert receptive_field('alexnet', 'avgpool') == receptive_field('alexnet', 'features.12')
  with pytest.raises(InputError, match='averages the 3x3 map into 6x6 bins'):
    receptive_field('alexnet', 'avgpool', image_size=128)
  with pytest.raises(InputError, match='no receptive field'):
    receptive_field('resnet18', 'avgpool')
  assert 'avgpool' not in receptive_fields('vgg16', image_size=112)


def test_bad_input():
  with pytest.raises(InputError, match="unknown layer 'features.99'"):
    receptive_field('vgg16', 'features.99')
  with pytest.raises(InputError, match='unknown model'):
    receptive_field('vgg17', 'features.0')
  with pytest.raises(InputError, match=r'channel 512 out of range \[0, 512\)'):
    receptive_field('vgg16', 'features.28', channel=512)
  with pytest.raises(InputError, match='classifier.0 has no receptive field: classifier is '
                     'after the flatten'):
    receptive_field('vgg16', 'classifier.0')
  with pytest.raises(InputError, match='load_model'):
    receptive_field(lambda p, x: x, 'features.0')


# --- boxes and crops --------------------------------------------------------------------

def test_field_box_hand_cases():
  f = ReceptiveField(5, 2, -1)  # unit i covers rows 2i - 1 ... 2i + 3
  assert field_box(f, 0, 0, 10) == (0, 0, 4, 4)      # clipped top-left
  assert field_box(f, 1, 2, 10) == (1, 3, 6, 8)      # inside
  assert field_box(f, 4, 0, (10, 12)) == (7, 0, 10, 4)  # clipped bottom (rows 7..11)
  assert field_box(f, 0, 5, (10, 12)) == (0, 9, 4, 12)  # clipped right (cols 9..13)
  with pytest.raises(InputError, match='outside the map'):
    field_box(f, 6, 0, 10)  # rows 11..15 miss a 10-row image
  with pytest.raises(InputError, match='negative'):
    field_box(f, -1, 0, 10)


def test_crop_hand_cases():
  image = np.arange(10 * 12 * 2, dtype=np.int32).reshape(10, 12, 2)
  f = ReceptiveField(5, 2, -1)
  inside = crop(image, f, 1, 2)
  np.testing.assert_array_equal(inside, image[1:6, 3:8])
  corner = crop(image, f, 0, 0, pad_value=-7)
  assert corner.shape == (5, 5, 2) and corner.dtype == np.int32
  assert (corner[0] == -7).all() and (corner[:, 0] == -7).all()  # row/col -1: padding
  np.testing.assert_array_equal(corner[1:, 1:], image[0:4, 0:4])
  edge = crop(image[..., 0], f, 4, 5, pad_value=-1)  # rows 7..11, cols 9..13 of 10x12
  np.testing.assert_array_equal(edge[:3, :3], image[7:10, 9:12, 0])
  assert (edge[3:] == -1).all() and (edge[:, 3:] == -1).all()
  # Every unit of a real layer gives the same shape, its centre at the field's centre.
  vgg = receptive_field('vgg16', 'features.29')
  pixels = np.random.default_rng(0).random((112, 112, 3))
  crops = [crop(pixels, vgg, i, j) for i in (0, 3, 6) for j in (0, 6)]
  assert {c.shape for c in crops} == {(196, 196, 3)}
  assert crops[2][97, 97, 0] == pixels[3 * 16 + 7, 7, 0]  # centre row 48 + 7.5 - 0.5
  with pytest.raises(InputError, match='one'):
    crop(pixels[None], vgg, 0, 0)


# --- the brute-force proof --------------------------------------------------------------

def sum_pool(x, kernel, stride, padding=0, ceil_mode=False):
  """A max-pool's window geometry (torch's output size, ceil mode included) with a sum:
  every tap of every window passes gradient, where a max passes it to one."""
  sides = [ops.pool_output_size(s, kernel, stride, padding, ceil_mode) for s in x.shape[1:3]]
  pads = [(padding, max((o - 1) * stride + kernel - padding - s, 0))
          for o, s in zip(sides, x.shape[1:3])]
  x = jnp.pad(x, [(0, 0), *pads, (0, 0)])  # zeros: padding adds nothing
  (oh, ow), n, c = sides, x.shape[0], x.shape[3]
  return sum(jax.lax.slice(x, (0, a, b, 0), (n, a + (oh - 1) * stride + 1,
                                             b + (ow - 1) * stride + 1, c),
                           (1, stride, stride, 1))
             for a in range(kernel) for b in range(kernel))


def positive_params(template):
  """Every kernel 1/fan_in, every bias 0.1, batch norm a positive affine map: with a
  positive input every pre-activation is positive, so no ReLU is dead, and every path's
  weight product is positive, so none cancels. Made inside the traced function: leaves
  the truncated forward pass never reads (VGG's classifier) are dropped by XLA unbuilt."""
  def leaf(path, v):
    key = path[-1].key
    if key == 'kernel':
      return jnp.full(v.shape, 1.0 / np.prod(v.shape[:-1]), jnp.float64)
    value = {'bias': 0.1, 'scale': 1.0, 'mean': 0.0, 'var': 1.0}[key]
    return jnp.full(v.shape, value, jnp.float64)
  return jax.tree_util.tree_map_with_path(leaf, template)


class _Stop(Exception):
  """Raised by the last hook: the forward pass past the probed layers is not traced."""


def truncated_forward(model, layers):
  """x -> {layer: activation} for the named layers, under positive_params."""
  layers = sorted(layers, key=model.layer_names.index)

  def forward(x):
    acts = {}

    def capture(name):
      def fn(a):
        acts[name] = a
        if name == layers[-1]:
          raise _Stop
        return a
      return fn

    try:
      model.hooked_apply(positive_params(model.params), x, {n: capture(n) for n in layers})
    except _Stop:
      pass
    return acts

  return forward


def unit_gradients(model, x, probes):
  """d act[layer][0, i, j, c] / d x for each (layer, i, j, c) probe, (K, H, W, 3), from
  one forward pass and one vmapped backward pass."""
  forward = truncated_forward(model, {p[0] for p in probes})

  @jax.jit
  def grads(x):
    acts, vjp = jax.vjp(forward, x)
    cots = {n: jnp.zeros((len(probes),) + a.shape, a.dtype) for n, a in acts.items()}
    for k, (layer, i, j, c) in enumerate(probes):
      cots[layer] = cots[layer].at[k, 0, i, j, c].set(1.0)
    return jax.vmap(vjp)(cots)[0][:, 0]

  return np.asarray(grads(x))


# Input side per model: small, to keep the float64 backward passes cheap, and chosen so
# that a floor-mode layer drops the last rows for the SqueezeNets (input_extent < side:
# their stems read 127 of 128 and 159 of 160 rows). The shapes model and AlexNet at
# 64 and 224 px see some units' fields whole; elsewhere the deep fields are larger than
# the image, clipped on both sides, which the corner probes test from both ends.
SIZES = {'squeezenet1_0': 128, 'squeezenet1_1': 160, 'alexnet': 224, 'vgg16': 96,
         'vgg16_bn': 64, 'vgg19': 64, 'resnet18': 96, 'resnet50': 64, 'shapes': 64}


def probed_layers(model, size):
  """Four layers spread over the spatial ones, the last included, and the layers whose
  fields are least obvious: pools after a Fire, ResNet's shortcut and block outputs."""
  spatial = list(receptive_fields(model, image_size=size))
  picks = spatial[::max(1, len(spatial) // 3)] + [spatial[-1]]
  extra = [n for n in spatial if n.endswith('downsample')][:1] + [
      n for n in ('features.4', 'features.5', 'features.6', 'layer2.0', 'features.12',
                  'avgpool')
      if n in spatial]
  return list(dict.fromkeys(picks + extra))


@pytest.mark.parametrize('name', ALL_MODELS)
def test_gradient_support_is_the_field(name, monkeypatch):
  """With every path live (positive_params, sum-pools for max-pools), the input gradient
  of one unit is strictly positive exactly on its field clipped to the rows and columns
  the layer reads (input_extent: the image, less what a floor-mode layer drops), and
  zero elsewhere: exact, no tolerance. Probes the top-left corner unit, the centre unit and the
  bottom-right corner unit of each layer (the corners' fields are clipped by the border),
  at the first and the last channel (a Fire output's halves have different fields)."""
  monkeypatch.setattr(ops, 'max_pool2d', sum_pool)
  model, size = abstract_model(name), SIZES[name]
  layers = probed_layers(model, size)
  with jax.enable_x64(True):
    x = 0.5 + np.random.default_rng(0).random((1, size, size, 3))  # positive
    maps = jax.eval_shape(truncated_forward(model, layers), x)
    probes = []
    for n in layers:
      h, w, c = maps[n].shape[1:]
      probes += [(n, 0, 0, 0), (n, h // 2, w // 2, c - 1), (n, h - 1, w - 1, c - 1)]
    grads = unit_gradients(model, x, probes)
  for (layer, i, j, c), g in zip(probes, grads):
    field = receptive_field(model, layer, channel=c, image_size=size)
    extent = input_extent(model, layer, size, channel=c)
    top, left, bottom, right = field_box(field, i, j, extent)
    expected = np.zeros((size, size), bool)
    expected[top:bottom, left:right] = True
    support = (g != 0).any(-1)
    assert (g >= 0).all(), (layer, i, j)
    assert (g[expected] > 0).all(), (layer, i, j, c, field)
    np.testing.assert_array_equal(support, expected, err_msg=f'{layer} ({i}, {j}) c={c}')


# --- the Zeiler & Fergus projection -----------------------------------------------------

PROJ_NAME, PROJ_SEED, PROJ_SIZE = 'squeezenet1_1', 0, 64
# (layer, units per image: 'max' = unit=None, the argmax unit; 'second' = passed
# explicitly, the channel's second most active unit). Image n projects the channel with
# the (1 + 4n)-th largest activation: a live one (random-init ReLUs leave many dead). features.5 is a
# pool after a Fire (switches), features.7 a Fire output (its 1x1 and 3x3 halves),
# features.12.expand3x3_activation the last Fire's 3x3 ReLU.
PROJ_CASES = [('features.5', ['second', 'second']),
              ('features.7', ['max', 'second']),
              ('features.12.expand3x3_activation', ['max', 'max'])]
# float64 agreement, relative to the projection's largest value: both sides compute the
# same sums of products in float64 (~1e-16 each), in orders that differ (XLA's transposed
# convolutions and torch's); measured <= 1e-15. A wrong switch, a missed ReLU rule or
# a missing activation factor changes whole pixels by O(1) of the maximum.
PROJ_TOL = 1e-12


@pytest.fixture(scope='module')
def proj64(weights_dir):
  pytest.importorskip('torch')
  from torch_helpers import converted_weights
  with jax.enable_x64(True):  # return, not yield: x64 must not leak into other tests
    return jaxviz.load_model(PROJ_NAME, converted_weights(PROJ_NAME, PROJ_SEED, weights_dir),
                             dtype=jnp.float64)


@pytest.fixture(scope='module')
def proj_images():
  return np.random.default_rng(1).normal(size=(2, PROJ_SIZE, PROJ_SIZE, 3))


@pytest.mark.parametrize('layer,units', PROJ_CASES)
def test_projection_equals_torch_float64(proj64, proj_images, layer, units):
  torch = pytest.importorskip('torch')
  import torch_projection as tp
  from torch_helpers import to_nhwc, torch_model
  from jaxviz.methods.projection import max_units, unit_projection
  with jax.enable_x64(True):
    _, acts = proj64.intermediates(proj64.params, proj_images, [layer])
    act = np.asarray(acts[layer])
    channels = [int(np.argsort(act[n].max(axis=(0, 1)))[-1 - 4 * n]) for n in range(2)]
    amaps = act[np.arange(2), :, :, channels]  # (2, h, w)
    second = [np.unravel_index(np.argsort(m, axis=None)[-2], m.shape) for m in amaps]
    assert all(m[s] > 0 for m, s in zip(amaps, second))
    units = [None if u == 'max' else tuple(int(v) for v in s) for u, s in zip(units, second)]
    given = None if units == [None, None] else np.array(
        [(-1, -1) if u is None else u for u in units])
    got = np.asarray(unit_projection(proj64, proj64.params, proj_images, layer,
                                     np.array(channels), given))
    argmax = max_units(proj64, proj64.params, proj_images, layer, np.array(channels))
  expected = to_nhwc(tp.unit_projection(
      torch_model(PROJ_NAME, PROJ_SEED), torch.tensor(proj_images.transpose(0, 3, 1, 2)),
      layer, channels, units))
  scale = np.abs(expected).max(axis=(1, 2, 3))
  assert (scale > 0).all()  # a live unit: the comparison means something
  assert (np.abs(got - expected).max(axis=(1, 2, 3)) <= PROJ_TOL * scale).all()
  # Zero outside the unit's field (clipped to what the layer reads): exact.
  for n, (c, u) in enumerate(zip(channels, units)):
    i, j = argmax[n] if u is None else u
    field = receptive_field(proj64, layer, channel=c)
    top, left, bottom, right = field_box(field, i, j,
                                         input_extent(proj64, layer, PROJ_SIZE, channel=c))
    outside = np.ones((PROJ_SIZE, PROJ_SIZE), bool)
    outside[top:bottom, left:right] = False
    assert (got[n][outside] == 0).all()
    assert np.abs(got[n][~outside]).max() > 0


def test_projection_crop_and_argmax(proj64, proj_images):
  """unit=None projects the argmax unit; projection_crop cuts the field as crop does."""
  from jaxviz.methods.projection import max_units, projection_crop, unit_projection
  layer = 'features.7'
  with jax.enable_x64(True):
    units = max_units(proj64, proj64.params, proj_images, layer, 200)
    auto = np.asarray(unit_projection(proj64, proj64.params, proj_images, layer, 200))
    given = np.asarray(unit_projection(proj64, proj64.params, proj_images, layer, 200, units))
    _, acts = proj64.intermediates(proj64.params, proj_images, [layer])
  np.testing.assert_array_equal(auto, given)
  amap = np.asarray(acts[layer])[..., 200]
  for n, (i, j) in enumerate(units):
    assert amap[n, i, j] == amap[n].max()
  field = receptive_field(proj64, layer, channel=200)
  crops = projection_crop(auto, field, units)
  assert crops.shape == (2, field.size, field.size, 3)
  np.testing.assert_array_equal(crops[1], crop(auto[1], field, *units[1]))
  # The crop holds the whole projection: nothing is left outside it.
  assert np.isclose(np.abs(crops).sum(), np.abs(auto).sum(), rtol=1e-12)


def test_projection_bad_input(proj64, proj_images):
  from jaxviz.methods.projection import unit_projection
  x = proj_images.astype(np.float32)
  with jax.enable_x64(True):
    for kwargs, message in [
        (dict(layer='features.99', channel=0), "unknown layer 'features.99'"),
        (dict(layer='features.7', channel=256), r'out of range \[0, 256\)'),
        (dict(layer='features.7', channel=0, unit=(3, 9)), 'outside the 7x7 map'),
        (dict(layer='features.7', channel=0, unit=(-1, 0)), 'outside the 7x7 map'),
        (dict(layer='features.7', channel=0, unit=np.zeros((3, 2), int)), 'one pair per')]:
      with pytest.raises(InputError, match=message) as err:
        unit_projection(proj64, proj64.params, x, **kwargs)
      assert '\n' not in str(err.value)
    with pytest.raises(InputError, match='load_model'):
      unit_projection(proj64.apply, proj64.params, x, 'features.7', 0)
  resnet = abstract_model('resnet18')  # shapes only: the checks run before any compute
  with pytest.raises(InputError, match=r'fc has output shape \(1000,\), not a \(h, w, C\)'):
    unit_projection(resnet, resnet.params, x, 'fc', 0)


def test_receptive_field_figure(tmp_path):
  from jaxviz import figures
  f = receptive_field('vgg16', 'features.29')
  image = np.random.default_rng(0).random((112, 112, 3))
  boxes = [(f.span(i)[0], f.span(j)[0], f.size) for i, j in [(0, 0), (3, 6)]]
  fig = figures.receptive_field_figure(image, boxes, ['corner', 'edge'], 'fields')
  x0, x1 = fig.axes[0].get_xlim()
  assert x0 <= -90 and x1 >= 6 * 16 - 90 + 196  # the margin shows the overhang
  assert len(fig.axes[0].patches) == 3  # the image's border and two fields
  assert figures.save(fig, str(tmp_path / 'f.png'))
  with pytest.raises(InputError, match='labels'):
    figures.receptive_field_figure(image, boxes, ['one'])
  with pytest.raises(InputError, match='size >= 1'):
    figures.receptive_field_figure(image, [(0, 0, 0)], ['zero'])
