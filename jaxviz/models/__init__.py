"""Model registry and the split of an nnx.Module into a pure `apply(params, images)`."""

import functools
from collections.abc import Callable

import jax
from flax import nnx

from jaxviz.errors import InputError
from jaxviz.models.alexnet import AlexNet
from jaxviz.models.resnet import ResNet
from jaxviz.models.shapesnet import ShapesNet
from jaxviz.models.squeezenet import SqueezeNet
from jaxviz.models.vgg import VGG

ARCHITECTURES: dict[str, Callable[..., nnx.Module]] = {
    'squeezenet1_0': functools.partial(SqueezeNet, '1_0'),
    'squeezenet1_1': functools.partial(SqueezeNet, '1_1'),
    'vgg16': functools.partial(VGG, 'vgg16', False),
    'vgg16_bn': functools.partial(VGG, 'vgg16', True),
    'vgg19': functools.partial(VGG, 'vgg19', False),
    'alexnet': AlexNet,
    'resnet18': functools.partial(ResNet, 'resnet18'),
    'resnet50': functools.partial(ResNet, 'resnet50'),
}
# Models jaxviz trains itself (jaxviz.training), with their class counts.
SELF_TRAINED: dict[str, Callable[..., nnx.Module]] = {'shapes': ShapesNet}
_NUM_CLASSES = {'shapes': 10}


def build(name: str, num_classes: int | None = None, seed: int = 0) -> nnx.Module:
  """Builds an architecture with seeded torchvision-style random init (num_classes: 1000
  for the torchvision ones, 10 for 'shapes', unless given)."""
  num_classes = num_classes or _NUM_CLASSES.get(name, 1000)
  return architecture(name)(num_classes=num_classes, rngs=nnx.Rngs(seed))


def build_abstract(name: str, num_classes: int | None = None) -> nnx.Module:
  """The same module with shapes only (no memory, no compute): for loading weights."""
  return nnx.eval_shape(lambda: build(name, num_classes))


def architecture(name: str) -> Callable[..., nnx.Module]:
  known = {**ARCHITECTURES, **SELF_TRAINED}
  try:
    return known[name]
  except KeyError:
    raise InputError(f'unknown model {name!r}; known: {", ".join(sorted(known))}') from None


def functionalize(model: nnx.Module):
  """Splits a module into `(apply, hooked_apply, params)` with params a nested dict.

  `apply(params, images) -> logits` and `hooked_apply(params, images, hooks) -> logits`
  are pure and jittable; `params` is a plain nested dict of arrays whose paths mirror the
  torch keys (`params['features'][3]['squeeze']['kernel']`). Batch-norm running statistics
  live in the same dict: they are constants in eval mode.
  """
  graphdef, state = nnx.split(model)
  template = jax.tree.map(lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype), state)

  def hooked_apply(params, images, hooks):
    live = jax.tree.map(lambda v: v, template)  # a fresh State to fill in
    nnx.replace_by_pure_dict(live, params)
    return nnx.merge(graphdef, live)(images, hooks=hooks)

  def apply(params, images):
    return hooked_apply(params, images, None)

  return apply, hooked_apply, nnx.to_pure_dict(state)
