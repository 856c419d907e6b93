"""Grad-CAM and guided Grad-CAM (Selvaraju et al. 2017)."""

import jax
import jax.numpy as jnp

from jaxviz import ops, parallel, validation
from jaxviz.errors import InputError
from jaxviz.methods.attribution import attribute, attribution
from jaxviz.methods.guided import rule_gradient
from jaxviz.methods.layers import layer_activation, resolve_layer


@attribution('grad_cam')
def grad_cam_one(model, params, image, label, key=None, *, layer: str | None = None):
  """Grad-CAM of class `label` at `layer` for one image: (h, w) at the layer's resolution.

  alpha_k = the spatial mean of d f_label / d A^k (eq. 1), map = ReLU(sum_k alpha_k A^k)
  (eq. 2), not normalised. `jaxviz.upsample` brings it to the image's size.

  Args:
    model: a `jaxviz.Model` (its hooks read the layer).
    params, image, label, key: as the attribution protocol's (key unused).
    layer: a name of `model.layer_names`; None: the model's last convolutional feature
      map (`jaxviz.methods.layers.DEFAULT_LAYERS`: 'features.12' for SqueezeNet 1.1,
      'features.29' for VGG16, 'layer4' for the ResNets).

  References:
    Selvaraju, Cogswell, Das, Vedantam, Parikh & Batra, Grad-CAM: Visual Explanations
    from Deep Networks via Gradient-based Localization, ICCV 2017, eqs. 1-2.
  """
  del key
  layer = resolve_layer(model, layer, 'grad_cam')
  validation.check_image(image)
  validation.check_class(label, model, params, image.shape)
  shape = jax.eval_shape(lambda x: layer_activation(model, params, x, layer)[1], image[None])
  # d score / d A as the gradient of a zero perturbation added to A: one forward pass,
  # and a backward pass that stops at the layer.

  def score(delta):
    logits, a = layer_activation(model, params, image[None], layer, lambda a: a + delta)
    return logits[0, label], a

  grads, activation = jax.grad(score, has_aux=True)(jnp.zeros(shape.shape, shape.dtype))
  if activation.ndim != 4:
    raise InputError(f'grad_cam needs a convolutional feature map; {layer!r} '
                                f'has shape {activation.shape[1:]}')
  weights = grads[0].mean(axis=(0, 1))
  return jax.nn.relu(jnp.einsum('hwc,c->hw', activation[0], weights))


@attribution('guided_grad_cam')
def guided_grad_cam_one(model, params, image, label, key=None, *, layer: str | None = None):
  """Guided backpropagation times the Grad-CAM map upsampled to the image, (H, W, 3).

  References:
    Selvaraju et al. 2017 (see `grad_cam_one`), sec. 3.1, "Guided Grad-CAM".
  """
  cam = grad_cam_one(model, params, image, label, key, layer=layer)
  guided = rule_gradient(model, params, image, label, 'guided')
  return guided * ops.upsample(cam[None], image.shape[:2])[0, ..., None]


def grad_cam(model, params, images, labels, *, layer: str | None = None,
             chunk_size: int | None = None, devices: parallel.Devices = None,
             cpu_kernels: str | None = None):
  """`grad_cam_one` over a batch: (N, H, W, 3) images, (N,) labels -> (N, h, w) maps at
  the layer's resolution (`jaxviz.upsample(maps, (H, W))` for the image's). See
  `jaxviz.attribute` for chunk_size, devices and cpu_kernels."""
  layer = resolve_layer(model, layer, 'grad_cam')
  return attribute(grad_cam_one, model, params, images, labels, reduce=None,
                   chunk_size=chunk_size, devices=devices, cpu_kernels=cpu_kernels,
                   layer=layer)


def guided_grad_cam(model, params, images, labels, *, layer: str | None = None,
                    chunk_size: int | None = None, devices: parallel.Devices = None,
                    cpu_kernels: str | None = None):
  """`guided_grad_cam_one` over a batch: -> (N, H, W, 3) signed attributions."""
  layer = resolve_layer(model, layer, 'guided_grad_cam')
  return attribute(guided_grad_cam_one, model, params, images, labels, reduce=None,
                   chunk_size=chunk_size, devices=devices, cpu_kernels=cpu_kernels,
                   layer=layer)
