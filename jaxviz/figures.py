"""Figures in the course's layouts: matplotlib (Agg), numpy arrays in, PNG files out.

The last stage of the pipeline: these functions take RGB images already mapped to [0, 1]
(`model.deprocess`, or uint8 / 255) and method outputs as numpy arrays, and know nothing
of models or JAX. Each returns a `matplotlib.figure.Figure`; `save` writes it atomically.
"""

import io
import textwrap
from collections.abc import Sequence

import matplotlib

matplotlib.use('Agg')  # headless: scripts run on servers and in tests

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from jaxviz import checkpoint  # noqa: E402
from jaxviz.errors import InputError  # noqa: E402

# The magnified difference is drawn as clip(0.5 + MAGNIFY * d): mid-grey is "unchanged".
MAGNIFY = 10.0
DPI = 100


def _panel(images) -> float:
  """Inches per image panel: about one screen pixel per image pixel at DPI, within
  [1.6, 2.4] so titles fit. Upsampling a 112-pixel image only makes the PNG bigger."""
  return float(np.clip(np.shape(images)[1] / DPI, 1.6, 2.4))


def _rgb_batch(images, name: str) -> np.ndarray:
  images = np.asarray(images, np.float32)
  if images.ndim == 3:
    images = images[None]
  if images.ndim != 4 or images.shape[-1] != 3:
    raise InputError(f'{name} has shape {images.shape}: expected (N, H, W, 3) RGB in [0, 1]')
  return np.clip(images, 0.0, 1.0)


def _check_titles(titles: Sequence[str], n: int, name: str = 'titles') -> list[str]:
  titles = list(titles)
  if len(titles) != n:
    raise InputError(f'{len(titles)} {name} for {n} images')
  return titles


def _per_image(value, n: int, name: str) -> list:
  """A scalar (or string) repeated n times, or a sequence that must have n entries."""
  if isinstance(value, str) or np.ndim(value) == 0:
    return [value] * n
  return _check_titles(list(value), n, name)


def _plural(n: int, word: str) -> str:
  return f'{n} {word}' + ('' if n == 1 else 's')


def _suptitle(fig, text: str, fontsize: int = 11):
  """A figure title wrapped to the figure's width (narrow figures would clip it)."""
  if text:
    chars = max(20, int(fig.get_figwidth() * 72 / (0.6 * fontsize)))
    fig.suptitle(textwrap.fill(text, chars), fontsize=fontsize)


def _image_axis(ax, image, title: str | None = None, **imshow_kwargs):
  ax.imshow(image, **imshow_kwargs)
  ax.set_axis_off()
  if title:
    ax.set_title(title, fontsize=9)


def saliency_figure(images_rgb01, maps, titles: Sequence[str], suptitle: str = '',
                    cmap: str = 'hot') -> plt.Figure:
  """The course's saliency layout: images in the top row, their maps below.

  Args:
    images_rgb01: (N, H, W, 3) RGB in [0, 1].
    maps: (N, H, W) non-negative saliency maps (each drawn on its own colour scale, as
      `plt.imshow` does in the course).
    titles: one per image (the class whose score was differentiated).
    suptitle: figure title.
    cmap: colormap of the maps ('hot' as the course, or 'gray').

  Returns:
    A Figure of 2 rows x N columns.
  """
  images = _rgb_batch(images_rgb01, 'images_rgb01')
  maps = np.asarray(maps, np.float32)
  n = len(images)
  if maps.shape != images.shape[:3]:
    raise InputError(f'maps has shape {maps.shape}, expected {images.shape[:3]}')
  titles = _check_titles(titles, n)
  panel = _panel(images)
  fig, axes = plt.subplots(2, n, figsize=(panel * n, 2 * panel + 0.6), squeeze=False,
                           layout='constrained')
  for i in range(n):
    _image_axis(axes[0, i], images[i], titles[i])
    # An all-zero map is a real outcome (SqueezeNet's final ReLU zeroes a class score
    # that is negative everywhere), not a plotting bug: say so.
    _image_axis(axes[1, i], maps[i], 'all zero' if not maps[i].any() else None, cmap=cmap)
  _suptitle(fig, suptitle)
  return fig


def fooling_figure(original_rgb01, fooled_rgb01, original_class, fooled_class, iterations,
                   l2, linf, suptitle: str = '') -> plt.Figure:
  """Original, fooled image, difference, and difference magnified 10x (the course's four
  panels), one row per image.

  The difference d = fooled - original is taken in RGB [0, 1]. The third panel rescales it
  to [0, 1] by (d - min) / (max - min), as the course's `deprocess(should_rescale=True)`
  does; the fourth shows clip(0.5 + 10 d, 0, 1), so grey means unchanged and the
  magnified perturbation keeps its sign and its scale across images.

  Args:
    original_rgb01, fooled_rgb01: (N, H, W, 3) or (H, W, 3) RGB in [0, 1].
    original_class, fooled_class: the predicted class name of each (str or list of N).
    iterations: steps taken (int or N ints).
    l2, linf: perturbation norms (float or N floats; the methods report them in the
      normalised space), shown above the difference.
    suptitle: figure title.

  Returns:
    A Figure of N rows x 4 columns.
  """
  original = _rgb_batch(original_rgb01, 'original_rgb01')
  fooled = _rgb_batch(fooled_rgb01, 'fooled_rgb01')
  if original.shape != fooled.shape:
    raise InputError(f'original {original.shape} and fooled {fooled.shape} differ in shape')
  n = len(original)
  original_class = _per_image(original_class, n, 'original classes')
  fooled_class = _per_image(fooled_class, n, 'fooled classes')
  iterations = _per_image(iterations, n, 'iteration counts')
  l2, linf = _per_image(l2, n, 'l2 norms'), _per_image(linf, n, 'linf norms')
  panel = max(_panel(original), 2.0)  # four two-line titles side by side need the room
  height = (panel + 0.4) * n + (0.4 if suptitle else 0)  # 0.4 in: two title lines
  fig, axes = plt.subplots(n, 4, figsize=(4 * panel, height), squeeze=False,
                           layout='constrained')
  for i in range(n):
    d = fooled[i] - original[i]
    span = float(d.max() - d.min())
    rescaled = (d - d.min()) / span if span > 0 else np.full_like(d, 0.5)
    magnified = np.clip(0.5 + MAGNIFY * d, 0.0, 1.0)
    _image_axis(axes[i, 0], original[i], f'original\n{original_class[i]}')
    _image_axis(axes[i, 1], fooled[i],
                f'after {_plural(int(iterations[i]), "iteration")}\n{fooled_class[i]}')
    _image_axis(axes[i, 2], rescaled, f'difference (min-max)\nL2 {float(l2[i]):.3g}, '
                f'Linf {float(linf[i]):.3g}')
    _image_axis(axes[i, 3], magnified, f'difference x{MAGNIFY:g}\n'
                f'(0.5 + {MAGNIFY:g} d, clipped)')
  _suptitle(fig, suptitle)
  return fig


def class_visualization_figure(images_rgb01, titles: Sequence[str], suptitle: str = '',
                               columns: int = 4) -> plt.Figure:
  """A grid of generated images, each titled (e.g. "tarantula\\n200 it., p=0.93").

  Args:
    images_rgb01: (N, H, W, 3) RGB in [0, 1].
    titles: one per image.
    suptitle: figure title.
    columns: images per row at most.

  Returns:
    A Figure of ceil(N / columns) rows.
  """
  images = _rgb_batch(images_rgb01, 'images_rgb01')
  n = len(images)
  titles = _check_titles(titles, n)
  cols = max(1, min(columns, n))
  rows = -(-n // cols)
  panel = _panel(images) if n > 2 else 2.4  # one or two images: room for the title
  height = (panel + 0.4) * rows + (0.6 if suptitle else 0)  # 0.4 in: two title lines
  width = max(panel * cols + 0.2, 4.0)
  fig, axes = plt.subplots(rows, cols, figsize=(width, height), squeeze=False,
                           layout='constrained')
  for i, ax in enumerate(axes.flat):
    if i < n:
      _image_axis(ax, images[i], titles[i])
    else:
      ax.set_axis_off()
  _suptitle(fig, suptitle)
  return fig


def probability_figure(traces, labels: Sequence[str], suptitle: str = '',
                       log: bool | None = None) -> plt.Figure:
  """Softmax probability of each target against the step.

  Args:
    traces: (N, T) probabilities.
    labels: one legend entry per row.
    suptitle: figure title.
    log: log-scale y axis; None picks it when every probability stays below 0.1 (e.g.
      random weights, where a linear axis would show flat lines at zero).

  Returns:
    A Figure.
  """
  traces = np.asarray(traces, np.float64)
  if traces.ndim == 1:
    traces = traces[None]
  if traces.ndim != 2:
    raise InputError(f'traces has shape {traces.shape}, expected (N, T)')
  labels = _check_titles(labels, len(traces), 'labels')
  if log is None:
    log = bool(traces.size) and float(np.nanmax(traces)) < 0.1
  fig, ax = plt.subplots(figsize=(6, 3.6), layout='constrained')
  steps = np.arange(traces.shape[1])
  for trace, label in zip(traces, labels):
    ax.plot(steps, trace, label=label, linewidth=1.2)
  ax.set_xlabel('step')
  ax.set_ylabel('target probability')
  if log:
    ax.set_yscale('log')
  else:
    ax.set_ylim(0, 1)
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize=8)
  _suptitle(fig, suptitle, fontsize=10)
  return fig


def save(fig: plt.Figure, path: str, dpi: int = DPI, max_bytes: int | None = 300_000) -> str:
  """Writes `fig` as a PNG atomically (never a half-written file) and closes it.

  Photos and saliency maps compress badly: a full-colour PNG larger than `max_bytes` is
  re-encoded with an adaptive 256-colour palette (median cut, Floyd-Steinberg dither),
  about 3x smaller and hard to tell apart on screen. Exact values belong in the run's
  results.npz, not in the picture. max_bytes=None keeps full colour.
  """
  try:
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png', dpi=dpi)
  finally:
    plt.close(fig)
  png = buffer.getvalue()
  if max_bytes is not None and len(png) > max_bytes:
    with Image.open(io.BytesIO(png)) as image:
      palette = image.convert('RGB').quantize(256, method=Image.Quantize.MEDIANCUT)
    buffer = io.BytesIO()
    palette.save(buffer, format='png', optimize=True)
    png = buffer.getvalue()
  checkpoint.atomic_write(path, lambda f: f.write(png))
  return path
