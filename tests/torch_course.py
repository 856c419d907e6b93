"""The course's algorithms in PyTorch, written the way the practical writes them.

This is the reference the JAX methods are certified against: NCHW tensors, one image at a
time, Python loops, in-place updates, scipy's blur (the notebook's `blur_image`).
"""

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter1d


def _objective(scores, y, objective):
  if objective == 'score':
    return scores.gather(1, y.view(-1, 1)).sum()
  return F.cross_entropy(scores, y, reduction='sum')


def saliency(model, X, y, objective='score'):
  """compute_saliency_maps: (N, 3, H, W), (N,) -> (N, H, W)."""
  X = X.clone().requires_grad_()
  _objective(model(X), y, objective).backward()
  return X.grad.abs().max(dim=1)[0]


def make_fooling_image(model, X, target_y, learning_rate=1.0, max_iter=100,
                       objective='score'):
  """make_fooling_image: (1, 3, H, W) -> (fooled image, iterations).

  'cross_entropy' is the reports' variant: the same normalised step, down the loss.
  """
  X_fooling = X.clone().requires_grad_()
  target = torch.tensor([target_y])
  it = 0
  for it in range(max_iter):
    scores = model(X_fooling)
    if scores.argmax(dim=1).item() == target_y:
      break
    _objective(scores, target, objective).backward()
    g = X_fooling.grad
    dX = learning_rate * g / g.norm()
    with torch.no_grad():
      X_fooling += dX if objective == 'score' else -dX
    X_fooling.grad.zero_()
  else:
    it = max_iter
  return X_fooling.detach(), it


def jitter(X, ox, oy):
  """The notebook's jitter: roll right by ox and down by oy (concatenations)."""
  if ox != 0:
    X = torch.cat([X[:, :, :, -ox:], X[:, :, :, :-ox]], dim=3)
  if oy != 0:
    X = torch.cat([X[:, :, -oy:], X[:, :, :-oy]], dim=2)
  return X


def blur_image(X, sigma=1):
  X_np = X.cpu().clone().numpy()
  X_np = gaussian_filter1d(X_np, sigma, axis=2)
  X_np = gaussian_filter1d(X_np, sigma, axis=3)
  X.copy_(torch.tensor(X_np, dtype=X.dtype))
  return X


def create_class_visualization(model, target_y, init, *, l2_reg=1e-3, learning_rate=5,
                               num_iterations=200, blur_every=10, max_jitter=16,
                               jitters=None, low=None, high=None, blur_sigma=0.5):
  """create_class_visualization from init (1, 3, H, W).

  `jitters` gives the (ox, oy) of each step (the notebook draws them with random.randint;
  a test passes the JAX method's draws so both follow the same path). low/high: per-channel
  clamp bounds (the notebook's -mean/std, (1 - mean)/std); None disables the clamp.
  """
  img = init.clone().requires_grad_()
  for t in range(num_iterations):
    ox, oy = jitters[t] if jitters is not None else (0, 0)
    with torch.no_grad():
      img.data.copy_(jitter(img.data, ox, oy))
    score = model(img)[0, target_y]
    loss = score - l2_reg * img.norm()  # the course's eq. 3: L = f_i(x) - lambda ||x||_2
    loss.backward()
    with torch.no_grad():
      img.data += learning_rate * img.grad.data
      img.grad.zero_()
      img.data.copy_(jitter(img.data, -ox, -oy))
      if low is not None:
        for c in range(3):
          img.data[:, c].clamp_(min=float(low[c]), max=float(high[c]))
      if blur_every and t % blur_every == 0:
        blur_image(img.data, sigma=blur_sigma)
  return img.detach()
