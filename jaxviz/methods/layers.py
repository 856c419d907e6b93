"""What the layer methods (Grad-CAM, layer gradients) need of a model: its hooks, its
layer names, and the default layer to explain."""

from jaxviz.errors import InputError

# The last convolutional feature map of each model (Grad-CAM's default), after its ReLU.
DEFAULT_LAYERS = {
    'squeezenet1_0': 'features.12', 'squeezenet1_1': 'features.12',
    'vgg11': 'features.19', 'vgg13': 'features.23', 'vgg16': 'features.29',
    'vgg19': 'features.35', 'alexnet': 'features.11',
    'resnet18': 'layer4', 'resnet50': 'layer4', 'shapes': 'features.8',
}


def check_model(model, method: str):
  """`model` if it has `hooked_apply` and `layer_names` (a `jaxviz.Model`)."""
  if not (hasattr(model, 'hooked_apply') and hasattr(model, 'layer_names')):
    raise InputError(f'{method} reads a layer: pass the model from jaxviz.load_model, '
                     f'not a bare apply function ({model!r})')
  return model


def resolve_layer(model, layer: str | None, method: str) -> str:
  """`layer`, or the model's default when None; a one-line InputError if unknown."""
  check_model(model, method)
  if layer is None:
    if model.name not in DEFAULT_LAYERS:
      raise InputError(f'{method} has no default layer for {model.name!r}: pass layer= '
                       f'(one of model.layer_names)')
    return DEFAULT_LAYERS[model.name]
  if layer not in model.layer_names:
    raise InputError(f'unknown layer {layer!r} for {model.name}; see Model.layer_names')
  return layer


def layer_activation(model, params, images, layer: str, hook=None):
  """(logits, activation) with the activation passed through `hook` (identity: None)."""
  store = {}

  def fn(a):
    store['a'] = a
    return a if hook is None else hook(a)

  logits = model.hooked_apply(params, images, {layer: fn})
  return logits, store['a']
