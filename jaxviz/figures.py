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
  if 0 in images.shape:
    raise InputError(f'{name} has shape {images.shape}: nothing to draw')
  return np.clip(_finite(images, name), 0.0, 1.0)


def _finite(values: np.ndarray, name: str) -> np.ndarray:
  """`values` (one entry per image along axis 0) if none holds NaN or inf: a figure
  never draws a NaN as a blank panel."""
  bad = np.flatnonzero(~np.isfinite(values.reshape(len(values), -1)).all(axis=1))
  if bad.size:
    raise InputError(f'{name} of image(s) {bad.tolist()} contain NaN or inf')
  return values


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
  _finite(maps, 'maps')
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


def _curves(values, name: str) -> np.ndarray:
  values = np.asarray(values, np.float64)
  if values.ndim == 1:
    values = values[None]
  if values.ndim != 2:
    raise InputError(f'{name} has shape {values.shape}, expected (N, T) or (T,)')
  return values


def _band(ax, x, values, label: str):
  """Mean line and a +-1 std band over the rows of `values` (no band for one row)."""
  mean = values.mean(axis=0)
  (line,) = ax.plot(x, mean, label=label, linewidth=1.4, marker='.' if len(x) < 40 else None)
  if len(values) > 1:
    std = values.std(axis=0)
    ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2,
                    linewidth=0)


def sanity_check_figure(stages: Sequence[str], similarities, maps=None,
                        suptitle: str = '', cmap: str = 'gray') -> plt.Figure:
  """Adebayo et al.'s cascading-randomisation plot: similarity to the original maps
  against the layers randomised so far, one line per metric (mean +- std over images),
  with an optional row of example maps per stage below.

  Args:
    stages: S stage names, 'original' first, then the layers top-down (a
      `metrics.SanityCheck`'s `stages`).
    similarities: {metric name: (S, N) or (S,) values}, e.g. {'Spearman (abs)':
      r.spearman_abs, 'SSIM': r.ssim}.
    maps: optional (S, H, W) or (S, R, H, W) maps: R example rows (e.g. r.maps[:, :2]),
      drawn as |map|, each on its own scale.
    suptitle: figure title.
    cmap: colormap of the maps.

  Returns:
    A Figure: the plot, then R rows of S maps.

  References:
    Adebayo et al., Sanity Checks for Saliency Maps, NeurIPS 2018.
  """
  stages = list(stages)
  s = len(stages)
  if not similarities:
    raise InputError('similarities is empty: pass {metric name: (S, N) values}')
  curves = {}
  for name, values in similarities.items():
    values = np.asarray(values, np.float64)
    values = values[:, None] if values.ndim == 1 else values
    if values.ndim != 2 or len(values) != s:
      raise InputError(f'similarities[{name!r}] has shape {values.shape}, expected '
                       f'({s}, N) for {s} stages')
    curves[name] = values.T  # rows are images for _band
  rows = 0
  if maps is not None:
    maps = np.abs(np.asarray(maps, np.float32))
    if maps.ndim == 3:
      maps = maps[:, None]
    if maps.ndim != 4 or len(maps) != s:
      raise InputError(f'maps has shape {maps.shape}, expected ({s}, H, W) or ({s}, R, H, W)')
    rows = maps.shape[1]
  width = max(6.0, 0.55 * s + 1.5)
  cell = width / s
  # Maps on top, the plot below: the columns of maps line up with the plot's stages and
  # the long layer names sit at the bottom edge, out of the way.
  fig = plt.figure(figsize=(width, 3.6 + rows * cell + (0.3 if suptitle else 0)),
                   layout='constrained')
  grid = fig.add_gridspec(rows + 1, s, height_ratios=[cell] * rows + [3.6 * 0.75])
  for r in range(rows):
    for j in range(s):
      _image_axis(fig.add_subplot(grid[r, j]), maps[j, r],
                  'all zero' if not maps[j, r].any() else None, cmap=cmap)
  ax = fig.add_subplot(grid[rows, :])
  x = np.arange(s)
  for name, values in curves.items():
    _band(ax, x, values, name)
  ax.set_xticks(x, stages, rotation=90, fontsize=7)
  ax.set_xlim(-0.5, s - 0.5)
  ax.set_ylim(min(-0.05, min(float(np.nanmin(v)) for v in curves.values()) - 0.05), 1.05)
  ax.set_ylabel('similarity to original')
  ax.set_title('randomised from the logits down to the layer named', fontsize=9)
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize=8)
  _suptitle(fig, suptitle, fontsize=10)
  return fig


def deletion_insertion_figure(fractions, deletion, insertion, suptitle: str = ''
                              ) -> plt.Figure:
  """Deletion and insertion curves side by side, one line per method (mean +- std over
  images), with each method's mean AUC in the legend.

  Args:
    fractions: (T,) fraction of pixels deleted / inserted at each point.
    deletion, insertion: {method name: (N, T) or (T,) probabilities of the label}, e.g.
      {'saliency': r.deletion_curve}.
    suptitle: figure title.

  Returns:
    A Figure of two panels (deletion: lower AUC is better; insertion: higher is better).

  References:
    Petsiuk, Das & Saenko, RISE: Randomized Input Sampling for Explanation of Black-box
    Models, BMVC 2018.
  """
  fractions = np.asarray(fractions, np.float64)
  if fractions.ndim != 1 or len(fractions) < 2:
    raise InputError(f'fractions has shape {fractions.shape}, expected (T,) with T >= 2')
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True, layout='constrained')
  top = 0.0
  panels = ((axes[0], deletion, 'deletion', 'lower AUC is better'),
            (axes[1], insertion, 'insertion', 'higher AUC is better'))
  for ax, curves, kind, hint in panels:
    if not curves:
      raise InputError(f'no {kind} curves: pass {{method name: (N, T) curves}}')
    for name, values in curves.items():
      values = _curves(values, f'{kind}[{name!r}]')
      if values.shape[1] != len(fractions):
        raise InputError(f'{kind}[{name!r}] has {values.shape[1]} points, fractions '
                         f'{len(fractions)}')
      auc = float(np.mean(np.trapezoid(values, fractions, axis=1)))
      _band(ax, fractions, values, f'{name} (AUC {auc:.3g})')
      top = max(top, float(np.nanmax(values)))
    ax.set_xlabel(f'fraction of pixels {"deleted" if kind == "deletion" else "inserted"}')
    ax.set_title(f'{kind} ({hint})', fontsize=9)
    ax.set_xlim(0, 1)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
  # Probabilities of a weak or random model stay near 1 / classes: zoom in rather than
  # draw flat lines at zero (the axes share y).
  axes[0].set_ylim(0, 1.02 if top > 0.2 else 1.1 * top if top > 0 else 1.0)
  axes[0].set_ylabel('probability of the label')
  _suptitle(fig, suptitle, fontsize=10)
  return fig
