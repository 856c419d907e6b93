"""Rewrites a function's convolutions into the layout XLA:CPU's fast kernels need.

Why this exists: the gradient of a convolution with respect to its input is itself a
convolution, which JAX emits with the kernel's feature dimensions swapped (an HWOI kernel,
`dim_labels=b01f_01oi->b01f` in HLO) rather than transposing the kernel. XLA:CPU's
`ConvCanonicalization` pass inserts that transpose so that the convolution can run on
its fast library kernels (Eigen, YNNPACK), but it only visits the *entry* computation
(xla/service/cpu/conv_canonicalization.cc loops over `module->entry_computation()`). A
gradient step inside a `lax.while_loop` or `lax.scan` body is not in the entry
computation: its input-gradient convolutions stay non-canonical and run on XLA's generic
emitted loops instead. On VGG16 at 112x112 that made a fooling step inside the while_loop
cost 1.4-2.7x the same step jitted on its own (one or two images); every backward
convolution of the loop body read `01oi` in the compiled HLO, none was a YNNPACK fusion.

`canonical_convs(fn)` traces `fn` to a jaxpr and re-evaluates it with every
convolution whose operands are not NHWC / HWIO / NHWC written as explicit transposes
around a canonical convolution, which is what XLA does itself at the top level. The
transposes only move values: at the top level the results are bit for bit those of `fn`
(tested); in a loop body they now come from the fast kernels, whose float32 round-off
can differ from the slow path's (float64 results still equal the torch reference to
1e-9). Convolutions inside control flow of `fn` itself (a cond or scan in the model) are
left as they are; only `jit` and `closed_call` sub-programs are followed.
"""

import jax
import jax.numpy as jnp
from jax.extend import core as jcore

_CALLS = {'jit': 'jaxpr', 'pjit': 'jaxpr', 'closed_call': 'call_jaxpr'}


def _canonical_conv(lhs, rhs, *, dimension_numbers, **params):
  """conv_general_dilated in NHWC / HWIO / NHWC (transposes around it); None if it is."""
  lhs_spec, rhs_spec, out_spec = (tuple(s) for s in dimension_numbers)
  nd = len(lhs_spec)
  # Specs list (batch or out-feature, feature or in-feature, spatial...) dimensions.
  nhwc = (0, nd - 1, *range(1, nd - 1))
  hwio = (nd - 1, nd - 2, *range(nd - 2))
  if lhs_spec == nhwc and rhs_spec == hwio and out_spec == nhwc:
    return None
  if lhs_spec != nhwc:
    lhs = jnp.transpose(lhs, (lhs_spec[0], *lhs_spec[2:], lhs_spec[1]))
  if rhs_spec != hwio:
    rhs = jnp.transpose(rhs, (*rhs_spec[2:], rhs_spec[1], rhs_spec[0]))
  out = jax.lax.conv_general_dilated_p.bind(
      lhs, rhs, dimension_numbers=jax.lax.ConvDimensionNumbers(nhwc, hwio, nhwc), **params)
  if out_spec != nhwc:
    # Output axis i of the NHWC result is axis `order[i]` of the requested layout.
    order = (out_spec[0], *out_spec[2:], out_spec[1])
    out = jnp.transpose(out, [order.index(d) for d in range(nd)])
  return out


def _eval(jaxpr, consts, *args):
  env = {}

  def read(v):
    return v.val if isinstance(v, jcore.Literal) else env[v]

  env.update(zip(jaxpr.constvars, consts))
  env.update(zip(jaxpr.invars, args))
  for eqn in jaxpr.eqns:
    invals = [read(v) for v in eqn.invars]
    name = eqn.primitive.name
    out = None
    if name == 'conv_general_dilated':
      conv = _canonical_conv(*invals, **eqn.params)
      out = None if conv is None else [conv]
    elif name in _CALLS:
      sub = eqn.params[_CALLS[name]]
      out = _eval(sub.jaxpr, sub.consts, *invals)
    if out is None:
      with eqn.ctx.manager:
        out = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
      if not eqn.primitive.multiple_results:
        out = [out]
    for v, value in zip(eqn.outvars, out):
      if not isinstance(v, jcore.DropVar):
        env[v] = value
  return [read(v) for v in jaxpr.outvars]


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
