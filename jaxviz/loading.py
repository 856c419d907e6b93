"""`load_model`: an architecture plus weights -> a pure apply function and its params."""

import dataclasses
import difflib
import functools
import os
import warnings
from collections.abc import Callable, Sequence
from importlib import resources

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz import _xla_cpu, checkpoint, models, shapes, training
from jaxviz import preprocess as pre
from jaxviz.errors import InputError, WeightsError
from jaxviz.paths import cache_dir, imagenet_weights_path  # noqa: F401  (re-exported)


@functools.cache
def imagenet_class_names() -> tuple[str, ...]:
  """torchvision's 1000 ImageNet class names, in index order (all distinct)."""
  text = resources.files('jaxviz').joinpath('imagenet_classes.txt').read_text()
  return tuple(text.splitlines())


class _Recorder(dict):
  """A hooks mapping that notes every layer name the forward pass offers it."""

  def get(self, name, default=None):
    self[name] = None
    return default


# eq=False: identity hash, usable as a static jit argument. repr=False: jax asks a traced
# function for its repr (source info), and the generated one prints every weight array.
@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Model:
  """A loaded classifier. `apply(params, images) -> logits` is pure and jittable.

  Attributes:
    name: architecture name ('squeezenet1_1', ...).
    apply: (params, (N, H, W, 3) normalised images) -> (N, classes) logits.
    hooked_apply: the same with a third argument, a {layer name: fn} mapping that
      reads or rewrites that layer's output (see `layer_names`).
    params: nested dict of arrays, paths mirroring the torch keys.
    class_names: one name per logit.
    mean, std: the RGB normalisation the weights were trained with.
    metadata: what the weights file records (source, sha256, ...).
  """
  name: str
  apply: Callable
  hooked_apply: Callable
  params: dict
  class_names: tuple[str, ...]
  mean: tuple[float, float, float]
  std: tuple[float, float, float]
  metadata: dict

  def __repr__(self) -> str:
    return f'Model({self.name!r}, {self.num_classes} classes)'

  def __call__(self, params, images):
    """`apply(params, images)`: a Model is usable wherever an apply_fn is."""
    return self.apply(params, images)

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def cpu_kernels(self) -> str:
    """XLA:CPU's convolution kernels measured fastest for this model: pass it to a
    method's `cpu_kernels=`. 'eigen' for float32 SqueezeNet 1.0/1.1, ResNet-18/50 and the
    shapes model, 'xla' (XLA's default) otherwise, float64 included
    (docs/performance.md)."""
    dtype = jax.tree.leaves(self.params)[0].dtype
    return _xla_cpu.preferred_kernels(self.name, dtype)

  @property
  def image_size(self) -> int:
    """The side of the square images the model was trained on (224 for ImageNet)."""
    return int(self.metadata.get('image_size', 224))

  def preprocess(self, images, dtype=jnp.float32):
    return pre.preprocess(images, self.mean, self.std, dtype)

  def deprocess(self, x, clip: bool = True):
    return pre.deprocess(x, self.mean, self.std, clip)

  def valid_range(self):
    return pre.valid_range(self.mean, self.std)

  def class_index(self, cls: int | str) -> int:
    """A class index from an index or a name (exact, case-insensitive)."""
    if isinstance(cls, (int, np.integer)):
      if not 0 <= cls < self.num_classes:
        raise InputError(f'class index {cls} out of range [0, {self.num_classes})')
      return int(cls)
    lowered = [c.lower() for c in self.class_names]
    if str(cls).lower() in lowered:
      return lowered.index(str(cls).lower())
    if str(cls).isdigit():
      return self.class_index(int(cls))
    close = difflib.get_close_matches(str(cls).lower(), lowered, n=3, cutoff=0.6)
    hint = f'; did you mean {", ".join(repr(self.class_names[lowered.index(c)]) for c in close)}?' if close else ''
    raise InputError(f'unknown class {cls!r} for {self.name}{hint}')

  @functools.cached_property
  def layer_names(self) -> tuple[str, ...]:
    """Every hookable layer name, in forward order."""
    recorder = _Recorder()
    x = jax.ShapeDtypeStruct((1, self.image_size, self.image_size, 3), jnp.float32)
    jax.eval_shape(lambda p, x: self.hooked_apply(p, x, recorder), self.params, x)
    return tuple(recorder)

  def intermediates(self, params, images, names: Sequence[str]):
    """(logits, {name: activation}) for the named layers. Pure; use inside jit/grad."""
    unknown = [n for n in names if n not in self.layer_names]
    if unknown:
      raise InputError(f'unknown layer(s) {unknown} for {self.name}; see Model.layer_names')
    acts = {}

    def capture(name):
      def fn(x):
        acts[name] = x
        return x
      return fn

    logits = self.hooked_apply(params, images, {n: capture(n) for n in names})
    return logits, acts


def load_model(name: str, weights: str | None = None, *, seed: int = 0,
               dtype=None, train_if_missing: bool = True) -> Model:
  """Loads an architecture with weights.

  Args:
    name: 'squeezenet1_1', 'vgg16', 'alexnet', 'resnet50', ...
      (jaxviz.models.ARCHITECTURES), or 'shapes', the small model jaxviz trains itself on
      synthetic shapes (jaxviz.training).
    weights: a path to a file written by `python -m weights_convert` (or by
      jaxviz.checkpoint.save), 'imagenet' for the cached converted ImageNet weights,
      'trained' for the cached shapes model, 'random' for seeded torchvision-style init,
      or None: 'trained' for 'shapes', 'imagenet' for the others.
    seed: init seed when weights='random'; training seed for the shapes model.
    dtype: cast every parameter to this dtype (e.g. jnp.float64 with jax_enable_x64).
    train_if_missing: for 'shapes' with 'trained' weights, train the model (a few
      minutes on two CPU cores, with a progress bar) when none is cached; else fail.

  Returns:
    A `Model`.

  Raises:
    WeightsError: the file is missing, corrupt, or does not fit the architecture; the
      message names the key and, for 'imagenet', the command that makes the file.
  """
  models.architecture(name)  # unknown name -> one-line error
  shapes_model = name in models.SELF_TRAINED
  if weights is None:
    weights = 'trained' if shapes_model else 'imagenet'
  if weights == 'imagenet' and shapes_model:
    raise WeightsError("the shapes model has no ImageNet weights: use weights='trained'")
  if weights == 'trained' and not shapes_model:
    raise WeightsError(f"'trained' weights exist only for the shapes model, not {name!r}: "
                       "use 'imagenet', 'random' or a weights file")
  if weights == 'random':
    module = models.build(name, seed=seed)
    if shapes_model:
      class_names, mean, std = shapes.CLASS_NAMES, shapes.MEAN, shapes.STD
      metadata = {'model': name, 'source': 'random', 'seed': seed,
                  'image_size': shapes.IMAGE_SIZE}
    else:
      class_names, mean, std = imagenet_class_names(), pre.IMAGENET_MEAN, pre.IMAGENET_STD
      metadata = {'model': name, 'source': 'random', 'seed': seed}
  else:
    path = weights
    if weights == 'trained':
      path = training.weights_path(seed)
      if not os.path.isfile(path):
        if not train_if_missing:
          raise WeightsError(f'no trained shapes model at {path}; make it with: '
                             f'python scripts/train_shapes.py --seed={seed}')
        path = training.ensure_weights(seed)
    elif weights == 'imagenet':
      path = imagenet_weights_path(name)
      if not os.path.isfile(path):
        raise WeightsError(
            f'no converted ImageNet weights for {name} at {path}; make them with: '
            f'python -m weights_convert --model={name}')
    flat, metadata = checkpoint.load(path)
    if metadata.get('model') != name:
      raise WeightsError(f'{path} holds weights for {metadata.get("model")!r}, '
                         f'not {name!r}')
    metadata = dict(metadata, file=os.path.abspath(path))
    class_names = tuple(metadata['class_names'])
    mean, std = tuple(metadata['mean']), tuple(metadata['std'])
    module = models.build_abstract(name, num_classes=len(class_names))
  apply, hooked_apply, params = models.functionalize(module)
  if weights != 'random':  # NaN or inf loads only from a file converted to allow it
    params = fill_params(params, flat, source=path,
                         nonfinite='warn' if metadata.get('allow_nonfinite') else 'error')
  if dtype is not None:
    params = jax.tree.map(lambda p: jnp.asarray(p, dtype), params)
  return Model(name, apply, hooked_apply, params, class_names, mean, std, metadata)


def fill_params(abstract: dict, flat: dict[str, np.ndarray], source: str,
                nonfinite: str = 'error') -> dict:
  """Fills an abstract params tree from flat arrays, failing on any mismatch by name.

  Args:
    abstract: the model's params tree (shapes and dtypes; values unused).
    flat: {'features.0.kernel': array} for every leaf of `abstract`.
    source: names the arrays' origin in error messages (a file path).
    nonfinite: a parameter holding NaN or inf is 'error' (a WeightsError naming it and
      counting its non-finite values), 'warn' (a one-line checkpoint.NonFiniteWarning:
      for files converted with allow_nonfinite) or 'ignore' (the caller has checked).

  Raises:
    WeightsError naming the first missing, unexpected, mis-shaped, non-float or (with
    nonfinite='error') non-finite parameter.
  """
  if nonfinite not in ('error', 'warn', 'ignore'):
    raise ValueError(f"nonfinite must be 'error', 'warn' or 'ignore', not {nonfinite!r}")
  expected = checkpoint.flatten(abstract)
  missing = sorted(set(expected) - set(flat))
  extra = sorted(set(flat) - set(expected))
  if missing:
    raise WeightsError(f'{source} lacks parameter(s) {missing[:5]}'
                       + (f' and {len(missing) - 5} more' if len(missing) > 5 else ''))
  if extra:
    raise WeightsError(f'{source} has unexpected parameter(s) {extra[:5]}'
                       + (f' and {len(extra) - 5} more' if len(extra) > 5 else ''))
  for key, spec in expected.items():
    if flat[key].shape != spec.shape:
      raise WeightsError(f'{source}: parameter {key} has shape {flat[key].shape}, '
                         f'the model expects {spec.shape}')
    if not np.issubdtype(flat[key].dtype, np.floating):
      raise WeightsError(f'{source}: parameter {key} has dtype {flat[key].dtype}')
  if nonfinite != 'ignore':
    counts = checkpoint.count_nonfinite({k: flat[k] for k in expected})
    if counts:
      what = f'{source}: NaN or inf in {checkpoint.describe_nonfinite(counts)}'
      if nonfinite == 'error':
        raise WeightsError(f'{what}; the model would output NaN. Convert a finite '
                           'checkpoint (a file converted with --allow_nonfinite loads '
                           'with a warning)')
      warnings.warn(f'{what} (the file was converted with allow_nonfinite)',
                    checkpoint.NonFiniteWarning, stacklevel=3)
  return checkpoint.unflatten({k: jnp.asarray(flat[k]) for k in expected})
