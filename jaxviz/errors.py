"""Exceptions that jaxviz raises for bad input: one line that says what to do."""


class JaxvizError(Exception):
  """Base class. Scripts print `error: <message>` and exit 1 instead of a traceback."""


class InputError(JaxvizError, ValueError):
  """An image, label, class name or hyperparameter that the method cannot use."""


class WeightsError(JaxvizError):
  """A weights file that is missing, corrupt, or does not fit the requested model."""
