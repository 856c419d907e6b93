"""Model-parameter randomisation tests (Adebayo et al. 2018, "Sanity Checks").

A saliency method that explains the model must change when the model's weights are
destroyed. Cascading randomisation re-initialises layers from the logits down, one more
at each stage; independent randomisation re-initialises one layer at a time. At every
stage the maps are compared with the trained model's maps (Spearman, with and without
absolute value, and SSIM). Maps that stay similar fail the check.
"""

import math
import zlib
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz import validation
from jaxviz.errors import InputError
from jaxviz.metrics import _checks
from jaxviz.metrics.similarity import normalize_maps, _spearman, _ssim

# Leaves left alone: batch-norm running statistics are buffers, not learned weights
# (torch's BN keeps them out of parameters()), and a random variance could be negative.
KEEP = ('mean', 'var')
TRUNCATION = 2.0
# Standard deviation of a standard normal truncated to [-2, 2]: dividing by it makes the
# re-initialised tensor's std equal the original's.
_TRUNCATED_STD = math.sqrt(
    1 - 2 * TRUNCATION * math.exp(-TRUNCATION ** 2 / 2) / math.sqrt(2 * math.pi)
    / math.erf(TRUNCATION / math.sqrt(2)))


def _key_name(k) -> str:
  for attr in ('key', 'idx', 'name'):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def _natural(name: str):
  """Sort key: integer components numerically ('features.10' after 'features.9')."""
  return tuple((0, int(p), '') if p.isdigit() else (1, 0, p) for p in name.split('.'))


def _leaves(params):
  """[(layer name, leaf name, array)] in tree-flatten order."""
  flat, _ = jax.tree_util.tree_flatten_with_path(params)
  out = []
  for path, leaf in flat:
    names = [_key_name(k) for k in path]
    out.append(('.'.join(names[:-1]), names[-1], leaf))
  return out


def _sub_jaxpr(eqn):
  """The jaxpr a call-like equation runs on its inputs one for one (jit, custom_jvp,
  remat), or None for anything else (loops, conditionals: treated as one opaque step)."""
  for key in ('jaxpr', 'call_jaxpr', 'fun_jaxpr'):
    sub = eqn.params.get(key)
    if isinstance(sub, jax.extend.core.ClosedJaxpr):
      sub = sub.jaxpr
    if isinstance(sub, jax.extend.core.Jaxpr) and len(sub.invars) == len(eqn.invars):
      return sub
  return None


def _first_use(closed, num_param_leaves: int) -> dict[int, int]:
  """For each parameter leaf, the index of the first operation that combines it (or
  something computed from it alone) with the image: its position in the forward pass."""
  first, counter = {}, [0]
  nothing = (False, frozenset())

  def walk(jaxpr, in_tags):
    tags = dict(zip(jaxpr.invars, in_tags))

    def get(a):
      return nothing if isinstance(a, jax.extend.core.Literal) else tags.get(a, nothing)

    for eqn in jaxpr.eqns:
      ins = [get(a) for a in eqn.invars]
      sub = _sub_jaxpr(eqn)
      if sub is not None:
        outs = walk(sub, ins)
      else:
        counter[0] += 1
        leaves = frozenset().union(*(t[1] for t in ins))
        if any(t[0] for t in ins):
          for leaf in leaves:
            first.setdefault(leaf, counter[0])
          outs = [(True, frozenset())] * len(eqn.outvars)
        else:
          outs = [(False, leaves)] * len(eqn.outvars)
      tags.update(zip(eqn.outvars, outs))
    return [get(v) for v in jaxpr.outvars]

  in_tags = [(False, frozenset([i])) for i in range(num_param_leaves)]
  in_tags += [(True, frozenset())] * (len(closed.jaxpr.invars) - num_param_leaves)
  walk(closed.jaxpr, in_tags)
  return first


def parameterized_layers(params, apply_fn: Callable | None = None,
                         images=None) -> tuple[str, ...]:
  """The names of the layers that hold parameters, in forward order.

  A layer is a node of the params tree that holds arrays directly (`features.3.squeeze`
  holds `kernel` and `bias`); its name joins the path with dots, like the torch key.

  With `apply_fn`, the order is the network's own: `apply_fn(params, images)` is traced
  abstractly (no compute) and each layer is placed where its parameters first meet the
  image's data flow. That puts `features` before `classifier` and a Fire module's
  `squeeze` before `expand1x1` before `expand3x3`, whatever their names. Without it the
  order is the params tree's: integer keys numerically, then names alphabetically,
  which is forward order within a torch Sequential but not across differently named
  blocks (`classifier` < `features`).

  Args:
    params: nested dict (or lists) of arrays.
    apply_fn: optional pure `fn(params, images)` that runs the model: the model's apply,
      or a saliency function with its labels bound.
    images: an array or `jax.ShapeDtypeStruct` to trace with (default (1, 224, 224, 3)
      float32).

  Returns:
    Layer names, first layer first. Layers whose parameters never meet the image come
    last.
  """
  entries = _leaves(params)
  if not entries:
    raise InputError('params holds no arrays')
  layers = sorted({layer for layer, _, _ in entries}, key=_natural)
  if apply_fn is None:
    return tuple(layers)
  if images is None:
    images = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  spec = jax.ShapeDtypeStruct(np.shape(images), getattr(images, 'dtype', jnp.float32))
  closed = jax.make_jaxpr(apply_fn)(params, spec)
  first = _first_use(closed, len(entries))
  position = {}
  for i, (layer, _, _) in enumerate(entries):
    position[layer] = min(position.get(layer, math.inf), first.get(i, math.inf))
  return tuple(sorted(layers, key=lambda name: (position[name], _natural(name))))


def _stable_hash(name: str) -> int:
  return zlib.crc32(name.encode()) & 0x7FFFFFFF


def _reinit(leaf, key):
  """A truncated-normal redraw of `leaf` with its mean and std (numpy, see below)."""
  x = np.asarray(leaf, np.float64)
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  rng = np.random.default_rng(np.asarray(key).ravel().tolist())
  # Rejection sampling: 95% of standard normal draws lie within +-2, so a few rounds.
  z = rng.standard_normal(x.shape)
  out = np.abs(z) > TRUNCATION
  while out.any():
    z[out] = rng.standard_normal(int(out.sum()))
    out = np.abs(z) > TRUNCATION
  return jnp.asarray(x.mean() + x.std() * z / _TRUNCATED_STD, dtype=jnp.asarray(leaf).dtype)


def _check_layers(entries, layers):
  known = {layer for layer, _, _ in entries}
  unknown = [name for name in layers if name not in known]
  if unknown:
    raise InputError(f'unknown layer(s) {unknown}; see metrics.parameterized_layers(params)')


def randomize_layers(params, layers: Sequence[str], key, keep: Sequence[str] = KEEP):
  """A copy of `params` whose named layers are re-initialised at random.

  Every array of a named layer (kernel, bias, batch-norm scale and offset), except the
  leaves named in `keep`, is redrawn from a normal truncated at +-2 standard deviations
  (the paper's truncated-normal re-initialisation), scaled to the original tensor's own
  mean and standard deviation. Matching the scale keeps the activations of the layers
  above in their usual range, so a change in the maps comes from the destroyed weights,
  not from a vanishing or exploding signal. A constant tensor (torchvision initialises
  biases to 0 and batch-norm scales to 1) stays what it is: it holds no learned content.

  The draw for a layer depends only on `key` and the layer's and leaf's names, so a layer
  gets the same values whichever other layers are randomised with it:
  randomize_layers(randomize_layers(p, [a], key), [b], key) == randomize_layers(p, [a, b],
  key). The draw itself is numpy's (a Generator seeded from the key): XLA would compile
  one sampler per tensor shape, about a second each on CPU, more than the maps of a
  sanity check cost; so this function is not jittable (it runs once per stage).

  Args:
    params: nested dict of arrays.
    layers: layer names, as `parameterized_layers` gives them.
    key: a `jax.random` key.
    keep: leaf names never changed (default: batch-norm running mean and var).

  Returns:
    The new params tree (the other layers' arrays are the same objects).

  References:
    Adebayo et al., Sanity Checks for Saliency Maps, NeurIPS 2018.
  """
  entries = _leaves(params)
  _check_layers(entries, layers)
  chosen, keep = set(layers), set(keep)
  new = []
  for layer, leaf_name, leaf in entries:
    if layer in chosen and leaf_name not in keep:
      leaf_key = jax.random.fold_in(jax.random.fold_in(key, _stable_hash(layer)),
                                    _stable_hash(leaf_name))
      leaf = _reinit(leaf, leaf_key)
    new.append(leaf)
  return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params), new)


class SanityCheck(NamedTuple):
  """Similarity to the original maps at each randomisation stage.

  Attributes:
    stages: ('original', layer, ...): stage 0 is the unchanged model; stage s > 0 has
      randomised the layers up to stage s (cascading) or only stage s's layer
      (independent), logits layer first.
    spearman: (S, N) rank correlation of the maps as `saliency_fn` returns them.
    spearman_abs: (S, N) rank correlation of their absolute values.
    ssim: (S, N) SSIM of the absolute maps, each min-max normalised to [0, 1].
    maps: (S, N, H, W) the maps at each stage, or None (keep_maps=False).
  """
  stages: tuple[str, ...]
  spearman: jax.Array
  spearman_abs: jax.Array
  ssim: jax.Array
  maps: jax.Array | None


@jax.jit
def _similarities(original, maps):
  a, b = jnp.abs(original), jnp.abs(maps)
  return (_spearman(original, maps), _spearman(a, b),
          _ssim(normalize_maps(a), normalize_maps(b), 1.0, False))


def _randomization(saliency_fn, params, images, labels, key, layers, cascading, keep,
                   keep_maps, progress):
  images = validation.check_batch(images)
  labels = np.asarray(labels)  # one jit signature for every stage's saliency_fn call
  if layers is None:
    layers = parameterized_layers(params, lambda p, x: saliency_fn(p, x, labels), images)
  layers = tuple(layers)
  if not layers:
    raise InputError('no layers to randomise')
  _check_layers(_leaves(params), layers)  # before any map is computed
  original = _checks.check_maps(saliency_fn(params, images, labels), 'saliency_fn output')
  if min(np.shape(original)[1:]) < 7:
    raise InputError(f'maps of size {np.shape(original)[1:]} are smaller than the 7x7 SSIM '
                     'window')
  top_down = layers[::-1]
  rows, all_maps = [_similarities(original, original)], [original]
  current = params
  for s, layer in enumerate(top_down, 1):
    if progress is not None:
      progress(s, layer)
    # Cascading: one more layer on top of the previous stage's params (the same draw as
    # randomising them all at once, since each layer's draw depends on its name only).
    stage_params = randomize_layers(current if cascading else params, [layer], key, keep)
    if cascading:
      current = stage_params
    maps = saliency_fn(stage_params, images, labels)
    _checks.check_same_shape(maps, original, ('randomised maps', 'original maps'))
    rows.append(_similarities(original, maps))
    if keep_maps:
      all_maps.append(maps)
  spearman, spearman_abs, ssim = (jnp.stack(x) for x in zip(*rows))
  return SanityCheck(('original',) + top_down, spearman, spearman_abs, ssim,
                     jnp.stack(all_maps) if keep_maps else None)


def cascading_randomization(saliency_fn: Callable, params, images, labels, key,
                            layers: Sequence[str] | None = None, *,
                            keep: Sequence[str] = KEEP, keep_maps: bool = True,
                            progress: Callable[[int, str], None] | None = None
                            ) -> SanityCheck:
  """Randomise layers from the logits down, cumulatively, comparing maps at each stage.

  Stage 0 is the original model (its similarities are 1); stage s has layers
  L, L - 1, ..., L - s + 1 randomised (`randomize_layers`, the same key for all). Maps
  that a method draws from the image alone (an edge detector) stay similar to the end:
  the paper's failure mode.

  The metrics use what `saliency_fn` returns: `spearman` on the maps as they are,
  `spearman_abs` on their absolute values, SSIM on the absolute maps normalised to
  [0, 1]. For a non-negative method (jaxviz.saliency_maps: max over channels of |grad|)
  the two Spearman rows coincide; pass a signed function (`input_gradient_fn`) to get the
  paper's "without absolute value" curve.

  Args:
    saliency_fn: `(params, images, labels) -> (N, H, W)` maps, e.g.
      `functools.partial(jaxviz.saliency_maps, model.apply)`. Called once per stage with
      params of the same structure, so a jitted function compiles once.
    params: the trained model's params.
    images: (N, H, W, 3) normalised images.
    labels: (N,) classes passed to saliency_fn.
    key: a `jax.random` key.
    layers: layers to randomise, in forward order (default: every parameterised layer,
      ordered by tracing saliency_fn). Randomised from the last to the first.
    keep: leaf names never randomised (batch-norm running statistics).
    keep_maps: return the maps of every stage (S N H W floats).
    progress: called as progress(stage, layer) before each stage (long runs).

  Returns:
    A `SanityCheck`: S = len(layers) + 1 stages.

  References:
    Adebayo et al., Sanity Checks for Saliency Maps, NeurIPS 2018.
  """
  return _randomization(saliency_fn, params, images, labels, key, layers, True, keep,
                        keep_maps, progress)


def independent_randomization(saliency_fn: Callable, params, images, labels, key,
                              layers: Sequence[str] | None = None, *,
                              keep: Sequence[str] = KEEP, keep_maps: bool = True,
                              progress: Callable[[int, str], None] | None = None
                              ) -> SanityCheck:
  """Randomise one layer at a time (the rest trained), comparing maps at each stage.

  As `cascading_randomization`, but stage s has only layer L - s + 1 randomised, with the
  same values the cascading run gives that layer (same key).

  References:
    Adebayo et al., Sanity Checks for Saliency Maps, NeurIPS 2018.
  """
  return _randomization(saliency_fn, params, images, labels, key, layers, False, keep,
                        keep_maps, progress)


def input_gradient_fn(apply_fn: Callable) -> Callable:
  """A signed saliency function for the sanity checks: sum over RGB of d logit / d x.

  The paper reports rank correlation with and without the absolute value; the second
  needs a map that keeps the gradient's sign, which jaxviz.saliency_maps (max of |grad|)
  does not.

  Args:
    apply_fn: pure (params, images) -> logits.

  Returns:
    A jitted `fn(params, images, labels) -> (N, H, W)`.

  References:
    Simonyan et al., Deep Inside Convolutional Networks, ICLR-W 2014.
  """
  def one(params, image, label):
    grad = jax.grad(lambda x: apply_fn(params, x[None])[0, label])(image)
    return grad.sum(axis=-1)

  @jax.jit
  def batched(params, images, labels):
    return jax.vmap(one, in_axes=(None, 0, 0))(params, images, labels)

  def fn(params, images, labels):
    # An array, not a list: a list of ints is a different jit signature per call site.
    return batched(params, images, jnp.asarray(labels, jnp.int32))

  return fn
