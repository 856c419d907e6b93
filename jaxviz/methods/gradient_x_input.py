"""Gradient x input (Shrikumar et al. 2016)."""

from jaxviz.methods.attribution import attribution, gradient


@attribution('gradient_x_input')
def gradient_x_input(apply_fn, params, image, label, key=None, *, objective: str = 'score'):
  """image * d objective / d image, signed, (H, W, 3).

  The first-order Taylor term of the objective around the zero image: for a model
  linear in its input it sums to f(x) - f(0) exactly.

  Args:
    apply_fn, params, image, label, key, objective: as `attribution.gradient`.

  References:
    Shrikumar, Greenside, Shcherbina & Kundaje, Not Just a Black Box: Learning Important
    Features Through Propagating Activation Differences, arXiv:1605.01713, 2016 (sec. 2,
    "gradient * input").
  """
  return image * gradient(apply_fn, params, image, label, key, objective=objective)
