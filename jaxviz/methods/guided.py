"""Guided backpropagation (Springenberg et al. 2015) and the DeconvNet (Zeiler & Fergus
2014): the input gradient of the class score with every ReLU's backward rule replaced
(`relu_rules`)."""

import jax

from jaxviz import parallel, validation
from jaxviz.methods.attribution import attribute, attribution
from jaxviz.methods.relu_rules import with_relu_rule


def rule_gradient(apply_fn, params, image, label, rule: str):
  """d f_label / d image with every ReLU following `rule` ('gradient', 'guided',
  'deconvnet'), (H, W, 3)."""
  validation.check_image(image)
  validation.check_class(label, apply_fn, params, image.shape)
  fn = with_relu_rule(apply_fn, rule)
  return jax.grad(lambda x: fn(params, x[None])[0, label])(image)


@attribution('guided_backprop')
def guided_backprop_one(apply_fn, params, image, label, key=None):
  """Guided backpropagation of the class score to one image, signed, (H, W, 3).

  Every ReLU, input x, passes the incoming gradient g only where x > 0 and g > 0.

  References:
    Springenberg, Dosovitskiy, Brox & Riedmiller, Striving for Simplicity: The All
    Convolutional Net, ICLR-W 2015, sec. 3.4 and Fig. 1.
  """
  del key
  return rule_gradient(apply_fn, params, image, label, 'guided')


@attribution('deconvnet')
def deconvnet_one(apply_fn, params, image, label, key=None):
  """The DeconvNet's projection of the class score to one image, signed, (H, W, 3).

  Every ReLU passes the incoming gradient g where g > 0, whatever its forward input
  (the "rectification" of the deconvnet); max-pool switches and transposed convolutions
  are the ordinary backward pass.

  References:
    Zeiler & Fergus, Visualizing and Understanding Convolutional Networks, ECCV 2014,
    sec. 2.1.
  """
  del key
  return rule_gradient(apply_fn, params, image, label, 'deconvnet')


def guided_backprop(apply_fn, params, images, labels, *, chunk_size: int | None = None,
                    devices: parallel.Devices = None, cpu_kernels: str | None = None):
  """`guided_backprop_one` over a batch: (N, H, W, 3) images, (N,) labels -> (N, H, W, 3).

  `apply_fn` is any apply function (a `Model` is one); see `jaxviz.attribute` for
  chunk_size, devices and cpu_kernels.
  """
  return attribute(guided_backprop_one, apply_fn, params, images, labels, reduce=None,
                   chunk_size=chunk_size, devices=devices, cpu_kernels=cpu_kernels)


def deconvnet(apply_fn, params, images, labels, *, chunk_size: int | None = None,
              devices: parallel.Devices = None, cpu_kernels: str | None = None):
  """`deconvnet_one` over a batch: (N, H, W, 3) images, (N,) labels -> (N, H, W, 3)."""
  return attribute(deconvnet_one, apply_fn, params, images, labels, reduce=None,
                   chunk_size=chunk_size, devices=devices, cpu_kernels=cpu_kernels)
