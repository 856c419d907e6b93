"""Attribution methods in PyTorch, written from their papers: the float64 references.

Each function takes a torch model (eval mode, float64), (N, 3, H, W) images and (N,)
labels, and returns the signed (N, 3, H, W) attribution (Grad-CAM and occlusion: maps),
computed with torch's autograd one batch at a time. Hooks and modified backward rules run
on relu_free's copy of the model.
"""

import copy

import numpy as np
import torch


def gradient(model, X, y):
  """d f_y(x) / dx. Simonyan, Vedaldi & Zisserman 2014, eq. 2 (w = df/dI at I0)."""
  X = X.clone().requires_grad_()
  model(X).gather(1, y.view(-1, 1)).sum().backward()
  return X.grad.detach()


def gradient_x_input(model, X, y):
  """x * d f_y(x) / dx. Shrikumar et al. 2016, arXiv:1605.01713, sec. 2: the input times
  the gradient, elementwise."""
  return X * gradient(model, X, y)


class _RuleReLU(torch.autograd.Function):
  """max(x, 0) forward; the backward of a modified-backprop rule."""

  @staticmethod
  def forward(ctx, x, rule):
    ctx.rule = rule
    ctx.save_for_backward(x)
    return x.clamp(min=0)

  @staticmethod
  def backward(ctx, g):
    (x,) = ctx.saved_tensors
    if ctx.rule == 'guided':  # Springenberg et al. 2015, sec. 3.4 / Fig. 1
      return g * (x > 0) * (g > 0), None
    return g * (g > 0), None  # deconvnet: Zeiler & Fergus 2014, sec. 2.1


class RuleReLU(torch.nn.Module):
  """A non-inplace ReLU whose backward is 'gradient' (relu's own), 'guided' or 'deconvnet'."""

  def __init__(self, rule='gradient'):
    super().__init__()
    if rule not in ('gradient', 'guided', 'deconvnet'):
      raise ValueError(f'unknown rule {rule!r}')
    self.rule = rule

  def forward(self, x):
    return torch.relu(x) if self.rule == 'gradient' else _RuleReLU.apply(x, self.rule)


def relu_free(model, rule='gradient'):
  """A copy of model with every torch.nn.ReLU replaced by RuleReLU(rule): torchvision's
  in-place ReLUs rewrite what a forward hook captured. The module tree is copied; the
  parameters and buffers are shared with model (read, never written)."""
  shared = {id(t): t for t in [*model.parameters(), *model.buffers()]}
  copy_ = copy.deepcopy(model, memo=shared)
  for parent in list(copy_.modules()):
    for name, child in list(parent.named_children()):
      if isinstance(child, torch.nn.ReLU):  # a ResNet block's one relu is replaced once
        setattr(parent, name, RuleReLU(rule))
  return copy_


def _logit(logits, y):
  return logits.gather(1, y.view(-1, 1)).squeeze(1)


def _rule_gradient(model, X, y, rule):
  X = X.clone().requires_grad_()
  score = _logit(relu_free(model, rule)(X), y).sum()
  return torch.autograd.grad(score, X)[0].detach()


def guided_backprop(model, X, y):
  """d f_y / dx with every ReLU's backward g * (x > 0) * (g > 0). Springenberg, Dosovitskiy,
  Brox & Riedmiller 2015, sec. 3.4 / Fig. 1 (guided backpropagation)."""
  return _rule_gradient(model, X, y, 'guided')


def deconvnet(model, X, y):
  """d f_y / dx with every ReLU's backward g * (g > 0), the forward gate ignored. Zeiler &
  Fergus 2014, sec. 2.1 ('Rectification': the reconstruction passes through a relu)."""
  return _rule_gradient(model, X, y, 'deconvnet')


def _module_call(layer):
  """The module and call that a jaxviz layer name reads (tests/test_models.py): a ResNet
  block's one relu module runs after bn1 ('relu1'), bn2 ('relu2') and, last, the shortcut."""
  parent, _, leaf = layer.rpartition('.')
  if leaf in ('relu1', 'relu2'):
    return f'{parent}.relu', int(leaf[-1]) - 1
  return layer, -1


def _forward_capture(model, X, layer):
  """(logits, the output of module `layer` at its call) in one forward pass of model."""
  name, call = _module_call(layer)
  outputs = []
  handle = model.get_submodule(name).register_forward_hook(lambda m, i, o: outputs.append(o))
  try:
    logits = model(X)
  finally:
    handle.remove()
  return logits, outputs[call]


def grad_cam(model, X, y, layer):
  """(N, h, w) ReLU(sum_k w_k A^k), w_k = mean_ij d f_y / d A^k_ij, A = the output of
  `layer`. Selvaraju et al. 2017, eq. 1-2; unnormalised."""
  logits, A = _forward_capture(relu_free(model), X, layer)
  dA = torch.autograd.grad(_logit(logits, y).sum(), A)[0]
  weights = dA.mean(dim=(2, 3), keepdim=True)
  return torch.relu((weights * A).sum(1)).detach()


def upsample(maps, size):
  """(N, h, w) -> (N, H, W): bilinear with half-pixel centres (align_corners=False)."""
  return torch.nn.functional.interpolate(
      maps[:, None], size=tuple(size), mode='bilinear', align_corners=False)[:, 0]


def guided_grad_cam(model, X, y, layer):
  """Guided backprop times the upsampled Grad-CAM map. Selvaraju et al. 2017, sec. 3.1."""
  cam = upsample(grad_cam(model, X, y, layer), X.shape[-2:])
  return guided_backprop(model, X, y) * cam[:, None]


def occlusion(model, X, y, window, stride, fill=0.0):
  """A grey (fill) square slid over the image: the label's softmax probability, its logit's
  drop and the predicted class per position, (N, gh, gw); attribution (N, H, W) is the mean
  drop over the windows covering a pixel (0 where none). Zeiler & Fergus 2014, sec. 4.2,
  Fig. 7."""
  N, _, H, W = X.shape
  rows, cols = range(0, H - window + 1, stride), range(0, W - window + 1, stride)
  shape = (N, len(rows), len(cols))
  probability, score_drop = torch.zeros(shape, dtype=X.dtype), torch.zeros(shape, dtype=X.dtype)
  predicted = torch.zeros(shape, dtype=torch.long)
  total, count = torch.zeros(N, H, W, dtype=X.dtype), torch.zeros(H, W, dtype=X.dtype)
  with torch.no_grad():
    score = _logit(model(X), y)
    for i, r in enumerate(rows):
      for j, c in enumerate(cols):
        occluded = X.clone()
        occluded[:, :, r:r + window, c:c + window] = fill
        logits = model(occluded)
        probability[:, i, j] = _logit(logits.softmax(1), y)
        score_drop[:, i, j] = score - _logit(logits, y)
        predicted[:, i, j] = logits.argmax(1)
        total[:, r:r + window, c:c + window] += score_drop[:, i, j, None, None]
        count[r:r + window, c:c + window] += 1
  attribution = torch.where(count > 0, total / count.clamp(min=1), 0.0)
  return {'probability': probability, 'score_drop': score_drop, 'predicted': predicted,
          'attribution': attribution}


def smoothgrad(model, X, y, eps, noise_level, squared=False, method=gradient):
  """mean_s method(x + sigma eps_s) (or of its square), sigma = noise_level (max x - min x)
  per image; eps (N, S, 3, H, W) standard normal. Smilkov et al. 2017, eq. 3 (and sec. 3.2
  for the noise level)."""
  out = []
  for x, label, e in zip(X, y, eps):
    sigma = noise_level * (x.max() - x.min())
    a = method(model, x + sigma * e, label.repeat(len(e)))
    out.append((a ** 2 if squared else a).mean(0))
  return torch.stack(out)


def ig_alphas_weights(steps, rule):
  """(alphas, weights), float64, of a quadrature of [0, 1] with `steps` nodes."""
  n = steps
  k = np.arange(n, dtype=np.float64)
  if rule == 'riemann_left':
    return k / n, np.full(n, 1 / n)
  if rule == 'riemann_right':
    return (k + 1) / n, np.full(n, 1 / n)
  if rule == 'riemann_middle':
    return (k + 0.5) / n, np.full(n, 1 / n)
  if rule == 'riemann_trapezoid':
    if n < 2:
      raise ValueError('riemann_trapezoid needs steps >= 2')
    weights = np.full(n, 1 / (n - 1))
    weights[[0, -1]] /= 2
    return k / (n - 1), weights
  if rule == 'gausslegendre':
    t, w = np.polynomial.legendre.leggauss(n)
    return (t + 1) / 2, w / 2
  raise ValueError(f'unknown rule {rule!r}')


def integrated_gradients(model, X, y, baseline=None, steps=50, rule='gausslegendre'):
  """(x - x') sum_k w_k d f_y(x' + a_k (x - x')) / dx, and the completeness gap
  attr.sum() - (f_y(x) - f_y(x')) per image. Sundararajan, Taly & Yan 2017, eq. 1 and 3."""
  baseline = torch.zeros_like(X) if baseline is None else baseline.to(X)
  alphas, weights = ig_alphas_weights(steps, rule)
  total = torch.zeros_like(X)
  for a, w in zip(alphas, weights):
    total += float(w) * gradient(model, baseline + float(a) * (X - baseline), y)
  attributions = (X - baseline) * total
  with torch.no_grad():
    change = _logit(model(X), y) - _logit(model(baseline), y)
  return attributions, attributions.sum(dim=(1, 2, 3)) - change


def layer_gradient(model, X, layer, channels, units=None, rule='gradient'):
  """The vjp of x -> A(x), A the output of `layer`, with cotangent A masked to channel
  channels[i] (all positions) or to the unit (channels[i], *units[i]); the ReLUs use `rule`.
  Simonyan et al. 2014 sec. 2 / Springenberg et al. 2015 sec. 3.4 / Zeiler & Fergus 2014
  sec. 2.1 (the rule), applied to a neuron's activation as in Zeiler & Fergus 2014 sec. 2."""
  X = X.clone().requires_grad_()
  _, A = _forward_capture(relu_free(model, rule), X, layer)
  mask = torch.zeros_like(A, dtype=torch.bool)
  for i, c in enumerate(torch.as_tensor(channels).view(-1).expand(len(X)).tolist()):
    if units is None:
      mask[i, c] = True
    else:
      mask[i, c, int(units[i][0]), int(units[i][1])] = True
  cotangent = torch.where(mask, A, 0.0).detach()
  return torch.autograd.grad(A, X, cotangent)[0].detach()
