"""A torch transcription of Zeiler & Fergus's deconvnet projection of one unit, for the
float64 certification of jaxviz.methods.projection (tests/test_receptive_field.py).

Zeiler & Fergus, Visualizing and Understanding Convolutional Networks, ECCV 2014,
sec. 2.1: to examine one activation, set all other activations of its layer to zero and
pass the map down the deconvnet, which
  - unpools with the switches recorded in the forward pass: max_pool2d's backward,
    which routes each value to its window's argmax;
  - rectifies the reconstruction with a ReLU: relu(g), whatever the forward input was
    (`DeconvReLU` below);
  - filters with the transposed filters of the forward convolution: conv2d's backward
    with respect to its input (no bias).
So the projection is torch.autograd.grad of the layer's output, with every nn.ReLU
replaced by `DeconvReLU`, from a cotangent holding the unit's activation and zeros.
"""

import copy

import torch


class DeconvReLU(torch.autograd.Function):
  """Forward relu(x); backward relu(g) (Z&F 2014 sec. 2.1, "Rectification")."""

  @staticmethod
  def forward(ctx, x):
    return x.clamp(min=0)

  @staticmethod
  def backward(ctx, g):
    return g.clamp(min=0)


class _DeconvReLUModule(torch.nn.Module):
  def forward(self, x):
    return DeconvReLU.apply(x)


def deconvnet(model: torch.nn.Module) -> torch.nn.Module:
  """A copy of `model` with every nn.ReLU module a DeconvReLU (torchvision's SqueezeNet
  calls its ReLUs as modules, Fire's included, so this reaches every one)."""
  model = copy.deepcopy(model)
  for module in list(model.modules()):
    for name, child in module.named_children():
      if isinstance(child, torch.nn.ReLU):
        setattr(module, name, _DeconvReLUModule())
  return model


class _Stop(Exception):
  pass


def unit_projection(model: torch.nn.Module, images, layer: str, channels, units):
  """(N, 3, H, W) projections of unit units[n] (or, where None, the channel's first
  maximum in row-major order, torch.argmax's tie rule) of channel channels[n] of the
  module named `layer`, per image n of (N, 3, H, W) `images`."""
  net = deconvnet(model)
  store = {}

  def hook(module, inputs, output):
    store['a'] = output
    raise _Stop  # nothing past the layer matters

  handle = net.get_submodule(layer).register_forward_hook(hook)
  x = images.clone().requires_grad_(True)
  try:
    net(x)
  except _Stop:
    pass
  finally:
    handle.remove()
  act = store['a']
  cot = torch.zeros_like(act)
  for n, (c, unit) in enumerate(zip(channels, units)):
    amap = act[n, c].detach()
    if unit is None:
      flat = int(torch.argmax(amap.reshape(-1)))
      unit = (flat // amap.shape[1], flat % amap.shape[1])
    i, j = unit
    cot[n, c, i, j] = amap[i, j]  # Z&F: the unit's activation, all others zero
  (grad,) = torch.autograd.grad(act, x, cot)
  return grad
