"""Torch references for neuron maximisation and DeepDream, written from the course and
the papers (not from any library), for the float64 equivalence tests.

The jitter offsets are inputs: each test draws them as the JAX methods do and hands them
over, so both sides roll by the same pixels.
"""

import numpy as np
import torch
import torch.nn.functional as F


class _Stop(Exception):
  """Raised by the hook once the layer's output is captured: nothing after it runs."""


def layer_output(model, layer: str, x):
  """The output of the submodule named `layer` (torch's dotted name, e.g. 'features.4' or
  'features.3.squeeze_activation') for the NCHW batch x, keeping the graph to x."""
  store = {}

  def hook(module, inputs, output):
    store['a'] = output
    raise _Stop

  handle = model.get_submodule(layer).register_forward_hook(hook)
  try:
    model(x)
  except _Stop:
    pass
  finally:
    handle.remove()
  return store['a']


def neuron_maximisation(model, layer: str, image0, channel: int, unit, *, lr: float,
                        l2: float, steps: int, offsets, low, high, clamp: bool = True):
  """The course's neuron maximisation, "fabriquer une image qui activera maximalement un
  neurone": the weights frozen, from image0 (1, 3, H, W) (the course's zeros), each step
  t rolls the image by offsets[t] = (oy, ox), takes the gradient of

      f(I) - lambda ||I||_2^2          (the course's I* = argmax f(I) - lambda ||I||^2)

  with f the channel's mean (unit None) or the unit a[channel, i, j], adds lr times it
  to the image (gradient ascent, "ajouter le gradient a l'image"), rolls back and
  clamps each channel to [low, high].

  References:
    Erhan et al., Visualizing Higher-Layer Features of a Deep Network, 2009, sec. 3.1;
    Yosinski et al., Understanding Neural Networks Through Deep Visualization, 2015
      (jitter, clamp).

  Returns:
    (final image (1, 3, H, W), objective per step (steps,)).
  """
  for p in model.parameters():
    p.requires_grad_(False)
  image = image0.clone()
  low = torch.tensor(np.asarray(low), dtype=image.dtype).view(1, 3, 1, 1)
  high = torch.tensor(np.asarray(high), dtype=image.dtype).view(1, 3, 1, 1)
  trace = []
  for t in range(steps):
    oy, ox = (int(o) for o in offsets[t])
    image = torch.roll(image, (oy, ox), dims=(2, 3)).detach().requires_grad_(True)
    a = layer_output(model, layer, image)
    f = a[0, channel].mean() if unit is None else a[0, channel, unit[0], unit[1]]
    objective = f - l2 * (image * image).sum()
    objective.backward()
    trace.append(objective.item())
    with torch.no_grad():
      image = torch.roll(image + lr * image.grad, (-oy, -ox), dims=(2, 3))
      if clamp:
        image = torch.maximum(torch.minimum(image, high), low)
  return image.detach(), np.array(trace)


def _resize(x, size):
  """Bilinear with half-pixel centres, antialiased when shrinking (the notebook's
  nd.zoom(order=1) in spirit; the JAX side uses jax.image.resize 'linear')."""
  if tuple(x.shape[2:]) == tuple(size):
    return x
  return F.interpolate(x, size=size, mode='bilinear', align_corners=False, antialias=True)


def deep_dream(model, layer: str, image, *, octaves: int, octave_scale: float,
               steps: int, lr: float, offsets, low, high):
  """The DeepDream notebook (google/deepdream dream.ipynb, `make_step` and `deepdream`):

      octave bases: the image downscaled by octave_scale^k, k = octaves - 1 .. 0;
      detail = 0; for each base, smallest first:
        x = base + upscale(detail)
        steps times: roll x by offsets[octave][t]; set the layer's gradient to a
          (objective_L2, the gradient of 0.5 ||a||^2); back-propagate to g;
          x += lr / mean(|g|) * g; roll back; clip to the pixel box;
        detail = x - base

  Returns:
    (final image (1, 3, H, W), [mean(a^2) before, after] per octave).
  """
  for p in model.parameters():
    p.requires_grad_(False)
  h, w = image.shape[2:]
  sizes = [(max(1, int(round(h / octave_scale ** k))), max(1, int(round(w / octave_scale ** k))))
           for k in range(octaves - 1, -1, -1)]
  low = torch.tensor(np.asarray(low), dtype=image.dtype).view(1, 3, 1, 1)
  high = torch.tensor(np.asarray(high), dtype=image.dtype).view(1, 3, 1, 1)
  # The value reported, mean(a^2); the steps follow objective_L2's gradient, a.
  mean_sq = lambda x: (layer_output(model, layer, x) ** 2).mean().item()
  bases = [_resize(image, size) for size in sizes]
  detail = torch.zeros_like(bases[0])
  values = []
  for octave, base in enumerate(bases):
    detail = _resize(detail, base.shape[2:])
    x = base + detail
    before = mean_sq(x)
    for t in range(steps):
      oy, ox = (int(o) for o in offsets[octave][t])
      x = torch.roll(x, (oy, ox), dims=(2, 3)).detach().requires_grad_(True)
      a = layer_output(model, layer, x)
      a.backward(a.detach())  # objective_L2: dst.diff[:] = dst.data
      g = x.grad
      with torch.no_grad():
        x = torch.roll(x + lr / g.abs().mean() * g, (-oy, -ox), dims=(2, 3))
        x = torch.maximum(torch.minimum(x, high), low)
    values.append((before, mean_sq(x)))
    detail = x - base
  return x.detach(), np.array(values)
