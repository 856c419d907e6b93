"""Rewrites a function's convolutions into the layout XLA:CPU's fast kernels need.

Why this exists: the gradient of a convolution with respect to its input is itself a
convolution, which JAX emits with the kernel's feature dimensions swapped (an HWOI kernel,
`dim_labels=b01f_01oi->b01f` in HLO) rather than transposing the kernel. XLA:CPU's
`ConvCanonicalization` pass inserts that transpose so that the convolution can run on
its fast library kernels (Eigen, YNNPACK), but it only visits the *entry* computation
(xla/service/cpu/conv_canonicalization.cc loops over `module->entry_computation()`). A
gradient step inside a `lax.while_loop` or `lax.scan` body is not in the entry
computation: its input-gradient convolutions stay non-canonical and run on XLA's generic
emitted loops instead, several times slower (docs/porting.md).

`canonical_convs(fn)` traces `fn` to a jaxpr and re-evaluates it with every
convolution whose operands are not NHWC / HWIO / NHWC written as explicit transposes
around a canonical convolution, which is what XLA does itself at the top level. The
transposes only move values: at the top level the results are bit for bit those of `fn`
(tested); in a loop body they now come from the fast kernels, whose float32 round-off
can differ from the slow path's (float64 results still equal the torch reference to
1e-9). Convolutions inside control flow of `fn` itself (a cond or scan in the model) are
left as they are; only `jit` and `closed_call` sub-programs are followed.

XLA:CPU does not hoist those kernel transposes out of the loop either, so
`canonical_convs_ahead(fn, params, *example_args)`, called before the loop, lays out the
kernels that depend on the parameters alone once, and returns the body to call inside
the loop (the input-optimisation driver uses it).
"""

import jax
import jax.numpy as jnp
from jax.extend import core as jcore

_CALLS = {'jit': 'jaxpr', 'pjit': 'jaxpr', 'closed_call': 'call_jaxpr'}


def _specs(dimension_numbers):
  """(lhs, rhs, out) specs and the canonical NHWC / HWIO ones."""
  lhs_spec, rhs_spec, out_spec = (tuple(s) for s in dimension_numbers)
  nd = len(lhs_spec)
  # Specs list (batch or out-feature, feature or in-feature, spatial...) dimensions.
  nhwc = (0, nd - 1, *range(1, nd - 1))
  hwio = (nd - 1, nd - 2, *range(nd - 2))
  return lhs_spec, rhs_spec, out_spec, nhwc, hwio


def _canonical_kernel(rhs, dimension_numbers):
  """The kernel in HWIO layout (a transpose), or None if it is in HWIO already."""
  _, rhs_spec, _, _, hwio = _specs(dimension_numbers)
  if rhs_spec == hwio:
    return None
  return jnp.transpose(rhs, (*rhs_spec[2:], rhs_spec[1], rhs_spec[0]))


def _canonical_conv(lhs, rhs, *, dimension_numbers, canonical_rhs=None, **params):
  """conv_general_dilated in NHWC / HWIO / NHWC (transposes around it); None if it is.

  canonical_rhs: `rhs` already in HWIO layout (transposed ahead, outside a loop).
  """
  lhs_spec, rhs_spec, out_spec, nhwc, hwio = _specs(dimension_numbers)
  nd = len(lhs_spec)
  if lhs_spec == nhwc and rhs_spec == hwio and out_spec == nhwc:
    return None
  if lhs_spec != nhwc:
    lhs = jnp.transpose(lhs, (lhs_spec[0], *lhs_spec[2:], lhs_spec[1]))
  if canonical_rhs is not None:
    rhs = canonical_rhs
  elif rhs_spec != hwio:
    rhs = _canonical_kernel(rhs, dimension_numbers)
  out = jax.lax.conv_general_dilated_p.bind(
      lhs, rhs, dimension_numbers=jax.lax.ConvDimensionNumbers(nhwc, hwio, nhwc), **params)
  if out_spec != nhwc:
    # Output axis i of the NHWC result is axis `order[i]` of the requested layout.
    order = (out_spec[0], *out_spec[2:], out_spec[1])
    out = jnp.transpose(out, [order.index(d) for d in range(nd)])
  return out


def _bind(eqn, invals):
  with eqn.ctx.manager:
    out = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
  return out if eqn.primitive.multiple_results else [out]


def _walk(jaxpr, consts, args, step, path=()):
  """Evaluates `jaxpr` equation by equation: `step(eqn, invals, path)` returns each
  equation's outputs, except for `jit` and `closed_call` sub-programs, which are walked
  into with their call equation's id appended to `path` (one sub-program can be called
  from several places)."""
  env = {}

  def read(v):
    return v.val if isinstance(v, jcore.Literal) else env[v]

  env.update(zip(jaxpr.constvars, consts))
  env.update(zip(jaxpr.invars, args))
  for eqn in jaxpr.eqns:
    invals = [read(v) for v in eqn.invars]
    if eqn.primitive.name in _CALLS:
      sub = eqn.params[_CALLS[eqn.primitive.name]]
      out = _walk(sub.jaxpr, sub.consts, invals, step, path + (id(eqn),))
    else:
      out = step(eqn, invals, path)
    for v, value in zip(eqn.outvars, out):
      if not isinstance(v, jcore.DropVar):
        env[v] = value
  return [read(v) for v in jaxpr.outvars]


def _eval(jaxpr, consts, *args, kernels=None):
  """Evaluates `jaxpr` with canonical convolutions. kernels: {(path, id(eqn)): HWIO
  kernel} made ahead by `_kernels_ahead` for the same jaxpr."""

  def step(eqn, invals, path):
    if eqn.primitive.name == 'conv_general_dilated':
      ahead = None if kernels is None else kernels.get((path, id(eqn)))
      conv = _canonical_conv(*invals, canonical_rhs=ahead, **eqn.params)
      if conv is not None:
        return [conv]
    return _bind(eqn, invals)

  return _walk(jaxpr, consts, args, step)


_UNKNOWN = object()


def _kernels_ahead(jaxpr, consts, *args, kernels):
  """Fills `kernels` with the HWIO kernel of every non-canonical convolution whose kernel
  depends only on the known `args` (the others are _UNKNOWN): what a loop body would
  otherwise transpose at every step. Other known values are computed only to get there
  (XLA drops those that nothing uses)."""

  def step(eqn, invals, path):
    if eqn.primitive.name == 'conv_general_dilated' and invals[1] is not _UNKNOWN:
      kernel = _canonical_kernel(invals[1], eqn.params['dimension_numbers'])
      if kernel is not None:
        kernels[(path, id(eqn))] = kernel
    if any(v is _UNKNOWN for v in invals):
      return [_UNKNOWN] * len(eqn.outvars)
    return _bind(eqn, invals)

  _walk(jaxpr, consts, args, step)


def canonical_convs(fn):
  """`fn` with its convolutions in XLA:CPU's canonical layout (see the module docstring).

  Args:
    fn: a function of pytrees of arrays (tracers included), returning a pytree of arrays.
      It is traced once per call of the wrapper, so call the wrapper inside the traced
      loop body, not per element.

  Returns:
    A function with the same signature and the same results (see the module docstring).
  """

  def wrapped(*args):
    closed, shapes = jax.make_jaxpr(fn, return_shape=True)(*args)
    out = _eval(closed.jaxpr, closed.consts, *jax.tree.leaves(args))
    return jax.tree.unflatten(jax.tree.structure(shapes), out)

  return wrapped


def canonical_convs_ahead(fn, invariant, *example_args):
  """`canonical_convs(fn)` for a loop body in which fn's first argument does not change.

  XLA:CPU does not hoist transposes out of loops, so a loop body written with
  `canonical_convs` re-lays-out every kernel at every step. Call this outside the loop with `invariant` (the
  model's parameters) and arguments shaped as the loop will pass them; it lays out,
  once, every kernel that depends on `invariant` alone.

  Returns:
    `body(*args)`, to call inside the loop: the value of `fn(invariant, *args)`, with
    the same canonical convolutions as `canonical_convs(fn)` and so the same results.
  """
  closed, shapes = jax.make_jaxpr(fn, return_shape=True)(invariant, *example_args)
  known = jax.tree.leaves(invariant)
  unknown = [_UNKNOWN] * (len(closed.jaxpr.invars) - len(known))
  kernels = {}
  _kernels_ahead(closed.jaxpr, closed.consts, *known, *unknown, kernels=kernels)

  def body(*args):
    out = _eval(closed.jaxpr, closed.consts, *known, *jax.tree.leaves(args), kernels=kernels)
    return jax.tree.unflatten(jax.tree.structure(shapes), out)

  return body
