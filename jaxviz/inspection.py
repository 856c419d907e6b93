"""Looking inside a trained network without optimising anything: the activation maps of a
layer and the convolution kernels themselves (the course's first two of three ways to see
what VGG16 learnt; the third, images that excite a neuron, is input optimisation).

Every function takes any `jaxviz.Model` and addresses a layer by its name in
`model.layer_names` (torchvision's module names: 'features.5', 'features.3.expand3x3',
'layer1.0.conv1').

References:
  Krizhevsky, Sutskever & Hinton, ImageNet Classification with Deep Convolutional Neural
  Networks, NeurIPS 2012, Fig. 3 (first-layer kernels shown as RGB tiles).
  Zeiler & Fergus, Visualizing and Understanding Convolutional Networks, ECCV 2014,
  sec. 2 (feature maps of a layer) and Fig. 6 (first-layer filters).
"""

import functools

import jax
import numpy as np

from jaxviz import validation
from jaxviz.errors import InputError
from jaxviz.methods.layers import check_model

# The output of each model's first convolution after its ReLU ("layer 1" of Zeiler &
# Fergus): what activation maps show by default and the invariance study's first layer.
FIRST_ACTIVATIONS = {
    'squeezenet1_0': 'features.1', 'squeezenet1_1': 'features.1', 'vgg16': 'features.1',
    'vgg16_bn': 'features.2', 'vgg19': 'features.1', 'alexnet': 'features.1',
    'resnet18': 'relu', 'resnet50': 'relu', 'shapes': 'features.0_activation',
}


def _layer(model, layer: str, method: str) -> str:
  check_model(model, method)
  if not isinstance(layer, str) or layer not in model.layer_names:
    raise InputError(f'unknown layer {layer!r} for {model.name}; see Model.layer_names')
  return layer


@functools.partial(jax.jit, static_argnames=('model', 'layer'))
def _activations(model, params, images, layer):
  return model.intermediates(params, images, (layer,))[1][layer]


def activation_maps(model, params, images, layer: str | None = None):
  """Every channel of one layer's output for a batch: the layer's activation maps.

  Jitted, compiled once per (model, layer, image shape, dtype); the forward pass stops
  mattering after the layer (XLA drops what follows it).

  Args:
    model: a `jaxviz.Model`.
    params: its parameters (`model.params`, or a cast copy).
    images: (N, H, W, 3) normalised images (`model.preprocess`).
    layer: a name of `model.layer_names`; None: the first convolution's output after its
      ReLU (`FIRST_ACTIVATIONS`: 'features.1' for SqueezeNet and VGG16, 'relu' for the
      ResNets).

  Returns:
    The layer's output: (N, H', W', C) for a convolutional layer, (N, C) for a fully
    connected one (VGG16's 'classifier.4' is fc7).

  Raises:
    InputError: an unknown layer name, or images that are not a finite float batch.

  References:
    Zeiler & Fergus 2014, sec. 2: a layer's feature maps, one per filter.
  """
  check_model(model, 'activation_maps')
  if layer is None:
    layer = first_activation(model)
  layer = _layer(model, layer, 'activation_maps')
  images = validation.check_batch(images)
  return _activations(model, params, images, layer)


def first_activation(model) -> str:
  """The model's first convolution's output after its ReLU (FIRST_ACTIVATIONS); a
  one-line InputError for a model without an entry there."""
  if model.name in FIRST_ACTIVATIONS:
    return FIRST_ACTIVATIONS[model.name]
  raise InputError(f'no default first-layer activation for {model.name!r}: pass layer= '
                   '(one of model.layer_names)')


# ----------------------------------------------------------------------------------------
# Filters.

def _path(name: str) -> tuple:
  return tuple(int(part) if part.isdigit() else part for part in name.split('.'))


def _kernel_node(params, name: str):
  """The HWIO kernel a layer name addresses, or None when it addresses no convolution:
  `params` mirrors torch's module tree, so 'features.3.expand3x3' is
  params['features'][3]['expand3x3']; a conv followed by batch norm inside one named
  block (the shapes model's 'features.0') keeps its kernel under 'conv'."""
  node = params
  for part in _path(name):
    if not isinstance(node, dict) or part not in node:
      return None
    node = node[part]
  if not isinstance(node, dict):
    return None
  for candidate in (node.get('kernel'), (node.get('conv') or {}).get('kernel')
                    if isinstance(node.get('conv'), dict) else None):
    if candidate is not None and len(getattr(candidate, 'shape', ())) == 4:
      return candidate
  return None


def conv_layers(model, params=None) -> tuple[str, ...]:
  """The names in `model.layer_names` that address one convolution, in forward order."""
  check_model(model, 'conv_layers')
  params = model.params if params is None else params
  return tuple(n for n in model.layer_names if _kernel_node(params, n) is not None)


def conv_kernel(model, params, layer: str):
  """The (kh, kw, C_in, C_out) kernel of the convolution named `layer`.

  Raises:
    InputError: an unknown name, or one that is not a single convolution (a ReLU, a
      pool, a linear layer, a whole Fire module: the message names its convolutions).
  """
  layer = _layer(model, layer, 'layer_filters')
  kernel = _kernel_node(params, layer)
  if kernel is None:
    inside = [n for n in conv_layers(model, params) if n.startswith(layer + '.')]
    convs = conv_layers(model, params)
    hint = (f'its convolutions are {", ".join(inside)}' if inside else
            f'convolutions: {", ".join(convs[:6])}' + (f', ... ({len(convs)} in all)'
                                                      if len(convs) > 6 else ''))
    raise InputError(f'layer {layer!r} of {model.name} is not a convolution; {hint}')
  return kernel


def layer_filters(model, params, layer: str) -> np.ndarray:
  """A convolution's kernels, one k x k tile per (output, input) channel pair.

  Args:
    model: a `jaxviz.Model`.
    params: its parameters.
    layer: the convolution's name in `model.layer_names` ('features.0',
      'features.3.expand3x3' inside a SqueezeNet Fire module, 'layer1.0.conv1').

  Returns:
    (C_out, C_in, kh, kw) float array: torch's OIHW weight layout, the raw values.

  Raises:
    InputError: the name is unknown or is not a single convolution.
  """
  return np.asarray(conv_kernel(model, params, layer)).transpose(3, 2, 0, 1)


def first_conv(model, params=None) -> str:
  """The name of the model's first convolution (the one that sees RGB)."""
  convs = conv_layers(model, params)
  if not convs:
    raise InputError(f'{model.name} has no convolution')
  return convs[0]


def first_layer_filters(model, params, scale: str = 'filter') -> np.ndarray:
  """The first convolution's kernels as RGB tiles: (C_out, kh, kw, 3).

  Each input channel of the first layer is a colour channel, so each kernel is a small
  RGB image. scale='filter' (default) maps each filter to [0, 1] by its own min and max:
  every filter's pattern is visible whatever its norm, as in Krizhevsky et al.'s Fig. 3;
  the price is that relative strengths are lost (a dead, near-zero filter looks as
  contrasted as a strong one). scale='joint' uses the min and max over all filters (one
  mapping: a weak filter is a flat grey tile), scale='none' returns the raw weights.
  A constant filter (max = min) maps to 0.5 under 'filter'.

  Args:
    model: a `jaxviz.Model`.
    params: its parameters.
    scale: 'filter', 'joint' or 'none'.

  Returns:
    numpy (C_out, kh, kw, 3): 3x3 for SqueezeNet 1.1 and VGG16, 11x11 for AlexNet, 7x7
    for the ResNets, 3x3 for the shapes model.

  References:
    Krizhevsky et al. 2012, Fig. 3; Zeiler & Fergus 2014, Fig. 6.
  """
  validation.check_choice(scale, ('filter', 'joint', 'none'), 'scale')
  layer = first_conv(model, params)
  w = np.asarray(conv_kernel(model, params, layer)).transpose(3, 0, 1, 2)  # (O, kh, kw, I)
  if w.shape[-1] != 3:
    raise InputError(f'the first convolution of {model.name} ({layer}) has {w.shape[-1]} '
                     'input channels, not 3 (RGB)')
  if scale == 'none':
    return w
  axes = (1, 2, 3) if scale == 'filter' else (0, 1, 2, 3)
  low, high = w.min(axis=axes, keepdims=True), w.max(axis=axes, keepdims=True)
  span = high - low
  flat = span == 0
  return np.where(flat, 0.5, (w - low) / np.where(flat, 1, span)).astype(w.dtype)
