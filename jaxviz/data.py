"""Images in: files, folders, .npz arrays, the bundled sample photos, and tfds datasets.

Everything returns uint8 RGB (N, H, W, 3). Image files of any mode are converted on load:
grayscale is repeated over 3 channels, RGBA and other transparent images are composited
onto white, 16-bit images are scaled to 8 bits (v / 257), CMYK goes through Pillow's
conversion, and a float TIFF must hold values in [0, 1]; so any JPEG/PNG/TIFF works. An
.npz holds arrays, which are not converted: uint8, or float in [0, 1] (never NaN or inf),
(N, H, W, 3) RGB. Arrays passed directly to `jaxviz.preprocess` must already be RGB (it
raises a one-line error otherwise).
"""

import dataclasses
import os
from importlib import util as importlib_util

import numpy as np
from PIL import Image, UnidentifiedImageError

from jaxviz.errors import InputError

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp', '.tif', '.tiff')


@dataclasses.dataclass(frozen=True)
class ImageSet:
  """images: (N, H, W, 3) uint8; names: one per image; labels: class names or None."""
  images: np.ndarray
  names: tuple[str, ...]
  labels: tuple[str, ...] | None = None


def to_rgb(image: Image.Image) -> Image.Image:
  """Grayscale -> repeated channels; alpha -> composited onto white; palette, CMYK, YCbCr
  -> RGB; 16-bit (and 32-bit integer) -> 8-bit by v / 257; float -> from [0, 1]."""
  if image.mode.startswith('I'):  # 'I;16', 'I;16B', ...: 16-bit; 'I': 32-bit integers
    values = np.asarray(image).astype(np.float64)
    if values.size and (values.min() < 0 or values.max() > 65535):
      raise InputError(f'{image.mode} image with values in [{values.min():g}, '
                       f'{values.max():g}]: expected 16-bit values, 0 to 65535')
    return Image.fromarray(np.round(values / 257).astype(np.uint8), 'L').convert('RGB')
  if image.mode == 'F':
    values = np.asarray(image).astype(np.float64)
    if values.size and not (np.isfinite(values).all() and values.min() >= 0
                            and values.max() <= 1):
      raise InputError(f'float image with values in [{np.nanmin(values):g}, '
                       f'{np.nanmax(values):g}]: expected finite values in [0, 1]')
    return Image.fromarray(np.round(values * 255).astype(np.uint8), 'L').convert('RGB')
  if image.mode in ('RGBA', 'LA', 'PA', 'RGBa', 'La') or (
      image.mode == 'P' and 'transparency' in image.info):
    rgba = image.convert('RGBA')
    background = Image.new('RGBA', rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert('RGB')
  return image.convert('RGB')


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
  """Resizes the shorter side to `size` (bilinear) and crops the centre square."""
  w, h = image.size
  scale = size / min(w, h)
  nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
  image = image.resize((nw, nh), Image.BILINEAR)
  left, top = (nw - size) // 2, (nh - size) // 2
  return image.crop((left, top, left + size, top + size))


def load_image(path: str, size: int | None = 224) -> np.ndarray:
  """Reads one image file as uint8 RGB (H, W, 3), square `size` unless size is None."""
  if not os.path.isfile(path):
    raise InputError(f'image not found: {path}')
  try:
    with Image.open(path) as image:
      image = to_rgb(image)
      if size is not None:
        image = resize_center_crop(image, size)
      return np.asarray(image, np.uint8)
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
          Image.DecompressionBombError) as e:  # ValueError: a mode to_rgb cannot convert
    raise InputError(f'cannot read image {path}: {e}') from None


def load_folder(folder: str, size: int = 224) -> ImageSet:
  """Every JPEG/PNG/... file in `folder` (sorted by name), resized and centre-cropped."""
  if not os.path.isdir(folder):
    raise InputError(f'image folder not found: {folder}')
  files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
  if not files:
    raise InputError(f'no image files ({", ".join(IMAGE_EXTENSIONS)}) in {folder}')
  images = np.stack([load_image(os.path.join(folder, f), size) for f in files])
  return ImageSet(images, tuple(os.path.splitext(f)[0] for f in files))


def npz_images(images: np.ndarray, path: str) -> np.ndarray:
  """(N, H, W, 3) images read from `path` as uint8: uint8 as they are, float from [0, 1].

  Raises a one-line InputError for an empty batch, another dtype, and float images that
  hold NaN or inf or values outside [0, 1] (0-255 floats are not guessed at: an image
  whose values all lie in [0, 1] would be ambiguous), naming the images.
  """
  if images.ndim != 4 or images.shape[-1] != 3:
    raise InputError(f'{path}: images has shape {images.shape}, expected (N, H, W, 3) RGB')
  if 0 in images.shape:
    raise InputError(f'{path}: images has shape {images.shape}: no images')
  if images.dtype == np.uint8:
    return images
  if not np.issubdtype(images.dtype, np.floating):
    raise InputError(f'{path}: images must be uint8 or float in [0, 1], got {images.dtype}')
  flat = images.reshape(len(images), -1)
  bad = np.flatnonzero(~np.isfinite(flat).all(axis=1))
  if bad.size:
    raise InputError(f'{path}: image(s) {bad.tolist()} hold NaN or inf')
  bad = np.flatnonzero((flat.min(axis=1) < 0) | (flat.max(axis=1) > 1))
  if bad.size:
    raise InputError(f'{path}: image(s) {bad.tolist()} have values outside [0, 1] (in '
                     f'[{flat.min():g}, {flat.max():g}]): images must be uint8 or float in '
                     '[0, 1] (divide 0-255 floats by 255)')
  return np.round(images * 255).astype(np.uint8)


def load_npz(path: str) -> ImageSet:
  """An .npz with `images` (N, H, W, 3) RGB, uint8 or float in [0, 1] (`npz_images`),
  optional `labels` (class names or indices) and `names`."""
  if not os.path.isfile(path):
    raise InputError(f'file not found: {path}')
  try:
    with np.load(path, allow_pickle=False) as npz:
      arrays = {k: npz[k] for k in npz.files}
  except (ValueError, OSError, EOFError) as e:
    raise InputError(f'cannot read {path}: {e}') from None
  if 'images' not in arrays:
    raise InputError(f'{path} has no `images` array (it has {sorted(arrays)})')
  images = npz_images(arrays['images'], path)
  n = len(images)
  labels = tuple(str(x) for x in arrays['labels']) if 'labels' in arrays else None
  names = (tuple(str(x) for x in arrays['names']) if 'names' in arrays
           else tuple(f'image{i}' for i in range(n)))
  for what, values in (('labels', labels), ('names', names)):
    if values is not None and len(values) != n:
      raise InputError(f'{path}: {len(values)} {what} for {n} images')
  return ImageSet(images, names, labels)


def load_tfds(name: str, split: str = 'validation', num_images: int = 8, size: int = 224,
              data_dir: str | None = None, start: int = 0) -> ImageSet:
  """Images from a tensorflow-datasets dataset already prepared on disk.

  Uses tfds' random-access data sources, so TensorFlow is not needed. ImageNet-family
  datasets (1000 classes in torchvision's order: imagenet2012, imagenet_v2, ...) get
  torchvision's class names as labels; others get the dataset's own label names.

  Args:
    name: tfds dataset name, e.g. 'imagenet2012' (manual download) or 'imagenet_v2'.
    split: e.g. 'validation'.
    num_images: how many consecutive examples, from `start`.
    size: square output size (shorter side resized, centre crop).
    data_dir: tfds data folder (default: tfds' own, ~/tensorflow_datasets).
  """
  try:
    import tensorflow_datasets as tfds
    builder = tfds.builder(name, data_dir=data_dir)
    # download=False: never download or prepare implicitly.
    source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    names = builder.info.features['label'].names
  except Exception as e:  # tfds raises many types for a dataset that is not there
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise InputError(f'tfds dataset {name}:{split} is not prepared ({reason[:160]}); '
                     f'prepare it first (tfds build {name} --file_format=array_record, '
                     'readable without TensorFlow; ImageNet needs a manual '
                     'download) or pass a folder of images') from None
  stop = min(start + num_images, len(source))
  if stop <= start:
    raise InputError(f'tfds {name}:{split} has {len(source)} examples; none from {start}')
  if len(names) == 1000:  # the ImageNet label order, as torchvision's
    from jaxviz.loading import imagenet_class_names
    names = imagenet_class_names()
  images, labels = [], []
  for i in range(start, stop):
    example = source[i]
    image = Image.fromarray(np.asarray(example['image']).squeeze())
    images.append(np.asarray(resize_center_crop(to_rgb(image), size), np.uint8))
    labels.append(names[int(example['label'])])
  return ImageSet(np.stack(images), tuple(f'{name}_{i}' for i in range(start, stop)),
                  tuple(labels))


def load_images(source: str, size: int = 224) -> ImageSet:
  """A folder, an .npz, one image file, 'samples' (the bundled photos),
  'tfds:NAME[:SPLIT[:COUNT]]' (e.g. 'tfds:imagenet2012:validation:16'), or
  'shapes[:COUNT[:SEED]]': generated shapes images (jaxviz.shapes, 64x64 whatever `size`;
  default: 6 images of seed 7, of 6 different classes)."""
  if source == 'samples':
    return sample_images(size)
  if source == 'shapes' or source.startswith('shapes:'):
    parts = source.split(':')[1:]
    if len(parts) > 2 or not all(p.isdigit() for p in parts):
      raise InputError(f'expected shapes[:COUNT[:SEED]], got {source!r}')
    count = int(parts[0]) if parts else 6
    from jaxviz import shapes
    generated = shapes.generate(count, int(parts[1]) if len(parts) > 1 else 7)
    return ImageSet(generated.images, tuple(f'shape{i}' for i in range(count)),
                    tuple(shapes.CLASS_NAMES[k] for k in generated.labels))
  if source.startswith('tfds:'):
    parts = source.split(':')[1:]
    if not parts[0] or len(parts) > 3 or (len(parts) == 3 and not parts[2].isdigit()):
      raise InputError(f'expected tfds:NAME[:SPLIT[:COUNT]], got {source!r}')
    return load_tfds(parts[0], parts[1] if len(parts) > 1 else 'validation',
                     int(parts[2]) if len(parts) > 2 else 8, size)
  if source.endswith('.npz'):
    return load_npz(source)
  if os.path.isdir(source):
    return load_folder(source, size)
  name = os.path.splitext(os.path.basename(source))[0]
  return ImageSet(load_image(source, size)[None], (name,))


# Photos that installed packages carry, so the demos run offline. Each with the ImageNet
# class we take as its label.
_SAMPLES = (
    ('matplotlib', 'mpl-data/sample_data/grace_hopper.jpg', 'grace_hopper', 'military uniform'),
    ('skimage', 'data/chelsea.png', 'chelsea', 'tabby'),
    ('skimage', 'data/coffee.png', 'coffee', 'espresso'),
    ('skimage', 'data/astronaut.png', 'astronaut', 'suit'),
    ('skimage', 'data/rocket.jpg', 'rocket', 'missile'),
    ('skimage', 'data/motorcycle_left.png', 'motorcycle', 'moped'),
)


def sample_images(size: int = 224) -> ImageSet:
  """The bundled sample photos (matplotlib's Grace Hopper, scikit-image's cat, coffee,
  astronaut, rocket and motorcycle), with ImageNet labels."""
  images, names, labels = [], [], []
  for package, relpath, name, label in _SAMPLES:
    spec = importlib_util.find_spec(package)
    if spec is None or spec.origin is None:
      continue
    path = os.path.join(os.path.dirname(spec.origin), relpath)
    if os.path.isfile(path):
      images.append(load_image(path, size))
      names.append(name)
      labels.append(label)
  if not images:
    raise InputError('no sample photos found: pip install matplotlib scikit-image')
  return ImageSet(np.stack(images), tuple(names), tuple(labels))
