"""Reading images: files, folders, .npz, samples; and one-line errors for bad input."""

import numpy as np
import pytest
from PIL import Image

import jaxviz
from jaxviz import data
from jaxviz.errors import InputError


def test_samples_are_rgb_and_labelled_with_imagenet_classes():
  samples = data.sample_images(96)
  assert samples.images.shape == (len(samples.names), 96, 96, 3)
  assert samples.images.dtype == np.uint8 and len(samples.names) >= 5
  known = set(jaxviz.imagenet_class_names())
  assert all(label in known for label in samples.labels)


def test_grayscale_and_rgba_files_become_rgb(tmp_path):
  gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
  Image.fromarray(gray, 'L').save(tmp_path / 'gray.png')
  rgba = np.zeros((8, 8, 4), np.uint8)
  rgba[..., 0] = 200
  rgba[..., 3] = 0  # fully transparent: composited onto white
  rgba[:4, :, 3] = 255  # top half opaque red
  Image.fromarray(rgba, 'RGBA').save(tmp_path / 'rgba.png')
  g = data.load_image(str(tmp_path / 'gray.png'), size=None)
  assert g.shape == (8, 8, 3) and np.array_equal(g[..., 0], gray) and np.array_equal(
      g[..., 0], g[..., 2])
  c = data.load_image(str(tmp_path / 'rgba.png'), size=None)
  assert c.shape == (8, 8, 3)
  assert tuple(c[0, 0]) == (200, 0, 0) and tuple(c[7, 0]) == (255, 255, 255)


def test_resize_center_crop_keeps_the_middle(tmp_path):
  img = np.zeros((40, 80, 3), np.uint8)
  img[:, 30:50] = 255  # a white band in the middle of a wide image
  Image.fromarray(img).save(tmp_path / 'wide.png')
  out = data.load_image(str(tmp_path / 'wide.png'), size=20)
  assert out.shape == (20, 20, 3)
  assert out[:, 8:12].min() > 200 and out[:, :3].max() < 50


def test_folder_reading_and_errors(tmp_path):
  with pytest.raises(InputError, match='no image files'):
    data.load_folder(str(tmp_path))
  Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(tmp_path / 'b.png')
  Image.fromarray(np.zeros((7, 9, 3), np.uint8)).save(tmp_path / 'a.jpg')
  (tmp_path / 'notes.txt').write_text('ignored')
  images = data.load_folder(str(tmp_path), size=16)
  assert images.names == ('a', 'b') and images.images.shape == (2, 16, 16, 3)
  (tmp_path / 'c.png').write_bytes(b'not a png at all')
  with pytest.raises(InputError, match='cannot read image .*c.png'):
    data.load_folder(str(tmp_path))
  with pytest.raises(InputError, match='folder not found'):
    data.load_folder(str(tmp_path / 'nope'))


def test_npz(tmp_path):
  rgb = np.random.default_rng(0).random((3, 8, 8, 3))
  np.savez(tmp_path / 'ok.npz', images=rgb, labels=np.array(['tabby', 'goldfish', '1']))
  s = data.load_npz(str(tmp_path / 'ok.npz'))
  assert s.images.dtype == np.uint8 and s.labels == ('tabby', 'goldfish', '1')
  np.testing.assert_array_equal(s.images, np.round(rgb * 255).astype(np.uint8))
  np.savez(tmp_path / 'gray.npz', images=rgb[..., 0])
  with pytest.raises(InputError, match=r'expected \(N, H, W, 3\)'):
    data.load_npz(str(tmp_path / 'gray.npz'))
  np.savez(tmp_path / 'bad.npz', images=rgb, labels=np.array(['a']))
  with pytest.raises(InputError, match='1 labels for 3 images'):
    data.load_npz(str(tmp_path / 'bad.npz'))
  np.savez(tmp_path / 'range.npz', images=rgb * 255)
  with pytest.raises(InputError, match=r'uint8 or float in \[0, 1\]'):
    data.load_npz(str(tmp_path / 'range.npz'))


def test_tfds_imagenet_with_mock_data():
  tfds = pytest.importorskip('tensorflow_datasets')
  with tfds.testing.mock_data(num_examples=5, policy=tfds.testing.MockPolicy.USE_CODE):
    images = data.load_images('tfds:imagenet2012:validation:3', size=32)
    direct = tfds.data_source('imagenet2012', split='validation')
    expected_labels = tuple(jaxviz.imagenet_class_names()[int(direct[i]['label'])]
                            for i in range(3))
  assert images.images.shape == (3, 32, 32, 3) and images.images.dtype == np.uint8
  assert images.labels == expected_labels  # tfds' ImageNet order is torchvision's


def test_tfds_missing_dataset_is_one_line(tmp_path):
  pytest.importorskip('tensorflow_datasets')
  with pytest.raises(InputError, match='not prepared') as e:
    data.load_tfds('imagenet2012', data_dir=str(tmp_path))  # nothing prepared there
  assert '\n' not in str(e.value)
  with pytest.raises(InputError, match='expected tfds:NAME'):
    data.load_images('tfds:')
