"""The scalar class objectives whose input gradients the methods follow."""

import jax

from jaxviz import validation

OBJECTIVES = ('score', 'cross_entropy')


def check_objective(objective: str) -> str:
  return validation.check_choice(objective, OBJECTIVES, 'objective')


def class_objective(apply_fn, params, image, label, objective: str):
  """(objective value, logits) for one image.

  'score' is the raw class score f_label(x); 'cross_entropy' is -log softmax(f(x))_label.
  """
  logits = apply_fn(params, image[None])[0]
  if check_objective(objective) == 'score':
    return logits[label], logits
  return -jax.nn.log_softmax(logits)[label], logits


def objective_grad(apply_fn, params, image, label, objective: str):
  """(gradient wrt the image, logits) with one forward and one backward pass."""
  (_, logits), grad = jax.value_and_grad(
      lambda x: class_objective(apply_fn, params, x, label, objective), has_aux=True)(image)
  return grad, logits
