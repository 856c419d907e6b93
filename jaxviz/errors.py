"""Exceptions that jaxviz raises for bad input: one line that says what to do."""


class JaxvizError(Exception):
  """Base class. Scripts print `error: <message>` and exit 1 instead of a traceback.

  The message stays one line even when the error is raised while JAX traces a function:
  JAX's traceback filtering appends a paragraph to an exception's arguments, which
  `str()` of a jaxviz error leaves out.
  """

  def __init__(self, message: str):
    super().__init__(message)
    self.message = message

  def __str__(self) -> str:
    return self.message


class InputError(JaxvizError, ValueError):
  """An image, label, class name or hyperparameter that the method cannot use."""


class WeightsError(JaxvizError):
  """A weights file that is missing, corrupt, or does not fit the requested model."""
