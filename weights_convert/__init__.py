"""torchvision checkpoint (.pth) -> jaxviz weights file (.npz + metadata).

The conversion is a rename plus a fixed transpose, then a completeness check against the
abstract Flax model:

  features.3.squeeze.weight  (O, I, kH, kW) -> features.3.squeeze.kernel  (kH, kW, I, O)
  classifier.0.weight        (out, in)      -> classifier.0.kernel        (in, out)
  features.1.weight          (C,) [BN]      -> features.1.scale
  features.1.running_mean / running_var     -> features.1.mean / var
  *.bias                                    -> *.bias
  *.num_batches_tracked                     -> dropped (a training counter)

Every missing, extra or mis-shaped key is an error naming the key. float16, bfloat16 and
float64 tensors become float32; an integer, bool or complex one (other than the dropped
counter) is an error naming the key and its dtype, and so are NaN and inf (counted per key)
unless allow_nonfinite=True, which converts them with a warning and records it in the
file's metadata. Checkpoints are read with torch.load(weights_only=True): a .pth is a
pickle, and a pickle can run code.
"""

import os
import urllib.error
import warnings

import jax.numpy as jnp
import numpy as np

import jaxviz
from jaxviz import checkpoint, models
from jaxviz.errors import WeightsError

_RENAMES = {'running_mean': 'mean', 'running_var': 'var'}
_IGNORED = ('num_batches_tracked',)


def torch_key_to_jax(key: str, ndim: int) -> tuple[str, tuple[int, ...] | None]:
  """('features.3.squeeze.weight', 4) -> ('features.3.squeeze.kernel', HWIO permutation)."""
  *path, leaf = key.split('.')
  if leaf == 'weight':
    leaf, perm = {4: ('kernel', (2, 3, 1, 0)), 2: ('kernel', (1, 0)), 1: ('scale', None)
                  }.get(ndim, (None, None))
    if leaf is None:
      raise WeightsError(f'checkpoint key {key} has {ndim} dims; no conversion rule')
    return '.'.join(path + [leaf]), perm
  return '.'.join(path + [_RENAMES.get(leaf, leaf)]), None


def _to_float32(key: str, value) -> np.ndarray:
  """A float tensor or array of any precision -> a float32 numpy array."""
  if hasattr(value, 'detach'):  # a torch tensor; torch casts, as numpy has no bfloat16
    if not value.is_floating_point():
      raise WeightsError(f'checkpoint key {key} has dtype '
                         f'{str(value.dtype).removeprefix("torch.")}; a float parameter '
                         'is expected (float16, bfloat16, float32 or float64)')
    return value.detach().cpu().float().numpy()
  array = np.asarray(value)
  if not jnp.issubdtype(array.dtype, jnp.floating):
    raise WeightsError(f'checkpoint key {key} has dtype {array.dtype}; a float parameter '
                       'is expected (float16, bfloat16, float32 or float64)')
  with np.errstate(over='ignore'):  # float64 beyond float32's range: inf, reported as such
    return array.astype(np.float32)


def convert_state_dict(name: str, state_dict, class_names=None,
                       allow_nonfinite: bool = False) -> dict:
  """A torch state_dict (tensors or arrays) -> nested jaxviz params (numpy, float32).

  Args:
    name: the jaxviz architecture ('squeezenet1_1', 'vgg16', ...).
    state_dict: mapping of torch key -> tensor, as torchvision's model.state_dict().
      Float tensors of any precision are cast to float32 (round to nearest).
    class_names: one per output class; default ImageNet's 1000.
    allow_nonfinite: convert NaN and inf (after the cast: float64 values beyond
      float32's range become inf) with a one-line checkpoint.NonFiniteWarning instead of
      refusing them.

  Raises:
    WeightsError naming the first key that is missing, unexpected, mis-shaped or not a
    float, or every key holding NaN or inf (unless allow_nonfinite).
  """
  flat, nonfinite = {}, {}
  for key, value in state_dict.items():
    if key.rsplit('.', 1)[-1] in _IGNORED:
      continue
    array = _to_float32(key, value)
    nonfinite.update(checkpoint.count_nonfinite({key: array}))
    jax_key, perm = torch_key_to_jax(key, array.ndim)
    flat[jax_key] = np.ascontiguousarray(array.transpose(perm) if perm else array)
  num_classes = len(class_names) if class_names is not None else 1000
  abstract = models.functionalize(models.build_abstract(name, num_classes))[2]
  params = jaxviz.loading.fill_params(abstract, flat, source=f'{name} checkpoint',
                                      nonfinite='ignore')  # checked here, by torch key
  if nonfinite:
    what = f'{name} checkpoint has NaN or inf in {checkpoint.describe_nonfinite(nonfinite)}'
    if not allow_nonfinite:
      raise WeightsError(f'{what}; a model with it outputs NaN (pass --allow_nonfinite, '
                         'or allow_nonfinite=True, to convert it anyway)')
    warnings.warn(f'{what}; converted anyway (allow_nonfinite)', checkpoint.NonFiniteWarning,
                  stacklevel=2)
  return checkpoint.unflatten({k: np.asarray(v) for k, v in checkpoint.flatten(params).items()})


def read_checkpoint(path: str) -> dict:
  """torch.load(weights_only=True) with one-line errors; unwraps {'state_dict': ...}."""
  import torch  # conversion-only dependency
  if not os.path.isfile(path):
    raise WeightsError(f'checkpoint not found: {path}')
  try:
    obj = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # torch raises many types for damaged or unsafe files
    first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise WeightsError(f'cannot read checkpoint {path}: {first_line[:300]} (a torch '
                       'state_dict saved with torch.save(model.state_dict()) is expected; '
                       'it is loaded with weights_only=True)') from None
  for wrapper in ('state_dict', 'model'):
    if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
      obj = obj[wrapper]
  if not isinstance(obj, dict) or not all(hasattr(v, 'shape') for v in obj.values()):
    raise WeightsError(f'{path} does not hold a state_dict of tensors')
  if obj and all(k.startswith('module.') for k in obj):  # saved from DataParallel
    obj = {k[len('module.'):]: v for k, v in obj.items()}
  return obj


def official_weights(name: str, version: str | None = None):
  """torchvision's ImageNet weights for an architecture (an enum member; no network).

  Args:
    name: the architecture ('resnet50').
    version: the member's name ('IMAGENET1K_V1', 'IMAGENET1K_V2'); None: torchvision's
      DEFAULT (for resnet50, IMAGENET1K_V2).
  """
  import torchvision
  try:
    weights = torchvision.models.get_model_weights(name)
  except (ValueError, KeyError):
    raise WeightsError(f'torchvision has no pretrained weights for {name!r}') from None
  if version is None:
    return weights.DEFAULT
  try:
    return weights[version]
  except KeyError:
    raise WeightsError(f'torchvision has no {version!r} weights for {name}; it has '
                       f'{", ".join(w.name for w in weights)}') from None


def _hash_prefix(url: str) -> str | None:
  """The sha256 prefix torchvision puts in a checkpoint's file name ('b8a52dc0')."""
  import torch
  match = torch.hub.HASH_REGEX.search(os.path.basename(url))
  return match.group(1) if match else None


def fetch_official(name: str, version: str | None = None) -> str:
  """Downloads torchvision's ImageNet checkpoint (`official_weights(name, version)`)
  through torch.hub, hash-checked and cached (in $TORCH_HOME), and returns the local
  path. Needs the network once."""
  import torch
  url = official_weights(name, version).url
  path = os.path.join(torch.hub.get_dir(), 'checkpoints', os.path.basename(url))
  if os.path.isfile(path):
    return path
  os.makedirs(os.path.dirname(path), exist_ok=True)
  try:  # torch.hub writes to a temporary file and checks the sha256 prefix before moving
    torch.hub.download_url_to_file(url, path, hash_prefix=_hash_prefix(url), progress=True)
  except (urllib.error.URLError, OSError, TimeoutError) as e:
    reason = getattr(e, 'reason', e)
    raise WeightsError(
        f'cannot download {url} ({reason}): the network is unreachable; fetch that file '
        f'elsewhere and run python -m weights_convert --model={name} '
        '--checkpoint=FILE.pth') from None
  except RuntimeError as e:  # hash mismatch
    raise WeightsError(f'download of {url} failed its hash check: {e}') from None
  return path


def convert(name: str, output: str, checkpoint_path: str | None = None,
            class_names=None, allow_nonfinite: bool = False,
            torchvision_weights: str | None = None) -> str:
  """Converts a checkpoint (or, with none, torchvision's official one) into `output`.

  allow_nonfinite converts a checkpoint holding NaN or inf with a warning (see
  `convert_state_dict`) and records it in the metadata, so that load_model loads the file
  with a warning instead of refusing it.

  torchvision_weights names torchvision's weights ('IMAGENET1K_V1'; default its DEFAULT):
  without a checkpoint_path, those are downloaded; with one, the file must be those
  weights (the sha256 prefix in torchvision's file name is checked). Either way their
  class names and evaluation crop are recorded.

  Returns:
    The output path. The file is written atomically and carries the model name, the
    source file and its sha256, class names and the normalisation constants.
  """
  models.architecture(name)
  official = None
  if checkpoint_path is None or torchvision_weights is not None:
    official = official_weights(name, torchvision_weights)
  if checkpoint_path is None:
    checkpoint_path = fetch_official(name, torchvision_weights)
  elif not os.path.isfile(checkpoint_path):
    raise WeightsError(f'checkpoint not found: {checkpoint_path}')
  sha256 = checkpoint.sha256_file(checkpoint_path)
  if official is not None:
    prefix = _hash_prefix(official.url)
    if prefix and not sha256.startswith(prefix):
      raise WeightsError(f'{checkpoint_path} is not torchvision\'s {official} (sha256 '
                         f'{sha256[:12]}..., {os.path.basename(official.url)} expects '
                         f'{prefix}...)')
    if class_names is None:
      class_names = list(official.meta['categories'])
  params = convert_state_dict(name, read_checkpoint(checkpoint_path), class_names,
                              allow_nonfinite=allow_nonfinite)
  metadata = {
      'model': name,
      'source': os.path.basename(checkpoint_path),
      'source_sha256': sha256,
      'class_names': list(class_names or jaxviz.imagenet_class_names()),
      'mean': list(jaxviz.IMAGENET_MEAN),
      'std': list(jaxviz.IMAGENET_STD),
      'input_size': 224,
      'allow_nonfinite': bool(allow_nonfinite),
  }
  if official is not None:
    # torchvision's evaluation preprocessing: resize the shorter side, centre-crop.
    transforms = getattr(official.transforms, 'keywords', {})
    metadata.update(torchvision_weights=str(official),
                    input_size=int(transforms.get('crop_size', 224)),
                    resize_size=int(transforms.get('resize_size', 256)))
  checkpoint.save(output, params, metadata)
  return output
