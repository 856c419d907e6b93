"""Exact receptive fields of every spatial layer, and the image crops they select.

A unit of a convolutional feature map sees a square window of the input, its receptive
field. Along one axis (every model here has square kernels and strides, so H and W agree)
a layer's field is three integers, propagated layer by layer from the input's
`(size, jump, start) = (1, 1, 0)`. A convolution or pool with kernel k, stride s, padding
p (the padding before the first row) and dilation d maps the field of its input to

    size_out  = size_in + (k - 1) * d * jump_in
    jump_out  = jump_in * s
    start_out = start_in - p * jump_in

so that output unit i covers input rows [start + i * jump, start + i * jump + size - 1]
(both ends included; `start` is the first pixel index of unit 0's field, negative where
padding lets the field hang over the top or left edge, and the field may also run past
the bottom or right edge). Ceil-mode pooling only appends output units at the end, so
the formula holds for it unchanged; ReLU, batch norm and eval-mode dropout act pixel by
pixel and leave the field as it is. Branches that meet (SqueezeNet's Fire concatenates
its 1x1 and 3x3 expands; a ResNet block adds its main path and its shortcut) combine by
union: the smallest interval holding both, which here is always the wider branch's
field, since the branches share their jump and are centred alike. A concatenation keeps
each channel's own field: `receptive_field(..., channel=c)` is exact for one channel
(a Fire module's 1x1-expand channels see less than its 3x3-expand channels), and without
a channel it gives the union over channels, the field of the layer's widest channels.

Where a floor-mode layer's windows do not tile its input, the last rows of the image
reach no unit at all (SqueezeNet 1.1's stem reads rows 0..222 of 224): `input_extent`
says how many leading rows and columns a layer reads, and clipping a field to them
gives exactly the pixels that influence the unit.

An adaptive average pool is spatial only where it is the identity (AlexNet's 6x6 and
VGG's 7x7 pools at 224 px): elsewhere its bins have varying sizes and no single field;
layers after a global pool or a Linear layer have no receptive field. Both give a
one-line `InputError`.

The geometry is read from the model's own modules (`nnx.Conv` kernel size, strides,
padding, dilation; `MaxPool2d` kernel, stride, padding), not from a table, and
tests/test_receptive_field.py proves every field by brute force: the input gradient of
one unit, in a network made to have every path live, is non-zero exactly on its field.

References:
  Araujo, Norris & Sim, Computing Receptive Fields of Convolutional Neural Networks,
  Distill 2019, sections "Single-path networks" (the size and start recurrences) and
  "Arbitrary computation graphs" (branches that meet); Dumoulin & Visin, A guide to
  convolution arithmetic for deep learning, 2016, sec. 2, Relationship 6 (output sizes).
"""

import functools
from typing import NamedTuple

import numpy as np
from flax import nnx

from jaxviz import models, ops, shapes
from jaxviz.errors import InputError
from jaxviz.models import layers as L
from jaxviz.models.resnet import Block, ResNet
from jaxviz.models.shapesnet import ConvBN


class ReceptiveField(NamedTuple):
  """The field of one layer's units along one axis (the same along H and W).

  Unit i covers input pixels [start + i * jump, start + i * jump + size - 1], both ends
  included; `start` (an integer: every stride and padding here is one) may be negative.
  """
  size: int
  jump: int
  start: int

  def span(self, i: int) -> tuple[int, int]:
    """Unit i's first and one-past-last input index (unclipped)."""
    first = self.start + i * self.jump
    return first, first + self.size

  def center(self, i: int) -> float:
    """The input coordinate (pixel index, possibly x.5) of unit i's field centre."""
    return self.start + i * self.jump + (self.size - 1) / 2


INPUT = ReceptiveField(1, 1, 0)


class _Segment(NamedTuple):
  """`count` consecutive channels sharing a field, whose units read input rows below
  `extent` only (a floor-mode layer may leave the image's last rows unread)."""
  count: int
  field: ReceptiveField
  extent: int


class _Spatial(NamedTuple):
  """The walk's state: the channels' segments and the map's side in units."""
  segments: tuple[_Segment, ...]
  side: int


class _NotSpatial(NamedTuple):
  reason: str


def _apply(field: ReceptiveField, k: int, s: int, p: int, d: int = 1) -> ReceptiveField:
  return ReceptiveField(field.size + (k - 1) * d * field.jump, field.jump * s,
                        field.start - p * field.jump)


def _union(fields) -> ReceptiveField:
  fields = list(fields)
  jumps = {f.jump for f in fields}
  if len(jumps) != 1:  # never in these models: a union of two strides is no lattice
    raise ValueError(f'cannot join fields with different jumps {sorted(jumps)}')
  first = min(f.start for f in fields)
  last = max(f.start + f.size for f in fields)
  return ReceptiveField(last - first, jumps.pop(), first)


def _joined(segments) -> _Segment:
  """All channels as one segment: the union of their fields and extents."""
  return _Segment(sum(g.count for g in segments), _union(g.field for g in segments),
                  max(g.extent for g in segments))


def _merge(segments) -> tuple[_Segment, ...]:
  """Joins neighbouring segments with the same field and extent."""
  out = []
  for g in segments:
    if out and out[-1][1:] == g[1:]:
      out[-1] = out[-1]._replace(count=out[-1].count + g.count)
    elif g.count:
      out.append(g)
  return tuple(out)


def _window(g: _Segment, side_in: int, side_out: int, k: int, s: int, p: int,
            d: int) -> _Segment:
  """A window layer on one segment. The last output unit reads input units up to
  (side_out - 1) * s - p + (k - 1) * d, those past the map being padding; the rows the
  output reads end where the last input unit it reads ends (or at the input's extent)."""
  last = min((side_out - 1) * s - p + (k - 1) * d, side_in - 1)
  return _Segment(g.count, _apply(g.field, k, s, p, d),
                  min(g.field.span(last)[1], g.extent))


def _square(value, what: str) -> int:
  """One int from a square (a, a) pair (or an int)."""
  if isinstance(value, int):
    return value
  value = tuple(value)
  if len(set(value)) != 1:
    raise ValueError(f'non-square {what} {value}: receptive fields here are square')
  return int(value[0])


def _conv(state, conv: nnx.Conv):
  """A convolution mixes its input channels: every output channel sees their union."""
  if isinstance(state, _NotSpatial):
    return state
  k = _square(conv.kernel_size, 'kernel')
  s = _square(conv.strides or 1, 'stride')
  d = _square(conv.kernel_dilation or 1, 'dilation')
  if isinstance(conv.padding, str) or (conv.input_dilation not in (None, 1)):
    raise ValueError(f'unsupported convolution padding {conv.padding!r}')
  pads = [conv.padding] * 2 if isinstance(conv.padding, int) else list(conv.padding)
  pads = [(p, p) if isinstance(p, int) else tuple(p) for p in pads]
  if len(set(pads)) != 1:
    raise ValueError(f'non-square padding {pads}')
  lo, hi = pads[0]
  side = (state.side + lo + hi - d * (k - 1) - 1) // s + 1
  ends = [_window(g, state.side, side, k, s, lo, d) for g in state.segments]
  joined = _joined(ends)
  return _Spatial((joined._replace(count=conv.out_features),), side)


def _pool(state, pool: L.MaxPool2d):
  """A max-pool acts on each channel alone (ceil mode adds units, not field)."""
  if isinstance(state, _NotSpatial):
    return state
  side = ops.pool_output_size(state.side, pool.kernel, pool.stride, pool.padding,
                              pool.ceil_mode)
  return _Spatial(_merge(_window(g, state.side, side, pool.kernel, pool.stride,
                                 pool.padding, 1) for g in state.segments), side)


def _adaptive(state, pool: L.AdaptiveAvgPool2d, name: str):
  if isinstance(state, _NotSpatial):
    return state
  if pool.output_size == (state.side, state.side):
    return state  # the identity: ops.adaptive_avg_pool2d returns its input
  return _NotSpatial(
      f'{name} averages the {state.side}x{state.side} map into '
      f'{pool.output_size[0]}x{pool.output_size[1]} bins (an adaptive pool is spatial '
      'only where it is the identity)')


def _concat(parts):
  if any(isinstance(p, _NotSpatial) for p in parts):
    return next(p for p in parts if isinstance(p, _NotSpatial))
  return _Spatial(_merge(sum((p.segments for p in parts), ())), parts[0].side)


def _add(a, b):
  """Elementwise sum (a residual connection): each channel's fields join."""
  ea = [g for g in a.segments for _ in range(g.count)]
  eb = [g for g in b.segments for _ in range(g.count)]
  return _Spatial(_merge(_Segment(1, _union((x.field, y.field)), max(x.extent, y.extent))
                         for x, y in zip(ea, eb, strict=True)), a.side)


def _not_spatial(state, name: str, what: str):
  return state if isinstance(state, _NotSpatial) else _NotSpatial(f'{name} is {what}')


def _conv_bn(state, module: ConvBN, name: str, out: dict):
  """ShapesNet's conv -> BN ('NAME') -> ReLU ('NAME_activation')."""
  out[name] = state = _conv(state, module.conv)
  out[f'{name}_activation'] = state
  return state


def _fire(state, module, name: str, out: dict):
  """SqueezeNet's Fire (nnx.Conv branches) or ShapesNet's FireBN (ConvBN branches)."""
  def branch(state, sub):
    conv = getattr(module, sub)
    if isinstance(conv, ConvBN):
      return _conv_bn(state, conv, f'{name}.{sub}', out)
    out[f'{name}.{sub}'] = state = _conv(state, conv)
    out[f'{name}.{sub}_activation'] = state
    return state

  squeezed = branch(state, 'squeeze')
  return _concat([branch(squeezed, 'expand1x1'), branch(squeezed, 'expand3x3')])


def _block(state, block: Block, name: str, out: dict):
  """A ResNet block: conv/bn/relu steps, the downsample branch, their sum and ReLU."""
  main = state
  for i in range(1, block.depth + 1):
    out[f'{name}.conv{i}'] = main = _conv(main, getattr(block, f'conv{i}'))
    out[f'{name}.bn{i}'] = main
    if i < block.depth:
      out[f'{name}.relu{i}'] = main
  shortcut = state
  if block.downsample is not None:
    out[f'{name}.downsample.0'] = shortcut = _conv(state, block.downsample[0])
    out[f'{name}.downsample.1'] = shortcut
    out[f'{name}.downsample'] = shortcut
  if isinstance(main, _NotSpatial):
    out[f'{name}.relu'] = main
    return main
  out[f'{name}.relu'] = state = _add(main, shortcut)
  return state


def _layer(state, layer, name: str, out: dict):
  """One entry of an nnx.List run by run_sequential; records the sub-layers' names."""
  if isinstance(layer, nnx.Conv):
    return _conv(state, layer)
  if isinstance(layer, L.MaxPool2d):
    return _pool(state, layer)
  if isinstance(layer, (L.ReLU, L.Dropout, nnx.BatchNorm)):
    return state
  if isinstance(layer, L.AdaptiveAvgPool2d):
    return _adaptive(state, layer, name)
  if isinstance(layer, nnx.Linear):
    return _not_spatial(state, name, 'a Linear layer, not a spatial map')
  if isinstance(layer, ConvBN) and not hasattr(layer, 'branches'):
    out[name] = state = _conv(state, layer.conv)  # Stem: 'NAME', then 'NAME_activation'
    out[f'{name}_activation'] = state
    return state
  if hasattr(layer, 'squeeze') and hasattr(layer, 'expand3x3'):
    return _fire(state, layer, name, out)
  if isinstance(layer, Block):
    return _block(state, layer, name, out)
  raise ValueError(f'no receptive-field rule for {type(layer).__name__} ({name})')


def _sequential(state, layers, prefix: str, out: dict):
  for i, layer in enumerate(layers):
    name = f'{prefix}.{i}'
    state = _layer(state, layer, name, out)
    out[name] = state
  return state


def _walk(module, side: int) -> dict:
  """{layer name: _Spatial or _NotSpatial} for every hookable name, in forward order,
  for an input `side` pixels high (or wide)."""
  out = {}
  state = _Spatial((_Segment(3, INPUT, side),), side)
  if isinstance(module, ResNet):
    out['conv1'] = state = _conv(state, module.conv1)
    out['bn1'] = out['relu'] = state
    out['maxpool'] = state = _pool(state, module.maxpool)
    for stage in range(1, 5):
      name = f'layer{stage}'
      out[name] = state = _sequential(state, getattr(module, name), name, out)
    out['avgpool'] = state = _adaptive(state, module.avgpool, 'avgpool')
    out['fc'] = _not_spatial(state, 'fc', 'a Linear layer, not a spatial map')
    return out
  out['features'] = state = _sequential(state, module.features, 'features', out)
  if isinstance(module, L.FeaturesPoolClassifier):  # AlexNet, VGG
    out['avgpool'] = state = _adaptive(state, module.avgpool, 'avgpool')
    state = _not_spatial(state, 'classifier', 'after the flatten, not a spatial map')
  state = _sequential(state, module.classifier, 'classifier', out)
  out['classifier'] = _not_spatial(state, 'classifier', 'the logits, not a spatial map')
  return out


@functools.cache
def _fields(name: str, num_classes: int, side: int):
  return _walk(models.build_abstract(name, num_classes), side)


def _image_hw(image_size) -> tuple[int, int]:
  if isinstance(image_size, (int, np.integer)):
    return int(image_size), int(image_size)
  h, w = (int(v) for v in image_size)
  return h, w


def _states(model, layer: str | None, image_size):
  """(architecture name, {layer: state} along H, the same along W) of a Model or a name,
  checking `layer` (when given)."""
  if isinstance(model, str):
    models.architecture(model)  # unknown name: one-line error
    name, num_classes, names = model, None, None  # the architecture's default
    default = shapes.IMAGE_SIZE if model in models.SELF_TRAINED else 224
  elif hasattr(model, 'layer_names') and hasattr(model, 'name'):
    name, num_classes, names = model.name, model.num_classes, model.layer_names
    default = model.image_size
  else:
    raise InputError(f'receptive fields need a model from jaxviz.load_model or an '
                     f'architecture name, not {model!r}')
  h, w = _image_hw(default if image_size is None else image_size)
  if min(h, w) < 1:
    raise InputError(f'image size {(h, w)} must be positive')
  fh, fw = _fields(name, num_classes, h), _fields(name, num_classes, w)
  if names is not None:
    fh = {k: v for k, v in fh.items() if k in names}
  if layer is not None:
    if layer not in fh:
      raise InputError(f'unknown layer {layer!r} for {name}; see Model.layer_names')
    for state in (fh[layer], fw[layer]):
      if isinstance(state, _NotSpatial):
        raise InputError(f'{name} {layer} has no receptive field: {state.reason}; '
                         'use a convolutional layer before it')
  return name, fh, fw


def _segment(name: str, layer: str, state: _Spatial, channel) -> _Segment:
  if channel is None:
    return _joined(state.segments)
  count = sum(g.count for g in state.segments)
  if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)) \
      or not 0 <= channel < count:
    raise InputError(f'channel {channel!r} out of range [0, {count}) for {name} {layer}')
  for g in state.segments:
    if channel < g.count:
      return g
    channel -= g.count
  raise AssertionError('unreachable')


def receptive_field(model, layer: str, *, channel: int | None = None,
                    image_size=None) -> ReceptiveField:
  """The exact receptive field of a layer's units (see the module docstring).

  Args:
    model: a `jaxviz.Model` or an architecture name ('vgg16', ...).
    layer: one of `model.layer_names` with a spatial output.
    channel: a channel of the layer: its own field, which within a concatenation (a Fire
      module's output and the pools after it) may be smaller than the layer's; None: the
      union over the layer's channels.
    image_size: the input side or (height, width), which only decides whether an
      adaptive average pool is the identity (default: the model's `image_size`, 224 for
      ImageNet models, 64 for 'shapes').

  Returns:
    A `ReceptiveField(size, jump, start)`: unit i's field is input rows (and columns)
    start + i * jump ... start + i * jump + size - 1.

  Raises:
    InputError: unknown layer, a layer with no spatial map, or a channel out of range.

  References:
    Araujo, Norris & Sim, Computing Receptive Fields of Convolutional Neural Networks,
    Distill 2019, "Single-path networks".
  """
  name, fh, _ = _states(model, layer, image_size)
  return _segment(name, layer, fh[layer], channel).field


def receptive_fields(model, *, image_size=None) -> dict[str, ReceptiveField]:
  """{layer: ReceptiveField} for every spatial layer of the model, in forward order
  (the union over channels, as `receptive_field(model, layer)`)."""
  _, fh, fw = _states(model, None, image_size)
  return {layer: _joined(state.segments).field for layer, state in fh.items()
          if isinstance(state, _Spatial) and isinstance(fw[layer], _Spatial)}


def input_extent(model, layer: str, image_size, *, channel: int | None = None
                 ) -> tuple[int, int]:
  """(rows, columns): the layer reads only the image's first `rows` rows and `columns`
  columns; the rest no unit sees.

  A floor-mode convolution or pool whose windows do not tile its input exactly drops the
  last rows: SqueezeNet 1.1's 3x3 stride-2 stem has 111 units on a 224 px image, which
  read rows 0..222, so row 223 reaches no later layer. Pass the result as `field_box`'s
  `image_size` to clip a field to the pixels that influence the unit (what the
  brute-force test proves); the crops keep the whole field.

  Args:
    model, layer, channel: as `receptive_field`.
    image_size: the input side, or (height, width).

  Returns:
    (rows, columns), each at most the image's.
  """
  name, fh, fw = _states(model, layer, image_size)
  return (_segment(name, layer, fh[layer], channel).extent,
          _segment(name, layer, fw[layer], channel).extent)


def field_box(field: ReceptiveField, i: int, j: int, image_size) -> tuple[int, int, int, int]:
  """Unit (i, j)'s field clipped to the image: (top, left, bottom, right), bottom and
  right exclusive, so `image[top:bottom, left:right]` is the part of the field that lies
  on the image.

  Args:
    field: the layer's `ReceptiveField`.
    i, j: the unit's row and column in the layer's map.
    image_size: the input side, or (height, width).

  Raises:
    InputError: a negative unit, or one whose field misses the image altogether (a unit
      outside the layer's map).
  """
  h, w = _image_hw(image_size)
  i, j = int(i), int(j)
  if i < 0 or j < 0:
    raise InputError(f'unit ({i}, {j}) has a negative index')
  (t, b), (l, r) = field.span(i), field.span(j)
  box = (max(t, 0), max(l, 0), min(b, h), min(r, w))
  if box[0] >= box[2] or box[1] >= box[3]:
    raise InputError(f'the field of unit ({i}, {j}) (rows {t}..{b - 1}, columns '
                     f'{l}..{r - 1}) misses the {h}x{w} image: the unit is outside the map')
  return box


def crop(image, field: ReceptiveField, i: int, j: int, pad_value=0):
  """The whole field of unit (i, j): a (size, size, C) crop of an (H, W, C) image (or
  (size, size) of an (H, W) one), the same shape for every unit.

  Where the field runs past the image border (padding in the network, or a ceil-mode
  pool's last window) the crop holds `pad_value`: 0 is black for uint8 or [0, 1] pixels;
  pass the normalised mean colour's value (or NaN, for a float image, to mark the border)
  as the figure needs. The image's part of the field sits where it does in the field, so
  a crop's centre is always the field's centre.

  Args:
    image: (H, W, C) or (H, W) array (numpy or jax; a numpy array comes back).
    field, i, j: as `field_box`.
    pad_value: the value outside the image.

  Returns:
    (field.size, field.size[, C]) array of the image's dtype.
  """
  image = np.asarray(image)
  if image.ndim not in (2, 3):
    raise InputError(f'crop expects one (H, W, C) or (H, W) image, got shape {image.shape}')
  top, left, bottom, right = field_box(field, i, j, image.shape[:2])
  out = np.full((field.size, field.size) + image.shape[2:], pad_value, image.dtype)
  t, l = field.span(int(i))[0], field.span(int(j))[0]
  out[top - t:bottom - t, left - l:right - l] = image[top:bottom, left:right]
  return out
