"""The scalar objectives whose input gradients the methods follow."""

import jax
import jax.numpy as jnp


def class_objective(apply_fn, params, image, label, objective: str):
  """(objective value, logits) for one image.

  'score' is the raw class score f_label(x); 'cross_entropy' is -log softmax(f(x))_label.
  """
  logits = apply_fn(params, image[None])[0]
  if objective == 'score':
    return logits[label], logits
  return -jax.nn.log_softmax(logits)[label], logits


def objective_grad(apply_fn, params, image, label, objective: str):
  """(gradient wrt the image, logits) with one forward and one backward pass."""
  (_, logits), grad = jax.value_and_grad(
      lambda x: class_objective(apply_fn, params, x, label, objective), has_aux=True)(image)
  return grad, logits
