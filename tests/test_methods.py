"""The three methods: certified against the torch course code in float64, and their
behaviour (properties, batching, keys, compilation, bad input) in float32."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

torch = pytest.importorskip('torch')  # the float64 references; the [test] extra

import jaxviz  # noqa: E402
import torch_course  # noqa: E402
from conftest import counting, rel_err  # noqa: E402
from jaxviz.errors import InputError  # noqa: E402
from jaxviz.methods import (class_visualization_one, fooling_image,  # noqa: E402
                            saliency_map)
from jaxviz.ops import gaussian_blur  # noqa: E402
from torch_helpers import converted_weights, to_nhwc, torch_model  # noqa: E402

NAME, SEED, SIZE = 'squeezenet1_1', 0, 128
# float64 agreement: summation order only (~1e-15 per op). Iterating 100 steps of
# normalised gradient ascent amplifies it mildly; 1e-9 still catches any algorithmic slip
# (a missed step, a sign, an off-by-one blur or roll), which moves results by >= 1e-3.
TOL64 = 1e-9



@pytest.fixture(scope='module')
def inputs():
  return np.random.default_rng(0).standard_normal((3, SIZE, SIZE, 3))


def _nchw(x):
  return torch.tensor(np.asarray(x).transpose(0, 3, 1, 2))


@pytest.mark.parametrize('objective', ['score', 'cross_entropy'])
def test_saliency_equals_torch_float64(model64, inputs, objective):
  labels = np.array([930, 150, 5])
  with jax.enable_x64(True):
    got = jaxviz.saliency_maps(model64.apply, model64.params, jnp.asarray(inputs), labels,
                               objective)
  expected = torch_course.saliency(torch_model(NAME, SEED), _nchw(inputs),
                                   torch.tensor(labels), objective).numpy()
  assert got.shape == (3, SIZE, SIZE) and np.abs(expected).max() > 0
  assert rel_err(got, expected) <= TOL64


@pytest.mark.slow
@pytest.mark.parametrize('objective', ['score', 'cross_entropy'])
def test_fooling_equals_torch_float64(model64, inputs, objective):
  # Targets the random-init model reaches in tens of steps (a third of its top classes
  # stay out of reach in 100), and one capped at 15 steps.
  cases = [(0, 150, 100), (2, 834, 100), (0, 502, 15)]
  tm = torch_model(NAME, SEED)
  for i, target, cap in cases:
    expected, expected_it = torch_course.make_fooling_image(
        tm, _nchw(inputs[i:i + 1]), target, 1.0, cap, objective)
    with jax.enable_x64(True):
      result = jaxviz.fooling_images(model64.apply, model64.params,
                                     jnp.asarray(inputs[i:i + 1]), [target],
                                     max_iterations=cap, objective=objective)
    assert int(result.iterations[0]) == expected_it
    assert rel_err(result.images[0], to_nhwc(expected)[0]) <= TOL64
    assert bool(result.fooled[0]) == (expected_it < cap)
  assert expected_it == 15  # the capped case really was capped


def _drawn_jitters(key, max_jitter: int, num_iterations: int) -> list[tuple[int, int]]:
  """The jitter class_visualization draws at each step for one target from `key` (key
  derivation as in _class_visualization), for the torch reference to replay."""
  steps_key = jax.random.split(jax.random.split(key, 1)[0])[1]
  return [tuple(int(v) for v in jax.random.randint(
      jax.random.fold_in(steps_key, t), (2,), 0, max_jitter + 1))
          for t in range(num_iterations)]


@pytest.mark.parametrize('max_jitter', [0, 16])
def test_class_visualization_equals_torch_float64(model64, inputs, max_jitter):
  num_iterations, blur_every, target = 25, 4, 76
  key = jax.random.key(3)
  low, high = jaxviz.valid_range()
  init = np.clip(inputs[:1] * 0.5, low, high)
  with jax.enable_x64(True):
    got = jaxviz.class_visualization(
        model64.apply, model64.params, [target], key, init=init,
        num_iterations=num_iterations, blur_every=blur_every, max_jitter=max_jitter,
        dtype=jnp.float64)
    jitters = _drawn_jitters(key, max_jitter, num_iterations) if max_jitter else None
  expected = torch_course.create_class_visualization(
      torch_model(NAME, SEED), target, _nchw(init), num_iterations=num_iterations,
      blur_every=blur_every, max_jitter=max_jitter, jitters=jitters, low=low, high=high)
  if jitters:
    assert len(set(jitters)) > 5  # the jitter is really on
  assert rel_err(got.images, to_nhwc(expected)) <= TOL64
  assert rel_err(got.images, init) > 1e-2  # and the image really moved


@pytest.mark.slow  # 20-35 s each on two cores, most of it compiling float64 programs
@pytest.mark.parametrize('name', ['alexnet', 'resnet18'])
def test_course_methods_equal_torch_float64_on_more_architectures(name, weights_dir):
  """Saliency, fooling and class visualisation on AlexNet and a ResNet, as on SqueezeNet
  above: convolutions without bias, batch norm, a padded max-pool and residual adds go
  through the same loop rewrites (jaxviz/_xla_cpu). ResNet-50 differs from ResNet-18 only
  in its blocks, which test_models certifies. Few steps at 80 px; the tolerance is
  TOL64's."""
  size, steps = 80, 6
  x = np.random.default_rng(1).standard_normal((2, size, size, 3))
  tm = torch_model(name, 0)
  with torch.no_grad():
    labels = tm(_nchw(x)).argmax(1).numpy()
  with jax.enable_x64(True):
    model = jaxviz.load_model(name, converted_weights(name, 0, weights_dir),
                              dtype=jnp.float64)
    maps = jaxviz.saliency_maps(model.apply, model.params, jnp.asarray(x), labels)
    fooled = jaxviz.fooling_images(model.apply, model.params, jnp.asarray(x[:1]), [150],
                                   max_iterations=steps, learning_rate=0.2)
    key, low, high = jax.random.key(5), *jaxviz.valid_range()
    init = np.clip(x[1:] * 0.5, low, high)
    viz = jaxviz.class_visualization(model.apply, model.params, [76], key, init=init,
                                     num_iterations=steps, blur_every=2, max_jitter=8,
                                     dtype=jnp.float64)
    jitters = _drawn_jitters(key, 8, steps)
  expected = torch_course.saliency(tm, _nchw(x), torch.tensor(labels)).numpy()
  assert np.abs(expected).max() > 0
  assert rel_err(maps, expected) <= TOL64
  expected, expected_it = torch_course.make_fooling_image(tm, _nchw(x[:1]), 150, 0.2, steps)
  assert int(fooled.iterations[0]) == expected_it
  assert rel_err(fooled.images[0], to_nhwc(expected)[0]) <= TOL64
  assert rel_err(fooled.images[0], x[0]) > 1e-3  # the image moved
  expected = torch_course.create_class_visualization(
      tm, 76, _nchw(init), num_iterations=steps, blur_every=2, max_jitter=8,
      jitters=jitters, low=low, high=high)
  assert rel_err(viz.images, to_nhwc(expected)) <= TOL64
  assert rel_err(viz.images, init) > 1e-2


def test_blur_equals_scipy():
  from scipy.ndimage import gaussian_filter1d
  x = np.random.default_rng(0).standard_normal((9, 14, 3))
  for sigma in (0.5, 1.0, 2.3):
    expected = gaussian_filter1d(gaussian_filter1d(x, sigma, axis=0), sigma, axis=1)
    with jax.enable_x64(True):
      got = gaussian_blur(jnp.asarray(x), sigma)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-14)  # float64 round-off


# ---- behaviour, float32, small images -------------------------------------------------

@pytest.fixture(scope='module')
def model():
  return jaxviz.load_model(NAME, 'random')


SMALL = 96


@pytest.fixture(scope='module')
def images():
  return jnp.asarray(np.random.default_rng(1).standard_normal((3, SMALL, SMALL, 3)),
                     jnp.float32)


def test_saliency_is_zero_where_the_model_cannot_look(model, images):
  # SqueezeNet 1.1's stem is a 3x3 stride-2 conv without padding: on an even width its
  # last window ends one column short, so the last column (and row) never reach the logits.
  maps = jaxviz.saliency_maps(model.apply, model.params, images, [1, 2, 3])
  assert np.all(maps[:, -1, :] == 0) and np.all(maps[:, :, -1] == 0)
  assert np.all(maps[:, :-1, :-1].max(axis=(1, 2)) > 0)
  # A model that only sees the left half: the right half's saliency is exactly zero.
  half = SMALL // 2
  mask = jnp.zeros((SMALL, SMALL, 1)).at[:, :half].set(1.0)
  left_only = lambda p, x: model.apply(p, x * mask)
  maps = jaxviz.saliency_maps(left_only, model.params, images, [1, 2, 3])
  assert np.all(maps[:, :, half:] == 0) and np.all(maps[:, :, :half - 1].max(axis=(1, 2)) > 0)


def test_saliency_batch_equals_single_calls(model, images):
  labels = np.array([7, 8, 9])
  batch = jaxviz.saliency_maps(model.apply, model.params, images, labels)
  for i in range(3):
    single = jaxviz.saliency_maps(model.apply, model.params, images[i:i + 1], labels[i:i + 1])
    # A batched conv may block its sums differently: float32 round-off, ~1e-6 relative.
    assert rel_err(single[0], batch[i]) <= 1e-5


def _reachable_targets(model, images, rank=2):
  """Each image's third most likely class. A random-init SqueezeNet's logits move together,
  so many targets stay out of reach; these are reached in <= 29 of the 100 steps here."""
  logits = np.asarray(model.apply(model.params, images))
  return np.argsort(-logits, axis=1)[:, rank]


@pytest.mark.slow
@pytest.mark.parametrize('objective', ['score', 'cross_entropy'])
def test_fooled_images_are_classified_as_the_target(model, images, objective):
  targets = _reachable_targets(model, images)
  result = jaxviz.fooling_images(model.apply, model.params, images, targets,
                                 objective=objective)
  assert np.all(result.fooled) and np.all(result.iterations > 0)
  np.testing.assert_array_equal(result.predicted, targets)
  np.testing.assert_array_equal(np.argmax(model.apply(model.params, result.images), -1),
                                targets)
  assert np.all(result.l2 > 0) and np.all(np.isfinite(result.relative_l2))
  # Each image stopped on its own: as many steps as it needed, not as the slowest one.
  for i in range(3):
    single = jaxviz.fooling_images(model.apply, model.params, images[i:i + 1],
                                   targets[i:i + 1], objective=objective)
    assert int(single.iterations[0]) == int(result.iterations[i])


def test_already_target_takes_zero_steps(model, images):
  predicted = np.argmax(model.apply(model.params, images), -1)
  result = jaxviz.fooling_images(model.apply, model.params, images, predicted)
  np.testing.assert_array_equal(result.iterations, 0)
  assert np.all(result.fooled) and np.all(result.l2 == 0)
  np.testing.assert_array_equal(result.images, images)


def test_zero_gradient_stalls_without_nan(model, images):
  # SqueezeNet's final ReLU leaves many classes at exactly 0 for a given image: their
  # score has no gradient, and the course's g / ||g|| would be NaN.
  logits = np.asarray(model.apply(model.params, images[:1]))[0]
  dead = int(np.flatnonzero(logits == 0)[0])
  result = jaxviz.fooling_images(model.apply, model.params, images[:1], [dead])
  assert bool(result.stalled[0]) and not bool(result.fooled[0])
  assert int(result.iterations[0]) == 0
  assert np.all(np.isfinite(result.images))
  np.testing.assert_array_equal(result.images, images[:1])
  # The cross-entropy to the same class always has a gradient: no stall.
  ce = jaxviz.fooling_images(model.apply, model.params, images[:1], [dead], max_iterations=3,
                             objective='cross_entropy')
  assert not bool(ce.stalled[0]) and int(ce.iterations[0]) == 3


def test_fooling_vmaps_over_learning_rates(model, images):
  target = int(_reachable_targets(model, images[:1])[0])
  lrs = jnp.array([0.25, 0.5, 1.0, 2.0])
  run = jax.jit(jax.vmap(fooling_image, in_axes=(None, None, None, None, 0, None, None)),
                static_argnums=(0, 6))
  _, iterations, _ = run(model.apply, model.params, images[0], target, lrs, 100,
                         'cross_entropy')
  for lr, it in zip(lrs, iterations):
    single = jaxviz.fooling_images(model.apply, model.params, images[:1], [target],
                                   learning_rate=float(lr), objective='cross_entropy')
    assert int(single.iterations[0]) == int(it)
  assert len(set(np.asarray(iterations).tolist())) > 1  # each lane ran its own lr


def test_plain_ascent_raises_the_objective(model):
  # Without jitter, blur and clamp the method is gradient ascent on f_t(x) - l2 ||x||:
  # the objective must rise. (With them, and random weights whose scores barely respond,
  # it need not; the self-trained model's tests check the full method.)
  result = jaxviz.class_visualization(model.apply, model.params, [76, 1], jax.random.key(0),
                                      image_shape=(64, 64, 3), num_iterations=40,
                                      learning_rate=1.0, blur_every=0, max_jitter=0,
                                      clamp=False, snapshot_every=10)
  trace = np.asarray(result.objective_trace)
  assert trace.shape == (2, 40)
  assert np.all(trace[:, -1] > trace[:, 0]) and np.mean(np.diff(trace, axis=1) > 0) > 0.9
  assert result.snapshots.shape == (2, 4, 64, 64, 3)
  np.testing.assert_array_equal(result.snapshots[:, -1], result.images)


def test_clamp_keeps_pixels_valid(model):
  result = jaxviz.class_visualization(model.apply, model.params, [76], jax.random.key(0),
                                      image_shape=(48, 48, 3), num_iterations=3,
                                      learning_rate=1e3)
  low, high = jaxviz.valid_range()
  assert np.all(result.images >= low - 1e-6) and np.all(result.images <= high + 1e-6)


def test_same_key_same_image_bit_for_bit(model):
  run = lambda key: jaxviz.class_visualization(
      model.apply, model.params, [76], key, image_shape=(48, 48, 3), num_iterations=5).images
  a, b, c = run(jax.random.key(1)), run(jax.random.key(1)), run(jax.random.key(2))
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


@pytest.mark.slow
def test_class_visualization_batch_equals_single_calls(model):
  keys = jax.random.split(jax.random.key(0), 3)
  targets = [76, 1, 945]
  lrs = jnp.array([5.0, 2.0, 1.0])  # a hyperparameter per image, in the same call
  kw = dict(image_shape=(48, 48, 3), num_iterations=6)
  batch = jaxviz.class_visualization(model.apply, model.params, targets, keys,
                                     learning_rate=lrs, **kw)
  for i in range(3):
    single = jaxviz.class_visualization(model.apply, model.params, targets[i:i + 1],
                                        keys[i:i + 1], learning_rate=lrs[i], **kw)
    # float32 round-off of batched vs single convolutions, grown over 6 steps.
    assert rel_err(single.images[0], batch.images[i]) <= 1e-4


def test_class_visualization_with_adam_and_from_an_image(model, images):
  init = jnp.clip(images[:1], *map(jnp.asarray, jaxviz.valid_range()))
  result = jaxviz.class_visualization(model.apply, model.params, [76], jax.random.key(0),
                                      init=init, num_iterations=20,
                                      optimizer=optax.adam(0.1))
  assert result.images.shape == (1, SMALL, SMALL, 3)
  assert result.probability_trace[0, -1] > result.probability_trace[0, 0]


def test_zero_init_gives_no_nan(model):
  # ||x||_2 has no gradient at 0, and the mean-colour image normalises to exactly 0. The
  # model sees x + 0.1 so that its score's gradient is alive while the L2 term sits at 0.
  shifted = lambda p, x: model.apply(p, x + 0.1)
  result = jaxviz.class_visualization(shifted, model.params, [1], jax.random.key(0),
                                      init=jnp.zeros((1, 48, 48, 3)), num_iterations=3,
                                      max_jitter=0, blur_every=0)
  assert np.all(np.isfinite(result.images)) and np.abs(result.images).max() > 0



@pytest.mark.slow
def test_methods_compile_once(model, images):
  counted, traces = counting(model.apply)
  calls = [
      lambda: jaxviz.attribute('gradient_x_input', counted, model.params, images, [1, 2, 3],
                               reduce='sum_abs'),
      lambda: jaxviz.saliency_maps(counted, model.params, images, [1, 2, 3]),
      lambda: jaxviz.fooling_images(counted, model.params, images, [1, 2, 3], max_iterations=2),
      lambda: jaxviz.class_visualization(counted, model.params, [1, 2], jax.random.key(0),
                                         image_shape=(32, 32, 3), num_iterations=2),
  ]
  for call in calls:
    call()
    after_first = len(traces)
    call()
    assert len(traces) == after_first  # nothing retraced, the eval_shape input checks included


@pytest.mark.parametrize('call,match', [
    (lambda m, x: jaxviz.saliency_maps(m.apply, m.params, x, [1, 2, 1000]), 'out of range'),
    (lambda m, x: jaxviz.saliency_maps(m.apply, m.params, x, [1, 2]), r'expected one per'),
    (lambda m, x: jaxviz.saliency_maps(m.apply, m.params, x, [1.0, 2.0, 3.0]), 'integer'),
    (lambda m, x: jaxviz.saliency_maps(m.apply, m.params, x[0], [1]), r'\(N, H, W, 3\)'),
    (lambda m, x: jaxviz.saliency_maps(m.apply, m.params, x[..., :1], [1, 2, 3]), 'grayscale'),
    (lambda m, x: jaxviz.saliency_maps(m.apply, m.params, x, [1, 2, 3], 'l1'), 'objective'),
    (lambda m, x: jaxviz.fooling_images(m.apply, m.params, x, [-1, 2, 3]), 'out of range'),
    (lambda m, x: jaxviz.fooling_images(m.apply, m.params,
                                        jnp.concatenate([x, x[..., :1]], -1), 1), 'RGBA'),
    (lambda m, x: jaxviz.class_visualization(m.apply, m.params, [1000], jax.random.key(0)),
     'out of range'),
    (lambda m, x: jaxviz.class_visualization(m.apply, m.params, [1, 2], jax.random.key(0),
                                             init=x), '3 images for 2 targets'),
    (lambda m, x: jaxviz.class_visualization(m.apply, m.params, [1], jax.random.key(0),
                                             num_iterations=0), 'num_iterations must be a pos'),
    (lambda m, x: jaxviz.class_visualization(m.apply, m.params, [1], jax.random.key(0),
                                             learning_rate=float('nan')), 'learning_rate'),
    (lambda m, x: jaxviz.class_visualization(m.apply, m.params, [1], jax.random.key(0),
                                             image_shape=(40, 40, 3), max_jitter=40),
     'max_jitter 40 must'),
    (lambda m, x: jaxviz.class_visualization(m.apply, m.params, [1], 7), 'PRNG key'),
    (lambda m, x: jaxviz.fooling_images(m.apply, m.params, x, [1, 2, 3],
                                        learning_rate=-1.0), 'learning_rate'),
    (lambda m, x: jaxviz.fooling_images(m.apply, m.params, x.at[1, 2, 3, 0].set(jnp.nan),
                                        [1, 2, 3]), r'image\(s\) \[1\] contain NaN'),
    (lambda m, x: jaxviz.attribute('lrp_epsilon', m.apply, m.params, x, [1, 2, 3]),
     'unknown attribution method'),
    (lambda m, x: jaxviz.attribute('gradient', m.apply, m.params, x, [1, 2, 3],
                                   reduce='mean'), 'reduce must be one of'),
    (lambda m, x: jaxviz.attribute('gradient', m.apply, m.params, x, [1, 2, 3],
                                   objective='l1'), 'objective must be one of'),
    # Per-example functions check their arguments too, also when traced.
    (lambda m, x: saliency_map(m.apply, m.params, x[0], 1, 'l1'), 'objective'),
    (lambda m, x: jax.jit(lambda x: saliency_map(m.apply, m.params, x, 1, 'l1'))(x[0]),
     'objective'),
    (lambda m, x: fooling_image(m.apply, m.params, x[0], 1, objective='descend'),
     'objective'),
    (lambda m, x: fooling_image(m.apply, m.params, x[0], 1, learning_rate=0.0),
     'learning_rate'),
    (lambda m, x: class_visualization_one(
        m.apply, m.params, 1, jax.random.key(0), x[0], 1.0, 0.0, -1.0, 1.0,
        num_iterations=2, blur_every=1, blur_sigma=-1.0, max_jitter=0, clamp=True,
        optimizer=None, snapshot_every=0), 'blur_sigma'),
])
def test_bad_input_is_a_one_line_error(model, images, call, match):
  with pytest.raises(InputError, match=match) as e:
    call(model, images)
  assert '\n' not in str(e.value)


# ---- loops on XLA:CPU's fast convolutions, chunking ----------------------------------

def _loop_conv_specs(jaxpr, in_loop=False):
  """The (lhs, rhs, out) specs of every convolution inside a loop body of `jaxpr`."""
  specs = set()
  for eqn in jaxpr.eqns:
    loop = in_loop or eqn.primitive.name in ('while', 'scan')
    if eqn.primitive.name == 'conv_general_dilated' and in_loop:
      d = eqn.params['dimension_numbers']
      specs.add((d.lhs_spec, d.rhs_spec, d.out_spec))
    for sub in jax.core.jaxprs_in_params(eqn.params):
      specs |= _loop_conv_specs(sub, loop)
  return specs


@pytest.mark.skipif(jax.default_backend() != 'cpu', reason='an XLA:CPU workaround')
def test_loop_bodies_keep_convolutions_canonical(model):
  # XLA:CPU canonicalises convolutions in the entry computation only: in a loop body the
  # input gradient's HWOI-kernel convolutions ran on a naive emitter, 1.5-2.7x slower. The
  # drivers rewrite every convolution of a loop body into NHWC / HWIO / NHWC.
  canonical = {((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))}
  x = jnp.zeros((48, 48, 3))
  fool = jax.make_jaxpr(lambda p, x: fooling_image(model.apply, p, x, 1, 1.0, 3)[0])
  assert _loop_conv_specs(fool(model.params, x).jaxpr) == canonical
  low, high = (jnp.asarray(v) for v in jaxviz.valid_range())
  viz = jax.make_jaxpr(lambda p, x: class_visualization_one(
      model.apply, p, 1, jax.random.key(0), x, 1.0, 1e-3, low, high, num_iterations=3,
      blur_every=2, blur_sigma=0.5, max_jitter=4, clamp=True, optimizer=None,
      snapshot_every=0)[0])
  assert _loop_conv_specs(viz(model.params, x).jaxpr) == canonical
  # Chunks (lax.map) too.
  chunked = jax.make_jaxpr(lambda p, x: jaxviz.parallel.map_chunks(
      lambda x: jax.vmap(lambda x: saliency_map(model.apply, p, x, 1))(x), x, 1))
  assert _loop_conv_specs(chunked(model.params, jnp.zeros((2, 48, 48, 3))).jaxpr) == canonical


def test_canonical_convs_is_bit_identical():
  from jaxviz._xla_cpu.canonical import canonical_convs
  # NCHW input, OIHW kernel, NHWC output, strides, dilation and groups: every transpose
  # path, in the input and the kernel gradients (whose convolutions group the batch).
  rng = np.random.default_rng(1)
  k1 = jnp.asarray(rng.standard_normal((8, 3, 3, 3)), jnp.float32)
  k2 = jnp.asarray(rng.standard_normal((6, 4, 3, 3)), jnp.float32)
  x = jnp.asarray(rng.standard_normal((2, 3, 11, 13)), jnp.float32)

  def net(kernels, x):
    y = jax.lax.conv_general_dilated(x, kernels[0], (2, 2), 'SAME', rhs_dilation=(2, 1),
                                     dimension_numbers=('NCHW', 'OIHW', 'NCHW'))
    y = jax.lax.conv_general_dilated(jnp.tanh(y), kernels[1], (1, 1), [(1, 0), (0, 2)],
                                     feature_group_count=2,
                                     dimension_numbers=('NCHW', 'OIHW', 'NHWC'))
    return jnp.sum(y ** 2)

  grad = jax.grad(net, argnums=(0, 1))
  rewritten = canonical_convs(grad)
  specs = {(d.lhs_spec, d.rhs_spec, d.out_spec)
           for d in (e.params['dimension_numbers']
                     for e in jax.make_jaxpr(rewritten)((k1, k2), x).jaxpr.eqns
                     if e.primitive.name == 'conv_general_dilated')}
  assert specs == {((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))}  # NHWC, HWIO, NHWC only
  for a, b in zip(jax.tree.leaves(jax.jit(grad)((k1, k2), x)),
                  jax.tree.leaves(jax.jit(rewritten)((k1, k2), x))):
    np.testing.assert_array_equal(a, b)  # transposes move values, never round them


def test_canonical_convs_ahead_lays_out_kernels_once_outside_the_loop():
  from jaxviz._xla_cpu.canonical import canonical_convs, canonical_convs_ahead
  rng = np.random.default_rng(2)
  kernels = (jnp.asarray(rng.standard_normal((3, 3, 3, 8)), jnp.float32),
             jnp.asarray(rng.standard_normal((3, 3, 8, 4)), jnp.float32))
  x0 = jnp.asarray(rng.standard_normal((9, 10, 3)), jnp.float32)

  def loss(kernels, x):
    y = x[None]
    for k in kernels:
      y = jnp.tanh(jax.lax.conv_general_dilated(y, k, (1, 1), 'SAME',
                                                dimension_numbers=('NHWC', 'HWIO', 'NHWC')))
    return jnp.sum(y ** 2)

  grad = jax.grad(loss, argnums=1)  # the input gradient: HWOI kernels, i.e. transposes

  def ascend(kernels, x, ahead):
    step = (canonical_convs_ahead(grad, kernels, x) if ahead
            else lambda x: canonical_convs(grad)(kernels, x))
    return jax.lax.fori_loop(0, 3, lambda i, x: x + 0.1 * step(x), x)

  def transposes_in_loop(ahead):
    jaxpr = jax.make_jaxpr(lambda k, x: ascend(k, x, ahead))(kernels, x0).jaxpr
    loop = next(e for e in jaxpr.eqns if e.primitive.name in ('while', 'scan'))
    body = loop.params['body_jaxpr' if 'body_jaxpr' in loop.params else 'jaxpr'].jaxpr
    return sum(e.primitive.name == 'transpose' and e.invars[0].aval.shape in
               {k.shape for k in kernels} for e in body.eqns)

  assert transposes_in_loop(ahead=False) == len(kernels)  # laid out at every step
  assert transposes_in_loop(ahead=True) == 0  # ... or once, before the loop
  # Same canonical convolutions, same values, bit for bit.
  np.testing.assert_array_equal(jax.jit(lambda k, x: ascend(k, x, True))(kernels, x0),
                                jax.jit(lambda k, x: ascend(k, x, False))(kernels, x0))


def test_fooling_whole_batch_loop_stops_each_image(model, images):
  # One vmapped while_loop for the 3 images (the accelerator default): an image that is
  # done is masked while the others step. Re-running the same program with a lower cap
  # is deterministic, so it shows exactly where each image stopped.
  targets = _reachable_targets(model, images)
  full = jaxviz.fooling_images(model.apply, model.params, images, targets, chunk_size=3)
  its = np.asarray(full.iterations)
  assert np.all(full.fooled) and 0 < its.min() < its.max(), its
  cap = int(its.max())  # the slowest image's count
  capped = jaxviz.fooling_images(model.apply, model.params, images, targets,
                                 max_iterations=cap - 1, chunk_size=3)
  for j in range(3):
    if its[j] < cap:  # done before the cap: untouched by the others' later steps
      assert int(capped.iterations[j]) == its[j] and bool(capped.fooled[j])
      np.testing.assert_array_equal(capped.images[j], full.images[j])
    else:
      assert int(capped.iterations[j]) == cap - 1 and not bool(capped.fooled[j])


@pytest.mark.slow
def test_chunked_methods_equal_all_at_once(model, images):
  labels = np.array([7, 8, 9])
  whole = jaxviz.saliency_maps(model.apply, model.params, images, labels)
  for chunk in (1, 2):  # 2: the second chunk is padded with a copy of the last image
    chunked = jaxviz.saliency_maps(model.apply, model.params, images, labels,
                                   chunk_size=chunk)
    assert chunked.shape == whole.shape
    assert rel_err(chunked, whole) <= 1e-5  # batched-conv round-off, as above
  kw = dict(image_shape=(48, 48, 3), num_iterations=6)
  keys = jax.random.split(jax.random.key(0), 3)
  viz = [jaxviz.class_visualization(model.apply, model.params, [76, 1, 945], keys,
                                    chunk_size=c, **kw).images for c in (None, 2, 3)]
  assert rel_err(viz[1], viz[0]) <= 1e-4 and rel_err(viz[2], viz[0]) <= 1e-4


@pytest.mark.slow
def test_progress_fills_once_over_chunks(model):
  for chunk in (1, 2):
    steps = []
    jaxviz.class_visualization(model.apply, model.params, [76, 1, 945], jax.random.key(0),
                               image_shape=(32, 32, 3), num_iterations=4, chunk_size=chunk,
                               progress=lambda t: steps.append(int(t)))
    jax.effects_barrier()
    # Step indices of the whole run: in range, complete only at the end (image 3 of 3).
    assert min(steps) >= 0 and max(steps) == 3 and steps.count(3) <= 2, (chunk, steps)


@pytest.mark.parametrize('chunk_size', [0, -1, 1.5, True])
def test_bad_chunk_size_is_a_one_line_error(model, images, chunk_size):
  with pytest.raises(InputError, match='chunk_size') as e:
    jaxviz.saliency_maps(model.apply, model.params, images, [1, 2, 3], chunk_size=chunk_size)
  assert '\n' not in str(e.value)


def test_jitter_roll_equals_jnp_roll():
  from jaxviz.methods._ascent import roll as _roll
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 7, 9, 3)), jnp.float32)
  shifts = jnp.array([[0, 0], [3, 8], [7, 9], [-2, -11], [16, 16]])
  for oy, ox in shifts.tolist():
    np.testing.assert_array_equal(_roll(x[0], jnp.int32(oy), jnp.int32(ox)),
                                  jnp.roll(x[0], (oy, ox), axis=(0, 1)))
  # Batched shifts under vmap, as in a batch of class visualisations.
  got = jax.vmap(_roll)(x, shifts[1:3, 0], shifts[1:3, 1])
  for i in range(2):
    np.testing.assert_array_equal(got[i], jnp.roll(x[i], tuple(shifts[i + 1].tolist()),
                                                   axis=(0, 1)))


# ---- XLA:CPU's convolution kernels: an explicit, per-program setting ------------------

def test_model_cpu_kernels_follow_the_architecture_and_dtype(model):
  assert model.cpu_kernels == 'eigen'  # SqueezeNet 1.1 in float32: faster on Eigen
  assert jaxviz.load_model('squeezenet1_1', 'random', dtype=jnp.float16).cpu_kernels == 'xla'
  import dataclasses
  vgg = dataclasses.replace(model, name='vgg16')  # (its params are not looked at)
  assert vgg.cpu_kernels == 'xla'  # batched VGG16 is slower on Eigen
  assert dataclasses.replace(model, name='resnet50').cpu_kernels == 'eigen'
  assert dataclasses.replace(model, name='alexnet').cpu_kernels == 'xla'  # batch 4: 0.41x
  with pytest.raises(InputError, match="cpu_kernels must be None, 'xla' or 'eigen'"):
    jaxviz.saliency_maps(model.apply, model.params, np.zeros((1, 32, 32, 3), np.float32),
                         [1], cpu_kernels='auto')


@pytest.mark.slow
@pytest.mark.skipif(jax.default_backend() != 'cpu', reason='XLA:CPU kernels')
def test_cpu_kernels_compile_apart_and_agree_to_round_off(model, images):
  # Wrapping the apply function changes nothing: the kernels are what the call asks for.
  apply, traces = counting(model.apply)
  labels = np.array([1, 2, 3])
  x = jnp.asarray(images[:3, :71, :73])
  results = {}
  for kernels in ('eigen', 'xla', None):
    results[kernels] = jaxviz.saliency_maps(apply, model.params, x, labels,
                                            cpu_kernels=kernels)
  # 'xla' and None are the same program, Eigen's is another: two compilations.
  assert len(traces) == 2, traces
  np.testing.assert_array_equal(results['xla'], results[None])
  # Same function, other kernels: summation order only (measured 5e-7 relative at 96 px);
  # any semantic difference would be >= 1e-3. Not equal: the option took effect.
  assert 0 < rel_err(results['eigen'], results['xla']) <= 1e-4
  for method in (
      lambda k: jaxviz.fooling_images(apply, model.params, x[:1], [5], max_iterations=3,
                                      cpu_kernels=k).images,
      lambda k: jaxviz.class_visualization(apply, model.params, [5], jax.random.key(0),
                                           image_shape=(47, 49, 3), num_iterations=3,
                                           cpu_kernels=k).images):
    got = {k: method(k) for k in ('eigen', 'xla')}
    assert rel_err(got['eigen'], got['xla']) <= 1e-4


# ---- the attribution protocol ---------------------------------------------------------

def test_gradient_x_input_equals_torch_float64(model64, inputs):
  import torch_attribution
  labels = np.array([930, 150, 5])
  with jax.enable_x64(True):
    got = jaxviz.attribute('gradient_x_input', model64.apply, model64.params,
                           jnp.asarray(inputs), labels, reduce=None)
    summed = jaxviz.attribute('gradient_x_input', model64.apply, model64.params,
                              jnp.asarray(inputs), labels, reduce='sum_abs')
  expected = to_nhwc(torch_attribution.gradient_x_input(
      torch_model(NAME, SEED), _nchw(inputs), torch.tensor(labels)))
  assert got.dtype == jnp.float64 and np.abs(expected).max() > 0
  assert rel_err(got, expected) <= TOL64  # one gradient: summation order only
  assert rel_err(summed, np.abs(expected).sum(-1)) <= TOL64


def test_reductions_are_the_documented_ones():
  a = jnp.asarray([[[3.0, -4.0, 0.0], [-1.0, 2.0, -2.0]]])  # (1, 2, 3)
  np.testing.assert_array_equal(jaxviz.methods.max_abs(a), [[4.0, 2.0]])
  np.testing.assert_array_equal(jaxviz.methods.sum_abs(a), [[7.0, 5.0]])
  np.testing.assert_array_equal(jaxviz.methods.l2(a), [[5.0, 3.0]])


def _linear_apply(params, x):
  """A model linear in its input: logits = <W_c, x> + b_c."""
  return jnp.einsum('nhwc,khwc->nk', x, params['w']) + params['b']


def test_gradient_x_input_sums_to_the_score_change_of_a_linear_model():
  # Shrikumar et al.: for a linear model, sum(x * grad) = f(x) - f(0) exactly.
  rng = np.random.default_rng(0)
  params = {'w': jnp.asarray(rng.standard_normal((4, 8, 8, 3)), jnp.float32),
            'b': jnp.asarray(rng.standard_normal(4), jnp.float32)}
  x = jnp.asarray(rng.standard_normal((2, 8, 8, 3)), jnp.float32)
  attributions = jaxviz.attribute('gradient_x_input', _linear_apply, params, x, [1, 3],
                                  reduce=None)
  change = _linear_apply(params, x)[[0, 1], [1, 3]] - params['b'][jnp.array([1, 3])]
  np.testing.assert_allclose(attributions.sum(axis=(1, 2, 3)), change, rtol=1e-5)  # f32 sums


def test_saliency_maps_are_the_gradient_attribution_reduced_by_max_abs(model, images):
  for objective in ('score', 'cross_entropy'):
    np.testing.assert_array_equal(
        jaxviz.saliency_maps(model.apply, model.params, images, [1, 2, 3], objective),
        jaxviz.attribute('gradient', model.apply, model.params, images, [1, 2, 3],
                         objective=objective))


def _noisy(method, sigma, samples=2):
  """A wrapper on the protocol: the mean of `method` at `samples` noisy copies of the
  image (SmoothGrad's shape), drawing the noise from the per-example key."""

  def wrapped(apply_fn, params, image, label, key):
    keys = jax.random.split(key, samples)
    noisy = lambda k: method(apply_fn, params,
                             image + sigma * jax.random.normal(k, image.shape, image.dtype),
                             label, k)
    return jax.vmap(noisy)(keys).mean(axis=0)

  return wrapped


@pytest.mark.slow
def test_wrappers_compose_over_any_attribution(model, images):
  from jaxviz.methods import gradient, gradient_x_input
  labels = [1, 2, 3]
  run = lambda method, key: jaxviz.attribute(method, model.apply, model.params, images,
                                             labels, key=key, reduce=None)
  for method in (gradient, gradient_x_input):
    # With no noise the wrapper is the mean of identical copies: the method itself.
    np.testing.assert_allclose(run(_noisy(method, 0.0), jax.random.key(0)),
                               run(method, None), rtol=1e-6, atol=1e-9)
    noisy = _noisy(method, 0.5)
    a, b = run(noisy, jax.random.key(1)), run(noisy, jax.random.key(1))
    np.testing.assert_array_equal(a, b)  # the key decides, bit for bit
    assert not np.array_equal(a, run(noisy, jax.random.key(2)))


def test_registering_a_name_twice_is_refused():
  from jaxviz.methods import attribution, methods
  assert {'gradient', 'gradient_x_input'} <= set(methods())
  with pytest.raises(ValueError, match='registered already'):
    attribution('gradient')(lambda *args: None)


def test_class_visualization_dtype_follows_the_inputs(model64, inputs):
  kw = dict(num_iterations=2, max_jitter=0, blur_every=0)
  with jax.enable_x64(True):
    from_init = jaxviz.class_visualization(model64.apply, model64.params, [1],
                                           jax.random.key(0), init=inputs[:1, :48, :48], **kw)
    from_params = jaxviz.class_visualization(model64.apply, model64.params, [1],
                                             jax.random.key(0), image_shape=(48, 48, 3), **kw)
  assert from_init.images.dtype == jnp.float64 and from_params.images.dtype == jnp.float64


def test_methods_run_inside_the_callers_jit_with_any_kernels(model, images):
  # Compile options belong to the outermost program: inside a caller's jit the method's
  # own choice gives way (jaxviz.compiler_options gives them to the caller's jit).
  for kernels in ('eigen', 'xla'):
    inner = jax.jit(lambda p, x: jaxviz.saliency_maps(model.apply, p, x, [1, 2, 3],
                                                      cpu_kernels=kernels),
                    compiler_options=jaxviz.compiler_options(kernels))
    np.testing.assert_allclose(
        inner(model.params, images),
        jaxviz.saliency_maps(model.apply, model.params, images, [1, 2, 3],
                             cpu_kernels=kernels), rtol=1e-5, atol=1e-7)  # f32 round-off


@pytest.mark.parametrize('call,match', [
    (lambda m, x: saliency_map(m.apply, m.params, x[0].at[0, 0, 0].set(jnp.inf), 1), 'NaN'),
    (lambda m, x: saliency_map(m.apply, m.params, x[0], 1000), 'out of range'),
    (lambda m, x: saliency_map(m.apply, m.params, x[0, :, :, 0], 1), r'\(H, W, 3\)'),
    (lambda m, x: fooling_image(m.apply, m.params, x[0].at[3, 3, 1].set(jnp.nan), 1), 'NaN'),
    (lambda m, x: fooling_image(m.apply, m.params, x[0], 1001), 'out of range'),
    (lambda m, x: class_visualization_one(
        m.apply, m.params, 1, jax.random.key(0), x[0], float('nan'), 0.0, -1.0, 1.0,
        num_iterations=2, blur_every=0, blur_sigma=0.5, max_jitter=0, clamp=True,
        optimizer=None, snapshot_every=0), 'learning_rate'),
    (lambda m, x: jaxviz.class_visualization(m.apply, m.params, [], jax.random.key(0)),
     'targets is empty'),
    (lambda m, x: jaxviz.class_visualization(m.apply, m.params, [1], jax.random.key(0),
                                             image_shape=(0, 40, 3)), 'image_shape'),
    (lambda m, x: jaxviz.class_visualization(m.apply, m.params, [1], jax.random.key(0),
                                             clamp=(np.full(3, np.nan), np.ones(3))),
     'clamp bounds'),
])
def test_per_example_functions_check_images_and_classes(model, images, call, match):
  with pytest.raises(InputError, match=match) as e:
    call(model, images)
  assert '\n' not in str(e.value)


@pytest.mark.parametrize('n, chunk, sizes', [(50, 32, {25}), (729, 32, {32}), (7, 3, {3}),
                                             (5, 8, {5}), (6, 2, {2})])
def test_map_chunks_splits_evenly(n, chunk, sizes):
  """The fewest chunks of at most chunk_size, as even as possible: 50 at 32 is two of 25
  (padding 50 to 64 would compute 28% more), and the results are fn's, in order."""
  seen = set()

  def fn(x):
    seen.add(x.shape[0])
    return x * 2 + 1

  xs = jnp.arange(n, dtype=jnp.float32)
  np.testing.assert_array_equal(jaxviz.parallel.map_chunks(fn, xs, chunk), xs * 2 + 1)
  assert seen == sizes
