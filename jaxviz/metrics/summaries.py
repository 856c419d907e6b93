"""One-line numbers for a batch of method results: plain dicts of Python floats.

For result tables and JSON logs. Means over an empty set (no image fooled) are NaN, said
explicitly in the docstrings, never a crash.
"""

import numpy as np

from jaxviz.errors import InputError


def _mean(x) -> float:
  return float(np.mean(x)) if np.size(x) else float('nan')


def _median(x) -> float:
  return float(np.median(x)) if np.size(x) else float('nan')


def fooling_summary(result) -> dict[str, float]:
  """Success and perturbation size of a batch of fooling images.

  Iterations and norms are averaged over the fooled images only: a failed image stopped
  at the cap (or stalled), so its numbers measure the cap, not the cost of fooling.

  Args:
    result: a `jaxviz.FoolingResult`.

  Returns:
    {'count', 'fooled', 'success_rate', 'stalled', 'iterations_mean',
    'iterations_median', 'iterations_max', 'l2_mean', 'linf_mean', 'relative_l2_mean',
    'relative_l2_median', 'relative_linf_mean'}: Python floats; the means are NaN when
    no image was fooled.

  References:
    Szegedy et al., Intriguing properties of neural networks, ICLR 2014.
  """
  fooled = np.asarray(result.fooled, bool).reshape(-1)
  if fooled.size == 0:
    raise InputError('the fooling result holds no images')
  it = np.asarray(result.iterations, np.float64).reshape(-1)[fooled]

  def of_fooled(x):
    return np.asarray(x, np.float64).reshape(-1)[fooled]

  return {
      'count': float(fooled.size),
      'fooled': float(fooled.sum()),
      'success_rate': float(fooled.mean()),
      'stalled': float(np.asarray(result.stalled, bool).sum()),
      'iterations_mean': _mean(it),
      'iterations_median': _median(it),
      'iterations_max': float(it.max()) if it.size else float('nan'),
      'l2_mean': _mean(of_fooled(result.l2)),
      'linf_mean': _mean(of_fooled(result.linf)),
      'relative_l2_mean': _mean(of_fooled(result.relative_l2)),
      'relative_l2_median': _median(of_fooled(result.relative_l2)),
      'relative_linf_mean': _mean(of_fooled(result.relative_linf)),
  }


def class_visualization_summary(result, targets, threshold: float = 0.9) -> dict[str, float]:
  """How well a batch of class visualisations reached their targets.

  Args:
    result: a `jaxviz.ClassVisualization`.
    targets: (N,) the target classes (or one for all).
    threshold: the probability counted as "reached" (default 0.9).

  Returns:
    {'count', 'classified_as_target' (fraction whose argmax is the target),
    'target_probability_mean', 'target_probability_median', 'target_probability_min',
    'reached_threshold' (fraction with probability >= threshold), 'threshold'}: Python
    floats.

  References:
    Simonyan et al., Deep Inside Convolutional Networks, ICLR-W 2014.
  """
  prob = np.asarray(result.target_probability, np.float64).reshape(-1)
  predicted = np.asarray(result.predicted).reshape(-1)
  if prob.size == 0:
    raise InputError('the class visualisation result holds no images')
  targets = np.asarray(targets).reshape(-1)
  if targets.size == 1:
    targets = np.full(prob.shape, targets[0])
  if targets.shape != prob.shape:
    raise InputError(f'{targets.size} targets for {prob.size} images')
  return {
      'count': float(prob.size),
      'classified_as_target': float(np.mean(predicted == targets)),
      'target_probability_mean': float(prob.mean()),
      'target_probability_median': float(np.median(prob)),
      'target_probability_min': float(prob.min()),
      'reached_threshold': float(np.mean(prob >= threshold)),
      'threshold': float(threshold),
  }
