"""The Flax ports against torchvision: logits and input gradients, float64 and float32.

Random-init torchvision models (no download) are converted with weights_convert and
loaded with jaxviz.load_model, so every test also exercises the conversion path. The tests
against torchvision import torch themselves and skip without it (the [test] extra); the
ones on jaxviz's models alone run anywhere.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxviz
from conftest import rel_err
from jaxviz import models

# Standard; odd (SqueezeNet's ceil-mode pools add a window, VGG's and AlexNet's floor-mode
# pools drop a row); odd and non-square (VGG's 6x9 feature map makes the adaptive 7x7 pool
# repeat rows and average overlapping columns; AlexNet's 5x8 does the same to its 6x6).
SIZES = [(224, 224), (227, 227), (193, 291)]
# Every architecture at the odd, non-square size (VGG16 through VGG16-BN and VGG19, which
# run its code there); the standard size where it is the users' (SqueezeNet 1.1, VGG16,
# AlexNet); SqueezeNet, whose ceil-mode pools add windows, at every
# size. A second seed, at one size, shows the comparison is not tied to one draw of the
# weights (same program, other values). A float64 VGG case costs ~30-50 s on 2 cores: VGG16
# at 224, its variants (the same code but for batch norm and depth) at 193x291. ResNet-18
# shares ResNet-50's code but for the basic block.
CASES = ([('squeezenet1_1', 0, hw) for hw in SIZES] + [('squeezenet1_1', 1, (193, 291))]
         + [('squeezenet1_0', 0, hw) for hw in SIZES]
         + [(n, 0, (224, 224)) for n in ('vgg16', 'alexnet')]
         + [(n, 0, (193, 291))
            for n in ('vgg16_bn', 'vgg19', 'alexnet', 'resnet50', 'resnet18')])
BATCH = 2


def _torch():
  """torch and torchvision; skips the calling test where they are not installed."""
  torch = pytest.importorskip('torch')
  pytest.importorskip('torchvision')
  import torch_helpers  # noqa: F401  (sets torch's thread count)
  return torch


@functools.partial(jax.jit, static_argnames='apply')
def _logits_and_grads(apply, params, x, score_labels, ce_labels):
  """Logits, d sum_n f_{y_n}(x_n) / dx and d sum_n CE(f(x_n), y'_n) / dx."""
  score = lambda x: jnp.take_along_axis(apply(params, x), score_labels[:, None], 1).sum()
  ce = lambda x: -jnp.take_along_axis(jax.nn.log_softmax(apply(params, x)),
                                      ce_labels[:, None], 1).sum()
  return apply(params, x), jax.grad(score)(x), jax.grad(ce)(x)


def _torch_truth(model, x, ce_labels):
  """The same three quantities from torch in float64, and the score labels used.

  The score gradient is taken for each image's top class: at random init SqueezeNet's
  final ReLU leaves many classes at exactly 0 with an all-zero gradient, which would make
  the comparison vacuous. The cross-entropy gradient is never zero: random labels.
  """
  import torch
  import torch.nn.functional as F
  from torch_helpers import to_nhwc
  with torch.no_grad():
    score_labels = model(torch.tensor(x.transpose(0, 3, 1, 2))).argmax(1).numpy()
  xt = torch.tensor(x.transpose(0, 3, 1, 2), dtype=torch.float64, requires_grad=True)
  logits = model(xt)
  score = logits.gather(1, torch.tensor(score_labels)[:, None]).sum()
  ce = F.cross_entropy(logits, torch.tensor(ce_labels), reduction='sum')
  (g_score,) = torch.autograd.grad(score, xt, retain_graph=True)
  (g_ce,) = torch.autograd.grad(ce, xt)
  assert g_score.abs().max() > 0  # the score gradient is alive
  return (logits.detach().numpy(), to_nhwc(g_score), to_nhwc(g_ce)), score_labels


@pytest.mark.slow  # ~5 minutes in all on two cores, the VGGs most of it
@pytest.mark.parametrize('name,seed,hw', CASES,
                         ids=[f'{n}-seed{s}-{h}x{w}' for n, s, (h, w) in CASES])
def test_matches_torch(name, seed, hw, weights_dir):
  _torch()
  from torch_helpers import converted_weights, torch_model
  path = converted_weights(name, seed, weights_dir)
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((BATCH, *hw, 3))
  ce_labels = rng.integers(0, 1000, BATCH)
  truth, score_labels = _torch_truth(torch_model(name, seed), x, ce_labels)
  labels = jnp.asarray(score_labels), jnp.asarray(ce_labels)

  with jax.enable_x64(True):
    model = jaxviz.load_model(name, path, dtype=jnp.float64)
    got64 = _logits_and_grads(model.apply, model.params, jnp.asarray(x), *labels)
  for what, g, t in zip(('logits', 'score grad', 'CE grad'), got64, truth):
    # float64: the two frameworks differ only by summation order, ~1e-15 relative (measured
    # 2e-16 .. 6e-15). 1e-9 leaves a million-fold margin for round-off yet catches any
    # semantic slip (a pooling boundary, a transposed kernel, an off-by-one bin) at once.
    assert rel_err(g, t) <= 1e-9, f'float64 {what}: {rel_err(g, t):.3g}'

  model32 = jaxviz.load_model(name, path)
  got32 = _logits_and_grads(model32.apply, model32.params, jnp.asarray(x, jnp.float32),
                            *labels)
  # float32 logits: ~1e-7 per op accumulates to ~1e-6 through these nets (measured
  # 1.4e-7 .. 1.9e-6); 1e-5 allows 5x that and still fails on any real bug (>= 1e-3).
  assert rel_err(got32[0], truth[0]) <= 1e-5
  for what, g, t in zip(('score grad', 'CE grad'), got32[1:], truth[1:]):
    # float32 gradients: a conv output within round-off of 0 flips a ReLU gate, and the
    # flip moves the whole gradient. torch's own float32 gradient lies up to ~1.6% from its
    # float64 one at random init; we allow 3%, twice that, against the float64 truth.
    assert rel_err(g, t) <= 3e-2, f'float32 {what}: {rel_err(g, t):.3g}'


@pytest.mark.parametrize('name', sorted(models.ARCHITECTURES))
def test_parameter_count_equals_torchvision(name):
  torch = _torch()
  import torchvision
  with torch.device('meta'):
    expected = sum(p.numel() for p in torchvision.models.get_model(name).parameters())
  params = models.functionalize(models.build_abstract(name))[2]
  # BN running statistics are buffers in torch, not parameters: leave them out.
  count = sum(v.size for k, v in jaxviz.checkpoint.flatten(params).items()
              if not k.endswith(('.mean', '.var')))
  assert count == expected
  if name == 'squeezenet1_1':
    assert count == 1_235_496
  if name == 'vgg16':
    assert count == 138_357_544
  if name == 'alexnet':
    assert count == 61_100_840
  if name == 'resnet50':
    assert count == 25_557_032


def _torch_outputs(model, x):
  """Every module's outputs in one torch forward pass: {module name: [NHWC output of each
  call]}. Copied as the hook fires: an in-place ReLU or shortcut add rewrites it later."""
  import torch
  from torch_helpers import to_nhwc
  outputs, handles = {}, []
  for name, module in model.named_modules():
    if name:
      handles.append(module.register_forward_hook(
          lambda m, i, o, name=name: outputs.setdefault(name, []).append(
              to_nhwc(o) if o.ndim == 4 else o.detach().numpy().copy())))
  try:
    with torch.no_grad():
      model(torch.tensor(x.transpose(0, 3, 1, 2)))
  finally:
    for h in handles:
      h.remove()
  return outputs


def _torch_call(name: str) -> tuple[str, int]:
  """The torch module and call that a jaxviz layer name reads: a ResNet block calls its
  one ReLU module after bn1 and bn2 ('layer1.0.relu1', 'layer1.0.relu2') and, last,
  after the shortcut ('layer1.0.relu'; jaxviz/models/resnet.py); every other name is
  its module's only call."""
  parent, _, leaf = name.rpartition('.')
  if leaf in ('relu1', 'relu2'):
    return f'{parent}.relu', int(leaf[-1]) - 1
  return name, -1


# Making a random-init float64 torch model of 60M+ parameters and converting it costs
# 10-15 s on two cores: those are slow (test_matches_torch, in the same file and process,
# makes them anyway).
@pytest.mark.parametrize('name', [
    pytest.param(n, marks=pytest.mark.slow) if n.startswith(('vgg', 'alexnet')) else n
    for n in sorted(models.ARCHITECTURES)])
def test_every_layer_equals_torch_forward_hook(name, weights_dir):
  """Each name of Model.layer_names reads what torch's forward hook on that module sees,
  and every torch module's output has a name. Small, odd and non-square input (67x83:
  ceil-mode and floor-mode pools, padded pools, adaptive pools that repeat cells)."""
  _torch()
  from torch_helpers import converted_weights, torch_model
  x = np.random.default_rng(0).standard_normal((1, 67, 83, 3))
  outputs = _torch_outputs(torch_model(name, 0), x)
  with jax.enable_x64(True):
    model = jaxviz.load_model(name, converted_weights(name, 0, weights_dir), dtype=jnp.float64)
    _, acts = jax.jit(model.intermediates, static_argnums=2)(
        model.params, jnp.asarray(x), model.layer_names)
  read = set()
  for layer in model.layer_names:
    module, call = _torch_call(layer)
    calls = outputs[module]
    assert call != -1 or len(calls) == 1 or layer.endswith('.relu'), (layer, len(calls))
    expected = calls[call]
    assert acts[layer].shape == expected.shape, layer
    # float64, as test_matches_torch; a layer that is all zero compares absolutely.
    assert rel_err(acts[layer], expected) <= 1e-9, layer
    read.add(module)
  assert read == set(outputs)  # no torch module's output is out of reach
  assert len(model.layer_names) == len(set(model.layer_names))


def test_hooks_rewrite_a_layer():
  model = jaxviz.load_model('squeezenet1_1', 'random')
  x = jnp.ones((1, 64, 64, 3))
  # Zeroing the class map before the ReLU and global pool gives logits exactly 0.
  zeroed = jax.jit(lambda p, x: model.hooked_apply(p, x, {'classifier.1': jnp.zeros_like}))
  np.testing.assert_array_equal(zeroed(model.params, x), 0.0)
  assert np.abs(jax.jit(model.apply)(model.params, x)).max() > 0


def test_resnet_hooks_rewrite_blocks_and_their_last_relu():
  model = jaxviz.load_model('resnet18', 'random')
  x = jnp.ones((1, 64, 64, 3))
  bias = model.params['fc']['bias']
  for layer in ('layer4', 'layer4.1', 'layer4.1.relu'):
    # The last stage zeroed: the global pool gives 0 and the logits are fc's bias.
    zeroed = jax.jit(lambda p, x: model.hooked_apply(p, x, {layer: jnp.zeros_like}))
    np.testing.assert_array_equal(zeroed(model.params, x)[0], bias)
  # relu1 is inside the block: zeroing it leaves the shortcut, so the logits stay alive.
  inner = jax.jit(lambda p, x: model.hooked_apply(p, x, {'layer4.1.relu1': jnp.zeros_like}))
  assert np.abs(inner(model.params, x)[0] - bias).max() > 0


def test_unknown_layer_name_is_a_clear_error():
  model = jaxviz.load_model('squeezenet1_1', 'random')
  with pytest.raises(jaxviz.InputError, match='unknown layer'):
    model.intermediates(model.params, jnp.zeros((1, 64, 64, 3)), ['features.99'])


def test_apply_compiles_once_per_shape():
  model = jaxviz.load_model('squeezenet1_1', 'random')
  traces = []

  @jax.jit
  def f(params, x):
    traces.append(x.shape)
    return model.apply(params, x)

  x = jnp.zeros((2, 97, 97, 3))
  f(model.params, x)
  f(model.params, x + 1)
  assert traces == [(2, 97, 97, 3)]


def test_random_weights_are_seeded():
  a = jaxviz.load_model('squeezenet1_1', 'random', seed=3).params
  b = jaxviz.load_model('squeezenet1_1', 'random', seed=3).params
  c = jaxviz.load_model('squeezenet1_1', 'random', seed=4).params
  k = ('features', 0, 'kernel')
  get = lambda p: p[k[0]][k[1]][k[2]]
  np.testing.assert_array_equal(get(a), get(b))
  assert not np.array_equal(get(a), get(c))


def test_imagenet_class_names_equal_torchvision():
  _torch()
  from torchvision.models._meta import _IMAGENET_CATEGORIES
  assert jaxviz.imagenet_class_names() == tuple(_IMAGENET_CATEGORIES)


def test_class_lookup():
  model = jaxviz.load_model('squeezenet1_1', 'random')
  assert model.class_index('tarantula') == 76
  assert model.class_index('Tarantula') == 76
  assert model.class_index(76) == 76
  with pytest.raises(jaxviz.InputError, match="did you mean 'tarantula'"):
    model.class_index('tarantla')
  with pytest.raises(jaxviz.InputError, match='out of range'):
    model.class_index(1000)


def test_model_repr_is_short():
  # jax reads a traced function's repr (source info) on every call of a method that gets
  # a Model as its apply_fn: a generated dataclass repr printing every weight cost
  # ~0.1 s a call.
  model = jaxviz.load_model('squeezenet1_1', 'random')
  assert repr(model) == "Model('squeezenet1_1', 1000 classes)"
  assert jaxviz.validation.num_classes(model, model.params, (32, 32, 3)) == 1000
