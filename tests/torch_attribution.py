"""Attribution methods in PyTorch, written from their papers: the float64 references.

Each function takes a torch model, (N, 3, H, W) images and (N,) labels, and returns the
signed (N, 3, H, W) attribution, computed with torch's autograd one batch at a time.
"""

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
