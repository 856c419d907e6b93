"""Gradient attacks in PyTorch, written from their papers: the float64 references of
jaxviz.fgsm / bim / pgd.

Every function takes a torch model (eval mode) that maps *normalised* (N, 3, H, W) images
to logits, the clean images X as pixels in [0, 1], the per-channel mean and std, and
returns the adversarial pixels (N, 3, H, W). The budget is in pixel units: the model sees
(X - mean) / std. Gradients come from torch's autograd on the summed cross-entropy (each
image's gradient is its own: the images do not interact).
"""

import torch
import torch.nn.functional as F


def _normalise(mean, std, like):
  view = lambda v: torch.as_tensor(v, dtype=like.dtype).view(1, 3, 1, 1)
  return view(mean), view(std)


def loss_gradient(model, X, y, mean, std):
  """d CE(model((X - mean) / std), y) / dX, per image."""
  mean, std = _normalise(mean, std, X)
  X = X.clone().requires_grad_()
  F.cross_entropy(model((X - mean) / std), y, reduction='sum').backward()
  return X.grad.detach()


def _direction(g, norm):
  """The step's direction: sign(g) for L-infinity, g / ||g||_2 (per image) for L2."""
  if norm == 'linf':
    return g.sign()
  length = g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
  return g / torch.where(length > 0, length, torch.ones_like(length))


def fgsm(model, X, y, epsilon, mean, std, targeted=False, norm='linf'):
  """Goodfellow, Shlens & Szegedy, ICLR 2015, eq. 3: eta = eps * sign(grad_x J(x, y)),
  x' = clip(x + eta, 0, 1). Targeted (Kurakin, Goodfellow & Bengio, ICLR 2017, sec. 2):
  x' = clip(x - eps * sign(grad_x J(x, y_target)), 0, 1). norm='l2': the fast gradient
  method, eps * g / ||g||_2."""
  g = loss_gradient(model, X, y, mean, std)
  sign = -1.0 if targeted else 1.0
  return (X + sign * epsilon * _direction(g, norm)).clamp(0, 1)


def project(X_adv, X, epsilon, norm):
  """Kurakin et al. 2017 (physical world), sec. 2.1, Clip_{X,eps}: the pixel-wise
  min(1, X + eps, max(0, X - eps, X')) for L-infinity; for L2 (Madry et al. 2018, the
  projection Pi onto x + S with S the L2 ball): the difference scaled down to length eps,
  then the box."""
  if norm == 'linf':
    return torch.min(torch.max(X_adv, X - epsilon), X + epsilon).clamp(0, 1)
  delta = X_adv - X
  length = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
  factor = torch.where(length > epsilon, epsilon / torch.where(length > 0, length,
                                                                torch.ones_like(length)),
                       torch.ones_like(length))
  return (X + delta * factor).clamp(0, 1)


def pgd(model, X, y, epsilon, step_size, steps, mean, std, norm='linf', start=None,
        targeted=False, early_stop=False):
  """Madry, Makelov, Schmidt, Tsipras & Vladu, ICLR 2018, eq. 2:
  x^{t+1} = Pi_{x+S}(x^t + alpha * sgn(grad_x L(theta, x^t, y))), from x^0 = `start`
  (their random point of the ball) or X itself: Kurakin, Goodfellow & Bengio 2017's basic
  iterative method, X_0 = X, X_{N+1} = Clip_{X,eps}{X_N + alpha * sign(grad J(X_N, y))}.
  Targeted: steps down the target's cross-entropy (their iterative least-likely class
  method, sec. 2.3, with y the target). L2: alpha * g / ||g||_2 and the L2 projection.

  early_stop: each image stops at the first iterate that is misclassified (targeted:
  classified as y), tested before each step; returns (images, steps taken)."""
  X_adv = (X if start is None else start).clone()
  sign = -1.0 if targeted else 1.0
  if not early_stop:
    for _ in range(steps):
      X_adv = project(X_adv + sign * step_size * _direction(
          loss_gradient(model, X_adv, y, mean, std), norm), X, epsilon, norm)
    return X_adv
  mean_, std_ = _normalise(mean, std, X)
  out, counts = [], []
  for i in range(X.shape[0]):
    x, x0, yi = X_adv[i:i + 1], X[i:i + 1], y[i:i + 1]
    taken = 0
    while taken < steps:
      with torch.no_grad():
        predicted = model((x - mean_) / std_).argmax(1)
      if bool((predicted == yi) == targeted):
        break
      x = project(x + sign * step_size * _direction(loss_gradient(model, x, yi, mean, std),
                                                     norm), x0, epsilon, norm)
      taken += 1
    out.append(x)
    counts.append(taken)
  return torch.cat(out), counts
