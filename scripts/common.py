"""What the absl scripts share: one-line errors, weights resolution, run manifests."""

import contextlib
import dataclasses
import functools
import json
import math
import os
import platform
import sys
import tempfile
import threading
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

import jaxviz
from jaxviz import data, figures, models as jaxviz_models, robustness

logging.set_verbosity(logging.WARNING)  # hide JAX's backend-probing INFO lines


def one_line_errors(main):
  """Turns jaxviz's input and weights errors into `error: ...` and exit status 1."""

  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except jaxviz.JaxvizError as e:
      sys.exit(f'error: {e}')

  return wrapped


def parse_flags(argv: list[str]) -> list[str]:
  """app.run's flags_parser: absl's parsing, but a flag it cannot parse (a bound, an enum,
  'nan' for an integer, an unknown name) is one `error: ...` line and exit status 1,
  not absl's two lines."""
  from absl import flags
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(f'error: {" ".join(str(e).split())} (--helpshort lists the flags)')


# What check_flags enforces beyond absl's own parsing. Every float flag must be finite,
# and a string or list flag that is given must not be empty (nor hold an empty item).
# By flag name, whichever script defines it:
FLOAT_MINIMUM = {  # the lowest value, and whether it is allowed itself
    'learning_rate': (0.0, False), 'fooling_lr': (0.0, False), 'blur_sigma': (0.0, False),
    'l2_reg': (0.0, True), 'input_noise': (0.0, True)}
INTEGER_LISTS = {'batch_sizes': 1}  # list flags of integers: their smallest value
OUTPUT_DIRS = ('output_dir',)  # folders the script writes into
OUTPUT_FILES = ('output_json', 'output')  # files it writes


def check_flags(module: str):
  """Checks the flags of the script `module` (its __name__) and the shared ones defined
  here against the table above, and that the output folders and files can be written:
  the first thing every script's main does, before anything is loaded or compiled.
  Raises a one-line InputError."""
  from absl import flags
  own = flags.FLAGS.get_flags_for_module(module) + flags.FLAGS.get_flags_for_module(__name__)
  for flag in own:
    name, value = flag.name, flag.value
    if isinstance(value, float):
      low, inclusive = FLOAT_MINIMUM.get(name, (-math.inf, True))
      if not math.isfinite(value) or value < low or (value == low and not inclusive):
        kind = ('' if low == -math.inf else 'non-negative ' if inclusive else 'positive ')
        raise jaxviz.InputError(f'--{name} must be a {kind}finite number, got {value:g}')
    elif isinstance(value, str) and not value.strip():
      raise jaxviz.InputError(f'--{name} is empty')
    elif isinstance(value, list):
      if not value:
        raise jaxviz.InputError(f'--{name} is empty: give at least one value')
      if not all(str(v).strip() for v in value):
        raise jaxviz.InputError(f'--{name} has an empty item: {",".join(value)!r}')
      smallest = INTEGER_LISTS.get(name)
      if smallest is not None and not all(v.strip().isdigit() and int(v) >= smallest
                                          for v in value):
        raise jaxviz.InputError(f'--{name} must be integers >= {smallest}, got '
                                f'{",".join(value)!r}')
  for flag in own:
    if flag.value is not None and flag.name in OUTPUT_DIRS:
      check_output_dir(flag.value, f'--{flag.name}')
    elif flag.value is not None and flag.name in OUTPUT_FILES:
      check_output_file(flag.value, f'--{flag.name}')


def _check_writable(folder: str, flag: str, path: str):
  """`folder` exists and takes a new file, or can be created: a probe file is written
  and removed in it or in its nearest existing parent, rather than trusting permission
  bits (root ignores them; network file systems may lie). Creates nothing."""
  existing = folder
  while not os.path.lexists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    where = '' if existing == os.path.abspath(path) else f': {existing}'
    raise jaxviz.InputError(f'{flag}={path}{where} is a file, not a folder')
  try:
    fd, probe = tempfile.mkstemp(dir=existing, prefix='.jaxviz-write-probe.')
    os.close(fd)
    os.remove(probe)
  except OSError as e:
    raise jaxviz.InputError(f'{flag}={path}: {existing} is not writable '
                            f'({e.strerror or e})') from None


def check_output_dir(path: str, flag: str = '--output_dir') -> str:
  """`path` if it is a folder this process can write into or create; else a one-line
  InputError (a file in the way, no permission, an empty name)."""
  if not path:
    raise jaxviz.InputError(f'{flag} is empty')
  _check_writable(os.path.abspath(path), flag, path)
  return path


def check_output_file(path: str, flag: str) -> str:
  """`path` if this process can write it: not a folder, and its folder writable or
  creatable; else a one-line InputError."""
  if not path:
    raise jaxviz.InputError(f'{flag} is empty')
  if os.path.isdir(path):
    raise jaxviz.InputError(f'{flag}={path} is a folder, not a file')
  _check_writable(os.path.dirname(os.path.abspath(path)), flag, path)
  return path


def resolve_model(name: str, weights: str | None, fallback: str = 'random') -> jaxviz.Model:
  """load_model, but for 'imagenet' first converts the official weights if none are
  cached; where that fails (no network), says so in one line and uses `fallback`:
  'random' (the same architecture, random init) or 'shapes' (the self-trained shapes
  model, trained first if not cached)."""
  if name in jaxviz_models.SELF_TRAINED:
    return jaxviz.load_model(name, None if weights == 'imagenet' else weights)
  weights = weights or 'imagenet'
  if weights == 'imagenet' and not os.path.isfile(jaxviz.loading.imagenet_weights_path(name)):
    try:
      import weights_convert  # needs the [torch] extra
      weights_convert.convert(name, jaxviz.loading.imagenet_weights_path(name))
    except (jaxviz.WeightsError, ImportError) as e:
      if fallback == 'shapes':
        print(f'note: ImageNet weights for {name} unavailable ({e}); running on the '
              'self-trained shapes model instead', file=sys.stderr)
        return jaxviz.load_model('shapes')
      print(f'note: ImageNet weights for {name} unavailable ({e}); continuing with '
            f'{fallback} weights, so predictions are meaningless', file=sys.stderr)
      return jaxviz.load_model(name, fallback)
  return jaxviz.load_model(name, weights)


def write_manifest(output_dir: str, flags_dict: dict, model: jaxviz.Model, **extra):
  """manifest.json: what it takes to re-make this run's outputs exactly."""
  import importlib.metadata as md
  versions = {p: md.version(p) for p in ('jax', 'jaxlib', 'flax', 'optax', 'numpy')}
  manifest = {
      'jaxviz': jaxviz.__version__, 'command': sys.argv, 'flags': flags_dict,
      'model': model.name, 'weights': model.metadata, 'versions': versions,
      'python': platform.python_version(), 'devices': [str(d) for d in jax.devices()],
      'time': time.strftime('%Y-%m-%dT%H:%M:%S%z'), **extra}
  manifest['weights'] = {k: v for k, v in model.metadata.items() if k != 'class_names'}
  if 'file' in model.metadata:  # the converted file this run read, hashed
    manifest['weights']['file_sha256'] = jaxviz.checkpoint.sha256_file(model.metadata['file'])
  path = os.path.join(output_dir, 'manifest.json')
  jaxviz.checkpoint.atomic_write(path, lambda f: f.write(
      json.dumps(manifest, indent=2, default=str).encode()))
  return path


# ----------------------------------------------------------------------------------------
# Helpers shared by saliency.py, adversarial.py, class_visualization.py and make_figures.py.
# They glue data -> methods -> figures; the methods and plots themselves live in jaxviz.

def enable_compilation_cache():
  """Keeps compiled XLA programs on disk between runs.

  On CPU, random init alone compiles ~50 small programs (~13 s for SqueezeNet) and each
  method compiles for several seconds; a warm cache cuts a script's start to ~2 s. The
  folder is $JAX_COMPILATION_CACHE_DIR, else the jaxviz cache folder's `xla/`.
  """
  directory = os.environ.get('JAX_COMPILATION_CACHE_DIR') or os.path.join(
      jaxviz.cache_dir(), 'xla')
  jax.config.update('jax_compilation_cache_dir', directory)
  # JAX's defaults skip programs compiled in under a second: exactly the init programs.
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


def define_common_flags(script: str):
  """The flags every method script has; returns their holders as a namespace."""
  from absl import flags
  return types.SimpleNamespace(
      model=flags.DEFINE_enum('model', 'squeezenet1_1',
                              sorted(jaxviz.ARCHITECTURES) + ['shapes'],
                              'Architecture.'),
      weights=flags.DEFINE_string(
          'weights', 'imagenet', "'imagenet' (converted on first use; random-init with a "
          "note when it cannot be had), 'random', or a converted .npz weights file."),
      images=flags.DEFINE_string(
          'images', 'samples', "'samples' (bundled photos with ImageNet labels), a folder "
          'of images, one image file, or an .npz with `images` (N, H, W, 3) and optional '
          '`labels` (class names or indices).'),
      image_size=flags.DEFINE_integer(
          'image_size', 224, 'Side of the square the images are resized and centre-cropped '
          'to (.npz images are used as they are).', lower_bound=16),
      seed=flags.DEFINE_integer('seed', 0, 'PRNG seed of the noise init and jitter (class '
                                'visualisation); recorded in the manifest.'),
      output_dir=flags.DEFINE_string('output_dir', os.path.join('outputs', script),
                                     'Where the figure, results.npz and manifest.json go.'),
  )


def script_flags() -> dict:
  """{name: value} of the flags the script (and this module) define, for the manifest."""
  from absl import flags
  return {f.name: f.value for module, fs in flags.FLAGS.flags_by_module_dict().items()
          if not module.startswith('absl') for f in fs}


def weights_label(model: jaxviz.Model) -> str:
  """'random weights, predictions meaningless', or 'weights FILE' naming the weights' source."""
  source = str(model.metadata.get('source', ''))
  if source == 'random':
    return 'random weights, predictions meaningless'
  if source == 'trained':
    return f'self-trained, {model.metadata.get("test_accuracy", float("nan")):.1%} held-out accuracy'
  return f'weights {os.path.basename(source) or "?"}'


def class_indices(model: jaxviz.Model, classes) -> np.ndarray:
  """Class names or indices (strings allowed) -> int32 indices; unknown names fail in one
  line with suggestions."""
  return np.asarray([model.class_index(c.strip() if isinstance(c, str) else c)
                     for c in classes], np.int32)


def load_init(spec: str, size: int) -> np.ndarray | None:
  """--init: 'noise' -> None; 'samples:NAME' -> that bundled photo; else a path to an image,
  a folder or an .npz (data.load_images). Returns uint8 (N, H, W, 3)."""
  if spec == 'noise':
    return None
  if spec.startswith('samples:'):
    samples = data.sample_images(size)
    name = spec.split(':', 1)[1]
    if name not in samples.names:
      raise jaxviz.InputError(f'no sample photo {name!r}; known: {", ".join(samples.names)}')
    return samples.images[samples.names.index(name)][None]
  return data.load_images(spec, size).images


@contextlib.contextmanager
def progress_bar(total: int, desc: str):
  """A tqdm bar over `total` steps; yields the `progress(t)` callback the methods call.

  The bar follows the largest step index seen, so it counts steps once even if a callback
  arrives once per image (vmap) or out of order (jax.debug.callback is unordered).
  """
  from tqdm.auto import tqdm
  bar = tqdm(total=total, desc=f'{desc} (compiling)', unit='step', leave=False,
             file=sys.stderr)
  lock = threading.Lock()
  started = []

  def progress(t):
    with lock:
      if not started:  # the first step ran: compilation is over, restart the clock
        started.append(True)
        bar.set_description(desc, refresh=False)
        bar.reset(total)
      done = int(np.max(t)) + 1
      if done > bar.n:
        bar.update(done - bar.n)

  try:
    yield progress
  finally:
    # Callbacks run asynchronously and may trail the results: the last one (the final
    # step) must land before the bar closes; and tqdm redraws at most every 0.1 s, so
    # draw the final count once before the bar is cleared.
    jax.effects_barrier()
    bar.refresh()
    bar.close()


def save_npz(path: str, **arrays) -> str:
  """Writes arrays (numpy-convertible; strings as unicode arrays) atomically."""
  arrays = {k: np.asarray(v) for k, v in arrays.items() if v is not None}
  jaxviz.checkpoint.atomic_write(path, lambda f: np.savez(f, **arrays))
  return path


def to_rgb01(model: jaxviz.Model, x) -> np.ndarray:
  """Normalised model input -> RGB float32 in [0, 1] (clipped) for display."""
  return np.asarray(model.deprocess(jnp.asarray(x)), np.float32)


def predict(model: jaxviz.Model, x) -> np.ndarray:
  """Argmax class of normalised images."""
  return np.asarray(jnp.argmax(jax.jit(model.apply)(model.params, x), axis=-1))


def _wait(tree):
  return jax.tree.map(np.asarray, jax.block_until_ready(tree))


def run_saliency(model: jaxviz.Model, images: np.ndarray, labels: np.ndarray,
                 objective: str):
  """Saliency maps of uint8 images; also times a second, compiled call.

  Returns:
    (maps (N, H, W), {'first_call_s', 'second_call_s'}).
  """
  x = model.preprocess(images)
  start = time.perf_counter()
  maps = _wait(jaxviz.saliency_maps(model.apply, model.params, x, labels, objective,
                                    cpu_kernels=model.cpu_kernels))
  first = time.perf_counter() - start
  start = time.perf_counter()
  _wait(jaxviz.saliency_maps(model.apply, model.params, x, labels, objective,
                                    cpu_kernels=model.cpu_kernels))
  return maps, {'first_call_s': round(first, 3),
                'second_call_s': round(time.perf_counter() - start, 3)}


def saliency_plot(model: jaxviz.Model, images: np.ndarray, maps, labels, suptitle: str):
  return figures.saliency_figure(images / 255.0, maps,
                                 [model.class_names[k] for k in labels], suptitle)


def run_fooling(model: jaxviz.Model, images: np.ndarray, target: int, objective: str,
                learning_rate: float, max_iterations: int) -> dict:
  """Fooling images of uint8 images towards one target class.

  Returns:
    A dict of numpy arrays: the FoolingResult fields, `original` (normalised input),
    `original_predicted`, and `fooled_uint8_predicted`: the class of the fooled image
    once saved as 8-bit RGB (quantisation and clipping can undo a fooling).
  """
  x = model.preprocess(images)
  targets = np.full((len(images),), target, np.int32)
  start = time.perf_counter()
  result = _wait(jaxviz.fooling_images(model.apply, model.params, x, targets,
                                       learning_rate, max_iterations, objective,
                                       cpu_kernels=model.cpu_kernels))
  seconds = time.perf_counter() - start
  fooled_uint8 = np.round(to_rgb01(model, result.images) * 255).astype(np.uint8)
  return dict(result._asdict(), original=np.asarray(x), original_predicted=predict(model, x),
              fooled_uint8=fooled_uint8,
              fooled_uint8_predicted=predict(model, model.preprocess(fooled_uint8)),
              target=targets, seconds=seconds)


def fooling_plot(model: jaxviz.Model, run: dict, suptitle: str):
  names = lambda ks: [model.class_names[k] for k in ks]
  return figures.fooling_figure(
      to_rgb01(model, run['original']), to_rgb01(model, run['images']),
      names(run['original_predicted']), names(run['predicted']), run['iterations'],
      run['l2'], run['linf'], suptitle)


def run_class_visualization(model: jaxviz.Model, targets: np.ndarray, seed: int, *,
                            init: np.ndarray | None, image_size: int, num_iterations: int,
                            learning_rate: float, optimizer: str = 'sgd',
                            desc: str = 'class visualisation', **hyperparameters):
  """Class visualisations of `targets` (one image each) with a progress bar.

  Args:
    init: uint8 (1 or N, H, W, 3) images to start from, or None for N(0, 1) noise.
    optimizer: 'sgd' (the course's x += lr * g) or 'adam' (optax.adam(learning_rate)).
    hyperparameters: l2_reg, blur_every, blur_sigma, max_jitter, snapshot_every.

  Returns:
    (ClassVisualization as numpy arrays, seconds).
  """
  opt = {'sgd': None, 'adam': lambda: optax.adam(learning_rate)}[optimizer]
  start = time.perf_counter()
  with progress_bar(num_iterations, desc) as progress:
    result = jaxviz.class_visualization(
        model.apply, model.params, targets, jax.random.key(seed),
        init=None if init is None else model.preprocess(init),
        image_shape=(image_size, image_size, 3), num_iterations=num_iterations,
        learning_rate=learning_rate, optimizer=opt and opt(), clamp=model.valid_range(),
        progress=progress, cpu_kernels=model.cpu_kernels, **hyperparameters)
    result = _wait(result)
  return result, time.perf_counter() - start


def class_visualization_titles(model: jaxviz.Model, targets, result, num_iterations: int):
  """'tarantula\n200 it., p=0.93' per image: the target and its final probability."""
  return [f'{model.class_names[t]}\n{num_iterations} it., p={p:.2g}'
          for t, p in zip(targets, result.target_probability)]


# The attribution scripts' defaults: the comparison's methods, and Zeiler & Fergus's
# occluder at 224 px (smaller images get it scaled, see `occluder`).
DEFAULT_METHODS = ('gradient', 'smoothgrad', 'integrated_gradients', 'guided_backprop',
                   'deconvnet', 'grad_cam', 'guided_grad_cam', 'occlusion')
WINDOW, STRIDE, REFERENCE_SIZE = 16, 8, 224


def occluder(size: int, window: int | None, stride: int | None) -> tuple[int, int, str]:
  """(window, stride, how they were chosen). Unset, each is Zeiler & Fergus's 16 / 8 px
  at 224 px, scaled by size / 224 for smaller images (5 / 2 px on the 64-px shapes
  images), so the occluder covers the same fraction of the image."""
  scale = min(1.0, size / REFERENCE_SIZE)
  scaled = []
  if window is None:
    window = max(1, round(WINDOW * scale))
    scaled.append('window')
  if stride is None:
    stride = max(1, round(STRIDE * scale))
    scaled.append('stride')
  if window > size:
    raise jaxviz.InputError(f'--window={window} is larger than the {size}-px images')
  how = 'given'
  if scaled:
    how = ('default' if scale == 1 else f'{" and ".join(scaled)} scaled from '
           f'{WINDOW}/{STRIDE} px at {REFERENCE_SIZE} px to the {size}-px images')
  return window, stride, how


def resolve_labels(model, images, labels_flag):
  """(labels, where they came from): --labels, the images' own, or the predictions."""
  n = len(images.names)
  if labels_flag:
    labels = class_indices(model, labels_flag)
    if len(labels) not in (1, n):
      raise jaxviz.InputError(f'--labels has {len(labels)} classes for {n} images')
    return (labels.repeat(n) if len(labels) == 1 else labels), '--labels'
  if images.labels is not None:
    return class_indices(model, images.labels), "the images' labels"
  return predict(model, model.preprocess(images.images)), 'predictions'


def attribution_images(flags_) -> data.ImageSet:
  """The --images of an attribution script: generated shapes images for the shapes model
  when --images is left at the sample photos (photos mean nothing to it)."""
  spec = flags_.images.value
  if flags_.model.value == 'shapes' and spec == 'samples':
    spec = 'shapes'
  return data.load_images(spec, flags_.image_size.value)


def first_images(flags_, num_images: int) -> data.ImageSet:
  """`attribution_images`' first `num_images` (0: all of them); a one-line InputError
  when the set has fewer."""
  images = attribution_images(flags_)
  count = num_images or len(images.names)
  if count > len(images.names):
    source = ('the generated shapes set' if flags_.model.value == 'shapes'
              and flags_.images.value == 'samples' else flags_.images.value)
    raise jaxviz.InputError(f'--num_images={count} but {source} has '
                            f'{len(images.names)} images')
  return dataclasses.replace(
      images, images=images.images[:count], names=images.names[:count],
      labels=None if images.labels is None else images.labels[:count])


# ----------------------------------------------------------------------------------------
# scripts/attack.py: the epsilon-bounded attacks (jaxviz.methods.attacks) beside the
# course's unbounded fooling method, and the 8-bit check of what they write.

# --attacks name -> (figure and table title, norm of the budget; None: no budget). The
# norms are jaxviz.robustness.ATTACKS'.
_TITLES = {'fgsm': 'FGSM', 'bim': 'BIM', 'pgd': 'PGD-Linf', 'pgd_l2': 'PGD-L2',
           'fooling': 'fooling (course)'}
ATTACKS = {name: (title, robustness.ATTACKS[name].norm if name in robustness.ATTACKS else None)
           for name, title in _TITLES.items()}
DEFAULT_ATTACKS = ('fgsm', 'bim', 'pgd', 'pgd_l2')
# The default L2 budget: 3.0 at 224 x 224 (the ImageNet L2 budget of Madry et al.'s
# robustness library; 0.5 at CIFAR's 32 px is the same per-pixel size within ~15%),
# scaled by sqrt(H * W) / 224: the L2 norm of a perturbation of a fixed per-pixel size
# grows as the square root of the pixel count. 3.0 at 224 px is an RMS change of
# 3.0 / sqrt(224 * 224 * 3) = 0.0077, about 2/255 per value.
L2_EPSILON_AT_224 = 3.0


def parse_epsilon(text: str, flag: str = '--epsilon', maximum: float | None = None) -> float:
  """A budget or step size in pixel units from a number ('0.03') or a fraction ('8/255').

  Raises a one-line InputError for anything else: text that is neither, a zero
  denominator, NaN, inf, a negative value, or one above `maximum` (for the L-infinity
  budget, 1: the whole pixel range; 8 there is 8/255 written in 0-255 units).
  """
  parts = str(text).split('/')
  try:
    if len(parts) > 2:
      raise ValueError(text)
    values = [float(p) for p in parts]
  except ValueError:
    raise jaxviz.InputError(f'{flag}={text!r}: expected a number or a fraction such as '
                            '8/255 (pixel units, [0, 1] scale)') from None
  if not all(math.isfinite(v) for v in values):
    raise jaxviz.InputError(f'{flag}={text!r} must be finite')
  if len(values) == 2 and values[1] == 0:
    raise jaxviz.InputError(f'{flag}={text!r} divides by zero')
  value = values[0] / values[1] if len(values) == 2 else values[0]
  if value < 0:
    raise jaxviz.InputError(f'{flag}={text} is negative: a budget or step size is >= 0')
  if maximum is not None and value > maximum:
    raise jaxviz.InputError(f'{flag}={text} is more than {maximum:g}, the whole pixel range '
                            f'(pixel units are in [0, 1]: did you mean {text}/255?)')
  return value


def default_epsilon_l2(height: int, width: int) -> float:
  """The default L2 budget of (height, width) images: L2_EPSILON_AT_224 * sqrt(H W) / 224
  (3.0 at 224 px, 0.857 at 64 px)."""
  return L2_EPSILON_AT_224 * math.sqrt(height * width) / 224


def check_names(names, known, flag: str, what: str) -> tuple[str, ...]:
  """A list flag's names (--methods, --attacks), in order and without repeats; a one-line
  InputError naming the unknown ones and the `known` ones."""
  names = tuple(dict.fromkeys(n.strip() for n in names))
  unknown = [n for n in names if n not in known]
  if unknown:
    raise jaxviz.InputError(f'{flag}: unknown {what}(s) {", ".join(map(repr, unknown))}; '
                            f'known: {", ".join(known)}')
  return names


def run_attacks(model: jaxviz.Model, images: np.ndarray, labels: np.ndarray, attacks, *,
                targeted: bool, epsilon: float, epsilon_l2: float, steps: int,
                step_size: float, step_size_l2: float, early_stop: bool, seed: int,
                fooling_lr: float = 1.0, fooling_iterations: int = 100) -> dict:
  """Each attack of `attacks` (names of ATTACKS) on uint8 images, with a progress bar
  for BIM and PGD (fooling_images reports no progress).

  Args:
    labels: (N,) classes to leave, or with targeted=True to reach.
    epsilon, step_size: the L-infinity attacks' budget and step (pixel units); FGSM's
      one step is epsilon.
    epsilon_l2, step_size_l2: PGD-L2's.
    seed: the PRNG seed of PGD's random starts (each PGD attack gets the same key).
    fooling_lr, fooling_iterations: the course's fooling method (targeted only; score
      ascent, no budget, no pixel box).

  Returns:
    {name: dict of numpy arrays}: `pixels` (N, H, W, 3) the adversarial images in [0, 1]
    (fooling's clipped to the box, as a display or a file must), `steps`, `success`,
    `stalled`, `predicted`, and `linf`, `l2`: norms of the perturbation the model saw, in
    pixel units (fooling's unclipped), plus `seconds`.
  """
  x = model.preprocess(images)
  clean = images.astype(np.float32) / 255
  mean, std = np.asarray(model.mean, np.float32), np.asarray(model.std, np.float32)
  key = jax.random.key(seed)
  runs = {}
  for name in attacks:
    title, norm = ATTACKS[name]
    start = time.perf_counter()
    if name == 'fooling':
      r = _wait(jaxviz.fooling_images(model.apply, model.params, x, labels, fooling_lr,
                                      fooling_iterations, 'score',
                                      cpu_kernels=model.cpu_kernels))
      seen = np.asarray(r.images) * std + mean
      delta = (seen - clean).reshape(len(images), -1)
      run = dict(pixels=np.clip(seen, 0, 1), steps=r.iterations, success=r.fooled,
                 stalled=r.stalled, predicted=r.predicted, linf=np.abs(delta).max(axis=1),
                 l2=np.linalg.norm(delta, axis=1))
    else:
      budget = epsilon_l2 if norm == 'l2' else epsilon
      kwargs = dict(epsilon=budget, norm=norm, targeted=targeted,
                    cpu_kernels=model.cpu_kernels)
      if name == 'fgsm':
        r = _wait(jaxviz.fgsm(model, model.params, x, labels, **kwargs))
      else:
        kwargs.update(steps=steps, step_size=step_size_l2 if norm == 'l2' else step_size,
                      early_stop=early_stop)
        if name != 'bim':
          kwargs['key'] = key
        method = jaxviz.bim if name == 'bim' else jaxviz.pgd
        with progress_bar(steps, title) as progress:
          r = _wait(method(model, model.params, x, labels, progress=progress, **kwargs))
      run = {k: getattr(r, k) for k in ('pixels', 'steps', 'success', 'stalled',
                                        'predicted', 'linf', 'l2')}
    run['seconds'] = time.perf_counter() - start
    runs[name] = {k: np.asarray(v) for k, v in run.items()}
  return runs


def write_png(path: str, image: np.ndarray) -> str:
  """Writes one uint8 (H, W, 3) image as an RGB PNG, atomically."""
  from PIL import Image
  jaxviz.checkpoint.atomic_write(path, lambda f: Image.fromarray(image, 'RGB').save(
      f, format='PNG'))
  return path


def check_saved(model: jaxviz.Model, original: np.ndarray, pixels: np.ndarray,
                labels: np.ndarray, targeted: bool, paths) -> dict:
  """Writes each adversarial image as an 8-bit PNG, reads it back from disk and
  classifies it again: rounding to 8 bits (and fooling's clipping to the box) can undo
  an attack.

  Args:
    original: (N, H, W, 3) uint8 clean images.
    pixels: (N, H, W, 3) adversarial images in [0, 1].
    labels, targeted: as `run_attacks`'.
    paths: N files to write.

  Returns:
    A dict of numpy arrays: `uint8` (the images read back), `predicted`, `success` (the
    file still misclassified, or classified as the target), and `linf`, `l2`: the file's
    perturbation in pixel units. With an 8-bit original and epsilon a multiple of 1/255,
    `linf` stays within epsilon: rounding cannot cross a multiple of 1/255.
  """
  written = np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8)
  read = []
  for path, image in zip(paths, written):
    write_png(path, image)
    read.append(data.load_image(path, size=None))
  read = np.stack(read)
  predicted = predict(model, model.preprocess(read))
  delta = (read.astype(np.float64) - original.astype(np.float64)).reshape(len(read), -1) / 255
  return dict(uint8=read, predicted=predicted, success=(predicted == labels) == targeted,
              linf=np.abs(delta).max(axis=1), l2=np.linalg.norm(delta, axis=1))


def attack_plot(model: jaxviz.Model, original: np.ndarray, clean_predicted: np.ndarray,
                runs: dict, names, suptitle: str, image: int | None = None):
  """figures.attack_figure of `run_attacks`' runs on uint8 `original` images, whose
  classes are `clean_predicted`: all of them, or only image number `image`."""
  attacks = list(runs)
  clean = clean_predicted
  if image is not None:
    keep = slice(image, image + 1)
    original, names, clean = original[keep], names[keep], clean[keep]
    runs = {a: {k: v[keep] for k, v in r.items() if k != 'seconds'} for a, r in runs.items()}
  cls = lambda k: model.class_names[k]
  return figures.attack_figure(
      original / 255.0, np.stack([runs[a]['pixels'] for a in attacks]),
      [ATTACKS[a][0] for a in attacks], [cls(k) for k in clean],
      [[cls(k) for k in runs[a]['predicted']] for a in attacks],
      np.stack([runs[a]['success'] for a in attacks]),
      np.stack([runs[a]['linf'] for a in attacks]),
      np.stack([runs[a]['l2'] for a in attacks]), suptitle, names=list(names))


# ----------------------------------------------------------------------------------------
# scripts/robustness.py and scripts/transfer.py (and make_figures.py): the studies of
# robustness.


def define_study_flags(script: str, seed_help: str):
  """The flags scripts/robustness.py and scripts/transfer.py share; returns their holders."""
  from absl import flags
  return types.SimpleNamespace(
      weights=flags.DEFINE_string(
          'weights', None, "Every model's weights. Default: 'trained' for shapes, "
          "'imagenet' for the others (random init with a note when it cannot be had); or "
          "'random', or a weights file."),
      images=flags.DEFINE_string(
          'images', None, "Labelled images: 'samples', an .npz with `images` and `labels`. "
          "Default: generated held-out images for shapes models, 'samples' otherwise."),
      image_size=flags.DEFINE_integer(
          'image_size', 224, 'Side the --images are resized and centre-cropped to (.npz '
          'images are used as they are).', lower_bound=16),
      data_seed=flags.DEFINE_integer(
          'data_seed', 1000, "Seed of the shapes models' generated images (not one they "
          'trained or were tested on).', lower_bound=0),
      num_images=flags.DEFINE_integer('num_images', 200, 'Images to attack (0: all of '
                                      '--images).', lower_bound=0),
      chunk_size=flags.DEFINE_integer('chunk_size', 0, "Images per attack loop (0: the "
                                      "methods' default, 1 on CPU).", lower_bound=0),
      seed=flags.DEFINE_integer('seed', 0, seed_help, lower_bound=0),
      output_dir=flags.DEFINE_string('output_dir', os.path.join('outputs', script),
                                     f'Where {script}.json, the figure and the manifest go.'),
  )


def model_from_spec(spec: str, weights: str | None) -> jaxviz.Model:
  """A model from 'NAME[:SEED]': the shapes model of training seed SEED, or an
  architecture (SEED: its random init's seed with weights='random')."""
  name, seed = robustness.parse_model_spec(spec)
  if name in jaxviz_models.SELF_TRAINED:
    return jaxviz.load_model(name, weights, seed=seed)
  if weights == 'random':
    return jaxviz.load_model(name, 'random', seed=seed)
  return resolve_model(name, weights)


def robustness_plot(report: dict, title: str):
  """figures.robustness_figure of a `robustness.robust_accuracy` report: accuracy
  against epsilon per attack (Linf and L2 panels), the course's method marked."""
  linf, l2 = {}, {}
  for name, r in report['attacks'].items():
    label = f'{name} ({r["steps"]} step{"s" if r["steps"] > 1 else ""})'
    if r['norm'] == 'linf':
      linf[label] = (r['epsilons_255'], r['accuracy'])
    else:
      l2[label] = (r['epsilons'], r['accuracy'])
  naive = report.get('naive')
  marked = None
  if naive:
    marked = {'linf_255': naive['linf_255']['median'], 'l2': naive['l2']['median'],
              'success_rate': naive['success_rate'],
              'label': f"course's fooling (lr {naive['learning_rate']:g}, "
                       f"{naive['iterations']} it.): median size when it succeeds"}
  return figures.robustness_figure(linf, l2, marked, title)


def transfer_plot(report: dict, attack: str, epsilon: float, source: str, models,
                  prefix: str = ''):
  """figures.transfer_figure of a `robustness.transfer_matrix` report; `prefix` starts
  its title."""
  norm = robustness.ATTACKS[attack].norm
  budget = f'{epsilon * 255:.3g}/255' if norm == 'linf' else f'L2 {epsilon:.3g}'
  random = any(m.metadata.get('source') == 'random' for m in models)
  title = (f'{prefix}{attack} ({budget}, {report["steps"]} step(s)): share of the images both '
           f'models classify correctly that are misclassified, {report["images"]} images '
           f'({source})' + ('; random weights, numbers meaningless' if random else ''))
  noise = 'random +-epsilon' if norm == 'linf' else 'random direction'
  return figures.transfer_figure(report['rate'], report['models'], title,
                                 counts=report['pairs'], control=report['random_control'],
                                 control_label=f'{noise} (control)')
