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


def _per_attack(values, shape: tuple[int, int], name: str) -> np.ndarray:
  """(A, N) values (one per attack and image) as an object array; a one-line InputError
  for any other shape."""
  values = np.asarray(values, dtype=object)
  if values.shape != shape:
    raise InputError(f'{name} has shape {values.shape}, expected {shape} (attacks, images)')
  return values


# An attack figure's PNG size is set by its panels' pixels: about 0.85 bytes each for
# photos and perturbations once `save` has reduced them to 256 colours (measured on
# 224-px photos); 300,000 of them keep a figure and its titles under 300 KB.
_ATTACK_PIXELS = 300_000


def attack_figure(original_rgb01, adversarial_rgb01, attacks: Sequence[str],
                  original_class, adversarial_class, success, linf, l2,
                  suptitle: str = '', names: Sequence[str] | None = None) -> plt.Figure:
  """`fooling_figure`'s four panels (original, adversarial image, difference, difference
  magnified 10x) with one row per attack for each image: image 0's attacks, then image
  1's, and so on.

  The adversarial panel is titled with the attack, the predicted class and whether the
  attack succeeded; the difference panel with the perturbation's L-infinity norm in
  grey levels (/255) and its L2 norm, in pixel units. The differences are drawn as
  `fooling_figure` draws them: min-max rescaled, then clip(0.5 + 10 d, 0, 1), whose grey
  is "unchanged" and whose scale is the same in every row (8/255 shows as +-0.31).

  Args:
    original_rgb01: (N, H, W, 3) clean images, RGB in [0, 1].
    adversarial_rgb01: (A, N, H, W, 3): attack a's image of image i at [a, i].
    attacks: A attack names, e.g. 'PGD-Linf'.
    original_class: N predicted class names of the clean images.
    adversarial_class: (A, N) predicted class names.
    success: (A, N) whether each attack met its goal.
    linf, l2: (A, N) norms of the perturbations in pixel units ([0, 1] scale).
    suptitle: figure title.
    names: N image names, shown above each image's first original.

  Returns:
    A Figure of N * A rows x 4 columns.
  """
  original = _rgb_batch(original_rgb01, 'original_rgb01')
  n = len(original)
  attacks = [str(a) for a in attacks]
  a_count = len(attacks)
  adversarial = np.asarray(adversarial_rgb01, np.float32)
  if adversarial.shape != (a_count, *original.shape):
    raise InputError(f'adversarial_rgb01 has shape {adversarial.shape}, expected '
                     f'{(a_count, *original.shape)} for {a_count} attacks')
  adversarial = np.stack([_rgb_batch(a, f'adversarial_rgb01[{j}]')
                          for j, a in enumerate(adversarial)])
  original_class = _check_titles(original_class, n, 'original classes')
  names = [''] * n if names is None else _check_titles(names, n, 'names')
  shape = (a_count, n)
  adversarial_class = _per_attack(adversarial_class, shape, 'adversarial_class')
  success = _per_attack(success, shape, 'success')
  linf = _per_attack(linf, shape, 'linf').astype(np.float64)
  l2 = _per_attack(l2, shape, 'l2').astype(np.float64)
  _finite(np.stack([linf, l2], axis=-1).swapaxes(0, 1), 'linf or l2 norms')  # per image
  rows = n * a_count
  # About one screen pixel per image pixel, within [1.6, 2.2] inches; smaller (down to
  # 1.1 in) where the panels would hold more than _ATTACK_PIXELS image pixels in all.
  side = original.shape[1]
  panel = float(np.clip(side / DPI, 1.6, 2.2))
  if 4 * rows * min(side, panel * DPI) ** 2 > _ATTACK_PIXELS:
    panel = max(1.1, float(np.sqrt(_ATTACK_PIXELS / (4 * rows))) / DPI)
  fontsize = 8 if panel >= 1.5 else 7
  height = (panel + 0.35) * rows + (0.4 if suptitle else 0)  # 0.35 in: two title lines
  fig, axes = plt.subplots(rows, 4, figsize=(4 * panel, height), squeeze=False,
                           layout='constrained')
  # Small images magnified: crisp pixels (smoothing them only blurs and bloats the PNG).
  interpolation = 'nearest' if side < panel * DPI else 'antialiased'
  chars = int(panel * 72 / (0.6 * fontsize))  # title characters a panel holds
  short = lambda text: textwrap.shorten(str(text), chars, placeholder='...')
  for i in range(n):
    for j, attack in enumerate(attacks):
      ax = axes[i * a_count + j]
      d = adversarial[j, i] - original[i]
      span = float(d.max() - d.min())
      rescaled = (d - d.min()) / span if span > 0 else np.full_like(d, 0.5)
      magnified = np.clip(0.5 + MAGNIFY * d, 0.0, 1.0)
      heading = f'original: {names[i]}' if names[i] and j == 0 else 'original'
      _image_axis(ax[0], original[i], interpolation=interpolation)
      ax[0].set_title(f'{short(heading)}\n{short(original_class[i])}',
                      fontsize=fontsize)
      _image_axis(ax[1], adversarial[j, i], interpolation=interpolation)
      ax[1].set_title(f'{attack}: {"success" if success[j, i] else "failed"}\n'
                      f'{short(adversarial_class[j, i])}', fontsize=fontsize,
                      color='black' if success[j, i] else 'firebrick')
      _image_axis(ax[2], rescaled, interpolation=interpolation)
      ax[2].set_title(f'difference (min-max)\nLinf {linf[j, i] * 255:.3g}/255, '
                      f'L2 {l2[j, i]:.3g}', fontsize=fontsize)
      _image_axis(ax[3], magnified, interpolation=interpolation)
      ax[3].set_title(f'difference x{MAGNIFY:g}\n(0.5 + {MAGNIFY:g} d, clipped)',
                      fontsize=fontsize)
  _suptitle(fig, suptitle, fontsize=10)
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


def _none_to_nan(values) -> np.ndarray:
  """A list that may hold None (JSON's null for an undefined rate) -> float64, None as NaN."""
  return np.asarray([np.nan if v is None else v for v in np.ravel(values)],
                    np.float64).reshape(np.shape(values))


def robustness_figure(linf_curves: dict, l2_curves: dict, naive: dict | None = None,
                      suptitle: str = '') -> plt.Figure:
  """Accuracy under attack against the budget: a Linf panel (grey levels, /255) and an
  L2 panel (pixel units), one line per attack, with the course's fooling method marked.

  Args:
    linf_curves, l2_curves: {attack name: (epsilons (E,), accuracies (E,))}, Linf
      epsilons in grey levels (8 for 8/255), L2 epsilons in [0, 1] pixel units. A panel
      with no curves is left out (one of the two must have some).
    naive: optional {'linf_255': median Linf in grey levels, 'l2': median L2,
      'success_rate': float, 'label': legend text}: drawn on each panel as a dashed
      vertical line at its median perturbation size and a star at 1 - success rate (the
      share of images it did not fool). A None size is not drawn.
    suptitle: figure title.

  Returns:
    A Figure of one or two panels, accuracy from 0 to 1.

  References:
    Madry et al., Towards deep learning models resistant to adversarial attacks, ICLR
    2018, fig. 4 (accuracy against epsilon).
  """
  panels = [(curves, key, xlabel) for curves, key, xlabel in (
      (linf_curves, 'linf_255', 'Linf epsilon (grey levels, /255)'),
      (l2_curves, 'l2', 'L2 epsilon (pixel units in [0, 1])')) if curves]
  if not panels:
    raise InputError('robustness_figure needs at least one curve')
  fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False,
                           layout='constrained')
  for ax, (curves, key, xlabel) in zip(axes[0], panels):
    for name, (eps, accuracy) in curves.items():
      eps, accuracy = np.asarray(eps, np.float64), _none_to_nan(accuracy)
      if eps.shape != accuracy.shape or eps.ndim != 1:
        raise InputError(f'curve {name!r}: epsilons {eps.shape} and accuracies '
                         f'{accuracy.shape} must be matching 1-D arrays')
      order = np.argsort(eps)
      ax.plot(eps[order], accuracy[order], marker='o', markersize=4, linewidth=1.4,
              label=name)
    size = None if naive is None else naive.get(key)
    if size is not None and np.isfinite(size):
      rate = naive.get('success_rate')
      (line,) = ax.plot([size, size], [0, 1], linestyle='--', color='0.35', linewidth=1.1,
                        label=naive.get('label', "course's fooling method, median size"))
      if rate is not None:
        ax.plot([size], [1 - rate], marker='*', markersize=12, color=line.get_color(),
                linestyle='none', label=f'  not fooled by it: {1 - rate:.0%}')
    ax.set_xlabel(xlabel)
    ax.set_ylabel('accuracy under attack')
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(left=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7.5)
  _suptitle(fig, suptitle, fontsize=10)
  return fig


def transfer_figure(rates, names: Sequence[str], suptitle: str = '', counts=None,
                    control=None, control_label: str = 'random noise (control)',
                    cmap: str = 'viridis') -> plt.Figure:
  """A transfer matrix as a heat map with its numbers: row = the model the adversarial
  images were made on, column = the model that classifies them.

  Args:
    rates: (M, M) rates in [0, 1]; None or NaN (nothing counted) is drawn as 'n/a' on
      grey.
    names: M model labels.
    suptitle: figure title.
    counts: optional (M, M) image counts behind each rate, printed under it.
    control: optional (M,) rates of each column's model under a perturbation nobody
      chose (random noise of the same budget), drawn as a last row below a line.
    control_label: that row's label.
    cmap: colormap over [0, 1].

  Returns:
    A Figure.

  References:
    Papernot, McDaniel & Goodfellow, Transferability in machine learning, 2016, fig. 3.
  """
  rates = _none_to_nan(rates)
  names = list(names)
  m = len(names)
  if rates.shape != (m, m):
    raise InputError(f'rates has shape {rates.shape}, expected ({m}, {m}) for {m} names')
  if counts is not None and np.shape(counts) != (m, m):
    raise InputError(f'counts has shape {np.shape(counts)}, expected ({m}, {m})')
  rows, row_names = rates, names
  if control is not None:
    control = _none_to_nan(control)
    if control.shape != (m,):
      raise InputError(f'control has shape {control.shape}, expected ({m},)')
    rows, row_names = np.vstack([rates, control[None]]), names + [control_label]
  side = 1.1 * m + 2.4
  fig, ax = plt.subplots(figsize=(side + 0.8, side + 0.5 * (control is not None)),
                         layout='constrained')
  ax.set_facecolor('0.85')  # cells with nothing counted (masked) show grey
  shown = ax.imshow(np.ma.masked_invalid(rows), cmap=cmap, vmin=0, vmax=1)
  colormap = shown.get_cmap()
  for i in range(len(rows)):
    for j in range(m):
      value = rows[i, j]
      text = 'n/a' if np.isnan(value) else f'{value:.2f}'
      if counts is not None and i < m:
        text += f'\n(n={int(counts[i][j])})'
      dark = not np.isnan(value) and np.mean(colormap(value)[:3]) < 0.5
      ax.text(j, i, text, ha='center', va='center', fontsize=9,
              color='white' if dark else 'black')
  if control is not None:
    ax.axhline(m - 0.5, color='white', linewidth=3)
  ax.set_xticks(range(m), names, rotation=30, ha='right', fontsize=8)
  ax.set_yticks(range(len(rows)), row_names, fontsize=8)
  ax.set_xlabel('evaluated on')
  ax.set_ylabel('made on (white-box)')
  fig.colorbar(shown, ax=ax, shrink=0.8).ax.tick_params(labelsize=7)
  _suptitle(fig, suptitle, fontsize=10)
  return fig


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


# Attribution maps and occlusion ---------------------------------------------------------


def _normalised_map(values: np.ndarray, percentile: float) -> np.ndarray:
  """A map's positive part over its `percentile`-th percentile, clipped to [0, 1] (PAIR
  saliency's and captum's display scaling: a few extreme pixels would otherwise leave
  the rest black). A map whose percentile is 0 but that is not all zero (a very sparse
  map) is scaled by its maximum instead; an all-zero map stays zero."""
  values = np.maximum(np.asarray(values, np.float64), 0.0)
  top = float(np.percentile(values, percentile))
  if top <= 0:
    top = float(values.max())
  return np.clip(values / top, 0.0, 1.0) if top > 0 else np.zeros_like(values)


def _check_percentile(percentile: float) -> float:
  if not (np.isfinite(percentile) and 0 < percentile <= 100):
    raise InputError(f'percentile must be in (0, 100], got {percentile!r}')
  return float(percentile)


def _colormap(cmap: str):
  try:
    return matplotlib.colormaps[cmap]
  except KeyError:
    raise InputError(f'unknown colormap {cmap!r}') from None


def overlay(image_rgb01, map, *, cmap: str = 'jet', alpha: float = 0.5,
            percentile: float = 99.0) -> np.ndarray:
  """An attribution map colour-mapped and alpha-blended over its image.

  The map's positive part is clipped at its `percentile`-th percentile and scaled to
  [0, 1] (as PAIR saliency and captum display maps), colour-mapped with `cmap`, and
  blended: (1 - alpha) * image + alpha * colour. Negative values (an occlusion that
  raised the score) count as zero.

  Args:
    image_rgb01: (H, W, 3) RGB in [0, 1].
    map: (H, W) attribution map at the image's resolution (`jaxviz.attribution_maps`).
    cmap: a matplotlib colormap name.
    alpha: the map's weight in [0, 1].
    percentile: in (0, 100]; 100 scales by the maximum.

  Returns:
    (H, W, 3) float32 RGB in [0, 1].
  """
  image = _rgb_batch(image_rgb01, 'image_rgb01')
  if len(image) != 1:
    raise InputError(f'image_rgb01 has shape {np.shape(image_rgb01)}: expected one '
                     '(H, W, 3) image')
  values = np.asarray(map, np.float32)
  if values.shape != image.shape[1:3]:
    raise InputError(f'map has shape {values.shape}, expected {image.shape[1:3]} (the '
                     'image\'s height and width)')
  _finite(values[None], 'map')
  if not (np.isfinite(alpha) and 0 <= alpha <= 1):
    raise InputError(f'alpha must be in [0, 1], got {alpha!r}')
  colour = _colormap(cmap)(_normalised_map(values, _check_percentile(percentile)))[..., :3]
  return ((1 - alpha) * image[0] + alpha * colour).astype(np.float32)


_overlay = overlay  # attribution_grid_figure's `overlay` argument hides the function


def _method_heading(name: str) -> str:
  return textwrap.fill(name.replace('_', ' '), 12)


def _all_zero_note(ax):
  ax.text(0.5, 0.5, 'all zero', transform=ax.transAxes, ha='center', va='center',
          fontsize=7, color='white', bbox=dict(facecolor='black', alpha=0.6, pad=1.5,
                                               linewidth=0))


def attribution_grid_figure(images_rgb01, maps_by_method: dict, titles: Sequence[str],
                            suptitle: str = '', overlay: bool = True,
                            percentile: float = 99.0) -> plt.Figure:
  """Attribution methods side by side: one row per image, the image then one column per
  method (headed by the method's name).

  Each map is clipped at its own `percentile`-th percentile and scaled to [0, 1]
  (`overlay`), then drawn over its image with the 'jet' colormap or, with overlay=False,
  alone in grey (white: the most attributed pixels).

  Args:
    images_rgb01: (N, H, W, 3) RGB in [0, 1].
    maps_by_method: {method name: (N, H, W) maps}, in column order
      (`jaxviz.attribution_maps`).
    titles: one per image (its name and the class explained), above the image column.
    suptitle: figure title.
    overlay: draw the maps over the images (True) or in grey (False).
    percentile: the clipping percentile of every map.

  Returns:
    A Figure of N rows x (1 + methods) columns.
  """
  images = _rgb_batch(images_rgb01, 'images_rgb01')
  n = len(images)
  if not maps_by_method:
    raise InputError('maps_by_method is empty: pass {method name: (N, H, W) maps}')
  maps = {}
  for name, values in maps_by_method.items():
    values = np.asarray(values, np.float32)
    if values.shape != images.shape[:3]:
      raise InputError(f'maps_by_method[{name!r}] has shape {values.shape}, expected '
                       f'{images.shape[:3]}')
    maps[str(name)] = _finite(values, f'maps_by_method[{name!r}]')
  titles = _check_titles(titles, n)
  percentile = _check_percentile(percentile)
  cols = 1 + len(maps)
  # One screen pixel per image pixel at most; within 13 inches across and ~110 square
  # inches in all (8 images x 10 columns stay under ~0.5 MB); 1.1 in at least.
  panel = float(np.clip(min(images.shape[1] / DPI, 13.0 / cols, np.sqrt(110.0 / (n * cols))),
                        1.1, 2.4))
  height = panel * n + 0.45 + (0.25 * n if n > 1 else 0) + (0.4 if suptitle else 0)
  fig, axes = plt.subplots(n, cols, figsize=(panel * cols, height), squeeze=False,
                           layout='constrained')
  # Small images magnified: crisp pixels (smoothing them only blurs and bloats the PNG).
  interpolation = 'nearest' if images.shape[1] < panel * DPI else 'antialiased'
  for i in range(n):
    _image_axis(axes[i, 0], images[i], interpolation=interpolation)
    axes[i, 0].set_title(titles[i], fontsize=8)
    for j, (name, values) in enumerate(maps.items(), start=1):
      ax = axes[i, j]
      if overlay:
        _image_axis(ax, _overlay(images[i], values[i], percentile=percentile),
                    interpolation=interpolation)
      else:
        _image_axis(ax, _normalised_map(values[i], percentile), cmap='gray', vmin=0.0,
                    vmax=1.0, interpolation=interpolation)
      if i == 0:
        ax.set_title(_method_heading(name), fontsize=8)
      if not values[i].any():
        _all_zero_note(ax)
  _suptitle(fig, suptitle, fontsize=10)
  return fig


def _field(result, name: str):
  value = result.get(name) if isinstance(result, dict) else getattr(result, name, None)
  if value is None:
    raise InputError(f'occlusion result has no {name!r}: pass one image of a '
                     'jaxviz.Occlusion (e.g. jax.tree.map(lambda a: a[i], result))')
  return np.asarray(value)


def _grid_extent(starts_r, starts_c, window: int, stride: int):
  """imshow extent that puts each cell of a (gh, gw) window-position map at its window's
  centre in image pixels, so the map lines up with the image."""
  half = stride / 2
  return (starts_c[0] + window / 2 - half, starts_c[-1] + window / 2 + half,
          starts_r[-1] + window / 2 + half, starts_r[0] + window / 2 - half)


def occlusion_figure(image_rgb01, occlusion_result, class_names: Sequence[str],
                     label: int, window: int, stride: int, suptitle: str = '',
                     top_classes: int = 6) -> plt.Figure:
  """Zeiler & Fergus's occlusion panels (Fig. 7) for one image, in one row.

  Panels: the image with the occluder drawn where it lowers the score most (Fig. 7a);
  the label's probability by occluder position (7d); the score drop f(x) - f(occluded)
  by position (positive: the square hid evidence for the label), on a diverging scale;
  the most probable class by position (7e), the `top_classes` most frequent ones
  coloured and named in a legend, the rest grey; and the per-pixel attribution (mean
  score drop of the windows covering each pixel) over the image (`overlay`). The
  position maps are drawn in image coordinates, each cell at its window's centre.

  Args:
    image_rgb01: (H, W, 3) RGB in [0, 1].
    occlusion_result: one image of a `jaxviz.Occlusion` (or a dict of its fields):
      probability, score_drop, predicted (gh, gw) and attribution (H, W).
    class_names: the model's class names (indexed by `predicted` and `label`).
    label: the class explained (an index).
    window, stride: the occluder's side and step in pixels (as passed to occlusion).
    suptitle: figure title.
    top_classes: classes named in the legend of the predicted-class map.

  Returns:
    A Figure of 5 panels.

  References:
    Zeiler & Fergus, Visualizing and Understanding Convolutional Networks, ECCV 2014,
    sec. 4.2 and Fig. 7.
  """
  from matplotlib import colors, patches
  image = _rgb_batch(image_rgb01, 'image_rgb01')
  if len(image) != 1:
    raise InputError(f'image_rgb01 has shape {np.shape(image_rgb01)}: expected one '
                     '(H, W, 3) image')
  image = image[0]
  h, w = image.shape[:2]
  probability = _field(occlusion_result, 'probability').astype(np.float64)
  drop = _field(occlusion_result, 'score_drop').astype(np.float64)
  predicted = _field(occlusion_result, 'predicted')
  if not np.issubdtype(predicted.dtype, np.integer):
    raise InputError(f'occlusion predicted has dtype {predicted.dtype}: expected class '
                     'indices')
  attribution = _field(occlusion_result, 'attribution').astype(np.float32)
  window, stride = int(window), int(stride)
  if window < 1 or stride < 1 or window > min(h, w):
    raise InputError(f'window {window} and stride {stride} must be >= 1, the window no '
                     f'larger than the image ({h}x{w})')
  grid = ((h - window) // stride + 1, (w - window) // stride + 1)
  for name, values in (('probability', probability), ('score_drop', drop),
                       ('predicted', predicted)):
    if values.shape != grid:
      raise InputError(f'occlusion {name} has shape {values.shape}; a {window}-px window '
                       f'with stride {stride} on {h}x{w} gives {grid}')
  if attribution.shape != (h, w):
    raise InputError(f'occlusion attribution has shape {attribution.shape}, expected '
                     f'{(h, w)}')
  _finite(np.stack([probability, drop])[None], 'occlusion maps')
  class_names = list(class_names)
  label = int(label)
  if not 0 <= label < len(class_names) or not (
      (0 <= predicted) & (predicted < len(class_names))).all():
    raise InputError(f'label {label} or a predicted class is not an index into '
                     f'{len(class_names)} class names')
  short = lambda k: textwrap.shorten(class_names[k], 22, placeholder='...')
  rows, cols = np.arange(grid[0]) * stride, np.arange(grid[1]) * stride
  extent = _grid_extent(rows, cols, window, stride)

  classes, counts = np.unique(predicted, return_counts=True)
  order = np.argsort(-counts, kind='stable')
  top = classes[order[:top_classes]]
  legend_rows = len(top) + (len(classes) > len(top))
  panel = 2.5
  fig, axes = plt.subplots(1, 5, figsize=(5 * panel + 0.9, panel + 0.55 + 0.13 * legend_rows
                                          + (0.35 if suptitle else 0)), layout='constrained')

  def position_map(ax, values, title, **kwargs):
    shown = ax.imshow(values, extent=extent, interpolation='nearest', **kwargs)
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)
    return shown

  # The occluder where it lowers the label's score most.
  r, c = np.unravel_index(int(np.argmax(drop)), grid)
  _image_axis(axes[0], image)
  axes[0].set_title(f'occluder {window} px, stride {stride}\n(shown at the largest score '
                    'drop)', fontsize=8)
  axes[0].add_patch(patches.Rectangle((c * stride - 0.5, r * stride - 0.5), window, window,
                                      facecolor=(0.5, 0.5, 0.5, 0.85), edgecolor='yellow',
                                      linewidth=1.2))

  shown = position_map(axes[1], probability, f'p({short(label)}) by occluder\n'
                       'position (Fig. 7d)', cmap='jet')
  fig.colorbar(shown, ax=axes[1], shrink=0.75, pad=0.02).ax.tick_params(labelsize=7)

  span = float(np.abs(drop).max()) or 1.0
  shown = position_map(axes[2], drop, 'score drop f(x) - f(occluded)\n(red: evidence for '
                       'the label)', cmap='RdBu_r', vmin=-span, vmax=span)
  fig.colorbar(shown, ax=axes[2], shrink=0.75, pad=0.02).ax.tick_params(labelsize=7)
  if not drop.any():
    _all_zero_note(axes[2])

  codes = np.full(predicted.shape, len(top), np.int32)  # len(top): every other class
  for code, k in enumerate(top):
    codes[predicted == k] = code
  palette = [matplotlib.colormaps['tab10'](code % 10) for code in range(len(top))]
  palette.append((0.8, 0.8, 0.8, 1.0))
  position_map(axes[3], codes, 'most probable class by\noccluder position (Fig. 7e)',
               cmap=colors.ListedColormap(palette), vmin=-0.5, vmax=len(top) + 0.5)
  share = lambda count: (f'{count / predicted.size:.0%}' if count >= 0.01 * predicted.size
                         else '<1%')
  named = lambda k: short(k) + (' (label)' if k == label else '')
  handles = [patches.Patch(color=palette[code], label=f'{named(k)} '
                           f'{share(counts[classes == k][0])}') for code, k in enumerate(top)]
  others = len(classes) - len(top)
  if others:
    rest = int(predicted.size - counts[order[:top_classes]].sum())
    handles.append(patches.Patch(color=palette[-1], label=f'{others} other class'
                                 f'{"es" if others > 1 else ""} {share(rest)}'))
  axes[3].legend(handles=handles, loc='upper center', bbox_to_anchor=(0.5, -0.02),
                 fontsize=6.5, frameon=False, ncol=1, handlelength=1.0,
                 borderaxespad=0.2, labelspacing=0.25)

  _image_axis(axes[4], overlay(image, attribution))
  axes[4].set_title('attribution: mean score drop of\nthe windows over each pixel',
                    fontsize=8)
  if not attribution.any():
    _all_zero_note(axes[4])
  _suptitle(fig, suptitle, fontsize=10)
  return fig


def signed_rgb01(projection, percentile: float = 99.5) -> np.ndarray:
  """A signed image (a DeconvNet projection, any scale) -> [0, 1] RGB for display:
  clip(0.5 + x / (2 s)) with s the `percentile` of |x| over the image (100: its
  maximum), so zero is mid-grey, the sign shows, and a few extreme pixels do not leave
  the rest invisible. An all-zero projection is uniform grey."""
  x = np.asarray(projection, np.float64)
  if not (0 < percentile <= 100):
    raise InputError(f'percentile must be in (0, 100], got {percentile}')
  x = np.where(np.isfinite(x), x, 0.0)
  scale = np.percentile(np.abs(x), percentile) if x.size else 0.0
  if scale == 0 and x.size:
    scale = np.abs(x).max()
  return np.clip(0.5 + (x / (2 * scale) if scale > 0 else 0 * x), 0, 1).astype(np.float32)


def top_patches_figure(crops_rgb01, projections_rgb01=None, row_titles: Sequence[str] = (),
                       cell_titles=None, suptitle: str = '') -> plt.Figure:
  """The top-N patches of several channels (Zeiler & Fergus 2014, Fig. 2): one row per
  channel, its N receptive-field crops from the highest activation leftwards, each with
  its DeconvNet projection beside it when given.

  Args:
    crops_rgb01: (R, N, S, S, 3) image crops in [0, 1].
    projections_rgb01: None, or (R, N, S, S, 3) projections already mapped to [0, 1]
      (`signed_rgb01`).
    row_titles: R labels ('channel 3'), drawn left of each row.
    cell_titles: None, or R lists of N short labels (the activation, the image index).
    suptitle: the figure title.
  """
  crops = np.asarray(crops_rgb01, np.float32)
  if crops.ndim != 5 or crops.shape[-1] != 3 or 0 in crops.shape:
    raise InputError(f'crops has shape {crops.shape}: expected (rows, N, S, S, 3) RGB')
  rows, n = crops.shape[:2]
  pairs = projections_rgb01 is not None
  if pairs:
    projections = np.asarray(projections_rgb01, np.float32)
    if projections.shape != crops.shape:
      raise InputError(f'projections has shape {projections.shape}, crops {crops.shape}')
  titles = _check_titles(row_titles, rows, 'row titles') if len(row_titles) else [''] * rows
  cols = n * (2 if pairs else 1)
  size = 0.75
  height = rows * size * 1.25 + 0.8  # 0.8 in: two lines of title above the first row
  fig, axes = plt.subplots(rows, cols, figsize=(cols * size + 0.6, height), squeeze=False)
  for r in range(rows):
    for k in range(n):
      c = k * (2 if pairs else 1)
      label = None if cell_titles is None else str(cell_titles[r][k])
      _image_axis(axes[r, c], np.clip(_finite(crops[r, k][None], 'crops')[0], 0, 1))
      if label:
        axes[r, c].set_title(label, fontsize=5.5, pad=1.5)
      if pairs:
        _image_axis(axes[r, c + 1],
                    np.clip(_finite(projections[r, k][None], 'projections')[0], 0, 1))
    axes[r, 0].set_axis_on()
    axes[r, 0].set_xticks([])
    axes[r, 0].set_yticks([])
    for spine in axes[r, 0].spines.values():
      spine.set_visible(False)
    axes[r, 0].set_ylabel(titles[r], fontsize=7)
  fig.subplots_adjust(left=0.4 / fig.get_figwidth(), right=0.99, bottom=0.05 / height,
                      top=1 - 0.75 / height, wspace=0.08, hspace=0.35)
  _suptitle(fig, suptitle, fontsize=9)
  return fig


def feature_sheet_figure(images_rgb01, labels: Sequence[str], suptitle: str = '',
                         columns: int = 8, tile: float = 0.9) -> plt.Figure:
  """A sheet of feature visualisations: one small tile per channel, labelled beneath.

  Args:
    images_rgb01: (N, H, W, 3) RGB in [0, 1], one per channel.
    labels: one short label per tile ('12', 'ch 12').
    suptitle: the figure title.
    columns: tiles per row at most.
    tile: inches per tile.

  Returns:
    A Figure of ceil(N / columns) rows.
  """
  images = _rgb_batch(images_rgb01, 'images_rgb01')
  n = len(images)
  labels = _check_titles(labels, n, 'labels')
  cols = max(1, min(columns, n))
  rows = -(-n // cols)
  top = 0.7 if suptitle else 0.1
  height = rows * (tile + 0.18) + top
  width = max(cols * tile + 0.2, 3.0)
  fig, axes = plt.subplots(rows, cols, figsize=(width, height), squeeze=False)
  for i, ax in enumerate(axes.flat):
    ax.set_axis_off()
    if i < n:
      ax.imshow(images[i], interpolation='nearest')
      ax.set_title(labels[i], fontsize=6, pad=1.5)
  fig.subplots_adjust(left=0.1 / width, right=1 - 0.1 / width, bottom=0.05 / height,
                      top=1 - top / height, wspace=0.06, hspace=0.25)
  _suptitle(fig, suptitle, fontsize=9)
  return fig


def deep_dream_figure(original_rgb01, dreamed_rgb01, titles: Sequence[str],
                      suptitle: str = '') -> plt.Figure:
  """DeepDream before and after: one row per image, the original then the dream.

  Args:
    original_rgb01, dreamed_rgb01: (N, H, W, 3) RGB in [0, 1].
    titles: one per image, drawn above its dream (e.g. the objective's rise).
    suptitle: the figure title.
  """
  original = _rgb_batch(original_rgb01, 'original_rgb01')
  dreamed = _rgb_batch(dreamed_rgb01, 'dreamed_rgb01')
  if original.shape != dreamed.shape:
    raise InputError(f'original has shape {original.shape}, dreamed {dreamed.shape}')
  n = len(original)
  titles = _check_titles(titles, n)
  panel = _panel(original)
  fig, axes = plt.subplots(n, 2, figsize=(2 * panel + 0.3, n * (panel + 0.4) + 0.6),
                           squeeze=False, layout='constrained')
  for i in range(n):
    _image_axis(axes[i, 0], original[i], 'original')
    _image_axis(axes[i, 1], dreamed[i], titles[i])
  _suptitle(fig, suptitle)
  return fig


# ----------------------------------------------------------------------------------------
# Looking inside a network: activation maps, filters (jaxviz.inspection) and the
# invariance study (jaxviz.invariance).

_BLANK = 0.85  # grey of a tile with nothing to show (a dead or constant channel)
_GAP = 1.0  # white between tiles


def _mosaic(tiles: np.ndarray, columns: int, gap: int = 1) -> np.ndarray:
  """(C, h, w, 3) RGB tiles -> one (rows * (h + gap) - gap, ...) RGB image, row-major,
  white between tiles and in the unused cells of the last row."""
  c, h, w = tiles.shape[:3]
  rows = -(-c // columns)
  out = np.full((rows * (h + gap) - gap, columns * (w + gap) - gap, 3), _GAP)
  for i in range(c):
    r, col = divmod(i, columns)
    out[r * (h + gap):r * (h + gap) + h, col * (w + gap):col * (w + gap) + w] = tiles[i]
  return out


def _grid_columns(count: int, aspect: float = 1.0) -> int:
  """Columns of a near-square grid of `count` tiles (a little wider than tall)."""
  return max(1, min(count, int(np.ceil(np.sqrt(count * 1.5 * aspect)))))


def activation_maps_figure(image_rgb01, activations, suptitle: str = '', *,
                           scale: str = 'channel', max_channels: int | None = None,
                           cmap: str = 'viridis') -> plt.Figure:
  """Every channel of one layer's activation for one image, as a grid of tiles, with the
  image beside it (Zeiler & Fergus 2014, sec. 2; the course's "cartes d'activation").

  Channel 0 is at the top left, then row by row. scale='channel' (default) maps each
  channel to the colour map by its own min and max, so that the pattern of a weak channel
  shows as clearly as a strong one's; scale='shared' uses one min and max for all of them
  (a colour bar gives it), so that strengths compare. Under both, a dead channel (all zero:
  a ReLU that never fires on this image) is a blank grey tile, and the mosaic's title
  counts them over all C channels; under 'channel' a constant non-zero channel is blank
  too, and counted among those drawn.

  Args:
    image_rgb01: (H, W, 3) RGB in [0, 1], the input.
    activations: (h, w, C) the layer's output for it (`jaxviz.inspection.activation_maps`).
    suptitle: figure title.
    scale: 'channel' or 'shared'.
    max_channels: draw the first this many channels (None: all).
    cmap: a matplotlib colour map name.

  Returns:
    A Figure.
  """
  from matplotlib import colors
  image = _rgb_batch(image_rgb01, 'image_rgb01')[0]
  acts = np.asarray(activations, np.float64)
  if acts.ndim != 3 or 0 in acts.shape:
    raise InputError(f'activations has shape {acts.shape}: expected one image\'s (h, w, C) '
                     'convolutional feature map')
  if not np.isfinite(acts).all():
    raise InputError('activations contain NaN or inf')
  if scale not in ('channel', 'shared'):
    raise InputError(f"scale must be 'channel' or 'shared', got {scale!r}")
  total = acts.shape[-1]
  if max_channels is not None and (isinstance(max_channels, bool) or int(max_channels) < 1):
    raise InputError(f'max_channels must be a positive integer or None, got {max_channels!r}')
  shown = total if max_channels is None else min(total, int(max_channels))
  tiles = acts[..., :shown].transpose(2, 0, 1)  # (C, h, w)
  low, high = tiles.min(axis=(1, 2)), tiles.max(axis=(1, 2))
  dead = (low == 0) & (high == 0)
  flat = low == high
  if scale == 'channel':
    span = np.where(flat, 1.0, high - low)
    normed = (tiles - low[:, None, None]) / span[:, None, None]
    blank = flat
  else:
    lo, hi = float(low.min()), float(high.max())
    normed = (tiles - lo) / ((hi - lo) or 1.0)
    blank = dead
  colours = matplotlib.colormaps[cmap](np.clip(normed, 0, 1))[..., :3]
  colours[blank] = _BLANK
  columns = _grid_columns(shown, tiles.shape[2] / tiles.shape[1])
  mosaic = _mosaic(colours, columns)
  rows = -(-shown // columns)
  mosaic_width = float(np.clip(columns * 0.5, 4.0, 9.0))
  mosaic_height = mosaic_width * mosaic.shape[0] / mosaic.shape[1]
  panel = 2.4
  fig, (left, right) = plt.subplots(
      1, 2, figsize=(panel + mosaic_width + 0.9 + (0.6 if scale == 'shared' else 0),
                     max(panel, mosaic_height) + 0.7 + (0.35 if suptitle else 0)),
      width_ratios=[panel, mosaic_width], layout='constrained')
  _image_axis(left, image, 'input')
  right.imshow(mosaic, interpolation='nearest')
  right.set_axis_off()
  dead_all = int((acts == 0).all(axis=(0, 1)).sum())  # over every channel, drawn or not
  notes = [f'{dead_all} of {total} channels dead (all zero), drawn blank']
  if scale == 'channel':
    head = f'{shown} of {total} channels, each scaled by its own min-max'
    constant = int((flat & ~dead).sum())
    if constant:
      notes.append(f'{constant} constant non-zero drawn blank')
  else:
    head = f'{shown} of {total} channels, one shared scale'
    mappable = plt.cm.ScalarMappable(colors.Normalize(lo, hi), matplotlib.colormaps[cmap])
    fig.colorbar(mappable, ax=right, shrink=0.6, pad=0.02).ax.tick_params(labelsize=7)
  right.set_title(textwrap.fill(f'{head}, {rows} x {columns} grid, row-major; '
                                + '; '.join(notes), int(mosaic_width * 72 / 4.6)),
                  fontsize=8)
  _suptitle(fig, suptitle, fontsize=10)
  return fig


def first_layer_filters_figure(filters_rgb01, suptitle: str = '',
                               columns: int | None = None) -> plt.Figure:
  """The first convolution's kernels as RGB tiles, row-major (Krizhevsky et al. 2012,
  Fig. 3; Zeiler & Fergus 2014, Fig. 6).

  Args:
    filters_rgb01: (C_out, k, k, 3) in [0, 1] (`jaxviz.inspection.first_layer_filters`).
    suptitle: figure title (say which scaling made the tiles).
    columns: tiles per row; None: a near-square grid.

  Returns:
    A Figure.
  """
  tiles = _rgb_batch(filters_rgb01, 'filters_rgb01')
  n, k = tiles.shape[0], tiles.shape[1]
  columns = _grid_columns(n) if columns is None else max(1, min(int(columns), n))
  mosaic = _mosaic(tiles, columns)
  width = float(np.clip(columns * (0.45 if k < 7 else 0.6), 4.0, 9.0))
  height = width * mosaic.shape[0] / mosaic.shape[1]
  fig, ax = plt.subplots(figsize=(width + 0.3, height + 0.5 + (0.35 if suptitle else 0)),
                         layout='constrained')
  ax.imshow(mosaic, interpolation='nearest')
  ax.set_axis_off()
  ax.set_title(f'{n} filters of {k} x {tiles.shape[2]} x 3, row-major', fontsize=8)
  _suptitle(fig, suptitle, fontsize=10)
  return fig


def layer_filters_figure(filters, suptitle: str = '', *, max_outputs: int = 8,
                         max_inputs: int = 16) -> plt.Figure:
  """A deeper convolution's kernels: one row per output channel, one column per input
  channel (the first few of each), each tile a k x k kernel slice.

  One colour scale, symmetric about 0, for all tiles (blue negative, red positive): a
  deeper kernel's meaning is in its sign pattern and in which input channels it weighs,
  which per-tile scaling would hide.

  Args:
    filters: (C_out, C_in, k, k) (`jaxviz.inspection.layer_filters`).
    suptitle: figure title.
    max_outputs, max_inputs: how many output rows and input columns to draw.

  Returns:
    A Figure.
  """
  from matplotlib import colors
  w = np.asarray(filters, np.float64)
  if w.ndim != 4 or 0 in w.shape:
    raise InputError(f'filters has shape {w.shape}: expected (C_out, C_in, k, k)')
  if not np.isfinite(w).all():
    raise InputError('filters contain NaN or inf')
  for value, name in ((max_outputs, 'max_outputs'), (max_inputs, 'max_inputs')):
    if isinstance(value, bool) or int(value) < 1:
      raise InputError(f'{name} must be a positive integer, got {value!r}')
  outs, ins = min(w.shape[0], int(max_outputs)), min(w.shape[1], int(max_inputs))
  shown = w[:outs, :ins]
  k_h, k_w = shown.shape[2:]
  span = float(np.abs(shown).max()) or 1.0
  cmap = matplotlib.colormaps['RdBu_r']
  tiles = cmap(0.5 + 0.5 * shown.reshape(outs * ins, k_h, k_w) / span)[..., :3]
  mosaic = _mosaic(tiles, ins)
  tile_in = 0.35 if max(k_h, k_w) <= 3 else 0.5
  width = float(np.clip(ins * tile_in, 2.5, 9.0))
  height = width * mosaic.shape[0] / mosaic.shape[1]
  fig, ax = plt.subplots(figsize=(width + 1.6, height + 0.9 + (0.35 if suptitle else 0)),
                         layout='constrained')
  ax.imshow(mosaic, interpolation='nearest')
  ax.set_xticks([c * (k_w + 1) + (k_w - 1) / 2 for c in range(ins)], range(ins), fontsize=6)
  ax.set_yticks([r * (k_h + 1) + (k_h - 1) / 2 for r in range(outs)], range(outs), fontsize=6)
  ax.tick_params(length=0)
  for side in ax.spines.values():
    side.set_visible(False)
  ax.set_xlabel(f'input channel (first {ins} of {w.shape[1]})', fontsize=8)
  ax.set_ylabel(f'output channel (first {outs} of {w.shape[0]})', fontsize=8)
  ax.set_title(f'{k_h} x {k_w} kernels, one shared scale symmetric about 0', fontsize=8)
  mappable = plt.cm.ScalarMappable(colors.Normalize(-span, span), cmap)
  fig.colorbar(mappable, ax=ax, shrink=0.7, pad=0.02).ax.tick_params(labelsize=7)
  _suptitle(fig, suptitle, fontsize=10)
  return fig


_TRANSFORM_AXES = {'rotate': 'rotation (degrees, counter-clockwise)',
                   'translate': 'vertical shift (pixels, down)', 'scale': 'scale factor'}


def invariance_figure(results: dict, curve_labels: Sequence[str], layers: Sequence[str],
                      suptitle: str = '', *, relative: bool = False) -> plt.Figure:
  """Zeiler & Fergus 2014, Fig. 5: one column per transform; rows: sample transformed
  images, the distance of each layer's features to the untransformed image's, and the
  probability of the true class, one curve per image.

  Args:
    results: {transform: {'values': (T,), 'probability': (N, T), 'distances':
      {layer: (N, T)}, 'samples': (S, H, W, 3) RGB in [0, 1] (transformed copies of the
      first image), 'sample_values': (S,)}}, transforms in column order ('rotate',
      'translate', 'scale' name the x axes; a scale axis is logarithmic).
    curve_labels: N legend entries (image name and true class).
    layers: the layers of `distances`, one row each, in order.
    suptitle: figure title.
    relative: the distances were divided by the untransformed features' norm (labels
      the axes so).

  Returns:
    A Figure.
  """
  if not results:
    raise InputError('results is empty: give at least one transform')
  layers = list(layers)
  curve_labels = list(curve_labels)
  columns = len(results)
  rows = 2 + len(layers)
  fig, axes = plt.subplots(rows, columns, squeeze=False,
                           figsize=(4.0 * columns + 0.3,
                                    1.5 + 2.2 * (rows - 1) + (0.4 if suptitle else 0)),
                           height_ratios=[0.8] + [1.0] * (rows - 1), layout='constrained')
  for col, (transform, result) in enumerate(results.items()):
    values = np.asarray(result['values'], np.float64)
    if values.ndim != 1:
      raise InputError(f'{transform}: values has shape {values.shape}: expected (T,)')
    probability = np.atleast_2d(np.asarray(result['probability'], np.float64))
    if probability.shape != (len(curve_labels), len(values)):
      raise InputError(f'{transform}: probability has shape {probability.shape}, '
                       f'expected ({len(curve_labels)}, {len(values)})')
    samples = _rgb_batch(result['samples'], f'{transform} samples')
    sample_values = np.asarray(result['sample_values'], np.float64)
    if sample_values.shape != (len(samples),):
      raise InputError(f'{transform}: {len(sample_values)} sample_values for '
                       f'{len(samples)} samples')
    h, w = samples.shape[1:3]
    gap = max(1, w // 16)
    strip = _mosaic(samples, len(samples), gap)
    top = axes[0, col]
    top.imshow(strip, interpolation='nearest')
    top.set_axis_off()
    unit = {'rotate': '\N{DEGREE SIGN}', 'translate': ' px', 'scale': 'x'}.get(transform, '')
    for i, v in enumerate(sample_values):
      top.text(i * (w + gap) + w / 2, h + gap, f'{v:.3g}{unit}', ha='center', va='top',
               fontsize=7)
    top.set_title(transform, fontsize=10)
    curves = [(result['distances'][layer], ('relative ' if relative else '')
               + f'distance, {layer}') for layer in layers]
    curves.append((probability, 'p(true class)'))
    for row, (values_2d, ylabel) in enumerate(curves, start=1):
      ax = axes[row, col]
      values_2d = np.atleast_2d(np.asarray(values_2d, np.float64))
      if values_2d.shape != probability.shape:
        raise InputError(f'{transform}: {ylabel} has shape {values_2d.shape}, expected '
                         f'{probability.shape}')
      for curve, label in zip(values_2d, curve_labels):
        ax.plot(values, curve, marker='.', markersize=3, linewidth=1.0, label=label)
      if transform == 'scale':
        ax.set_xscale('log')
        ticks = sample_values if len(sample_values) > 1 else values
        ax.set_xticks(ticks, [f'{t:.3g}' for t in ticks])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
      ax.grid(True, alpha=0.3)
      ax.tick_params(labelsize=7)
      ax.set_ylabel(ylabel, fontsize=8)
      if row == rows - 1:
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(_TRANSFORM_AXES.get(transform, transform), fontsize=8)
  axes[-1, 0].legend(fontsize=6.5, loc='best')
  _suptitle(fig, suptitle, fontsize=10)
  return fig


def receptive_field_figure(image_rgb01, boxes, labels: Sequence[str], suptitle: str = '',
                           ) -> plt.Figure:
  """Receptive fields drawn on an image: one square per unit, its full extent, where it
  hangs over the border (padding) included; the margin around the image shows it.

  Args:
    image_rgb01: (H, W, 3) image in [0, 1].
    boxes: (top, left, size) per field, in input pixels (`ReceptiveField.span`: top =
      start + i * jump), possibly negative or past the image.
    labels: one legend entry per box ('features.29 (14, 0): 196 px').
    suptitle: the figure title.
  """
  image = _rgb_batch(image_rgb01, 'image')[0]
  boxes = [tuple(int(v) for v in b) for b in boxes]
  if any(len(b) != 3 or b[2] < 1 for b in boxes):
    raise InputError(f'boxes must be (top, left, size) with size >= 1, got {boxes}')
  labels = _check_titles(labels, len(boxes), 'labels')
  h, w = image.shape[:2]
  lo = min([0] + [min(t, l) for t, l, _ in boxes])
  hi_r = max([h] + [t + s for t, _, s in boxes])
  hi_c = max([w] + [l + s for _, l, s in boxes])
  fig, ax = plt.subplots(figsize=(5.2, 5.2 * (hi_r - lo) / (hi_c - lo) + 0.5))
  ax.imshow(image, extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation='nearest')
  ax.add_patch(matplotlib.patches.Rectangle((-0.5, -0.5), w, h, fill=False, lw=0.8,
                                            ec='black', ls=':'))
  colors = plt.get_cmap('tab10')
  for k, ((t, l, s), label) in enumerate(zip(boxes, labels)):
    ax.add_patch(matplotlib.patches.Rectangle((l - 0.5, t - 0.5), s, s, fill=False, lw=1.4,
                                              ec=colors(k % 10), label=label))
  ax.set_xlim(lo - 1.5, hi_c + 0.5)
  ax.set_ylim(hi_r + 0.5, lo - 1.5)
  ax.set_axis_off()
  ax.legend(loc='upper center', bbox_to_anchor=(0.5, 0.0), fontsize=7, frameon=False,
            ncol=1)
  fig.subplots_adjust(left=0.02, right=0.98, top=0.93, bottom=0.05 + 0.035 * len(boxes))
  _suptitle(fig, suptitle, fontsize=10)
  return fig
