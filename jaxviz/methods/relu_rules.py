"""Every ReLU of a function, given another backward rule: guided backprop, DeconvNet.

Guided backpropagation (Springenberg et al. 2015) and the DeconvNet (Zeiler & Fergus
2014) are the ordinary backward pass with each ReLU's rule replaced; max-pool switches and
transposed convolutions stay what autodiff makes of them. `with_relu_rule(fn, rule)`
traces `fn` to a jaxpr and evaluates it again with every ReLU, `max(x, 0)` written
directly or through `jax.nn.relu`, bound as a `custom_vjp` function with the chosen
backward rule. No model code changes: it works on any `apply_fn`, the classifier's ReLUs
and SqueezeNet's last one included.

Rules, for a ReLU with input x and incoming gradient g:
  'gradient'   g * (x > 0)              (autodiff's own; the function is unchanged)
  'guided'     g * (x > 0) * (g > 0)    (Springenberg et al. 2015, sec. 3.4, Fig. 1)
  'deconvnet'  g * (g > 0)              (Zeiler & Fergus 2014, sec. 2.1, "rectification")

ReLUs inside the function's own control flow (a scan, a while loop, a cond) are left as
they are; `jit` sub-programs are followed. `count_relus` says how many were found.
"""

import jax
import jax.numpy as jnp
from jax.extend import core as jcore

from jaxviz._xla_cpu.canonical import _CALLS, _bind, _walk
from jaxviz import validation

RULES = ('gradient', 'guided', 'deconvnet')


@jax.custom_vjp
def guided_relu(x):
  return jax.lax.max(x, jnp.zeros((), x.dtype))


guided_relu.defvjp(lambda x: (guided_relu(x), x),
                   lambda x, g: (jnp.where((x > 0) & (g > 0), g, jnp.zeros((), g.dtype)),))


@jax.custom_vjp
def deconvnet_relu(x):
  return jax.lax.max(x, jnp.zeros((), x.dtype))


deconvnet_relu.defvjp(lambda x: (deconvnet_relu(x), None),
                      lambda _, g: (jnp.where(g > 0, g, jnp.zeros((), g.dtype)),))

_RULE_RELU = {'guided': guided_relu, 'deconvnet': deconvnet_relu}


def _is_zero_literal(v) -> bool:
  return (isinstance(v, jcore.Literal) and jnp.shape(v.val) == ()
          and float(v.val) == 0.0)


def _relu_operand(eqn):
  """The index of x in `max(x, 0)` / `max(0, x)`, or None when `eqn` is not a ReLU."""
  if (eqn.primitive.name != 'max' or len(eqn.invars) != 2
      or not jnp.issubdtype(eqn.outvars[0].aval.dtype, jnp.floating)):
    return None
  for i in (0, 1):
    other = eqn.invars[1 - i]
    if _is_zero_literal(other) and not isinstance(eqn.invars[i], jcore.Literal):
      return i
  return None


def _is_relu_jaxpr(jaxpr) -> bool:
  """A jaxpr that is one ReLU of its single input, possibly inside `jit`s (jax.nn.relu)."""
  while len(jaxpr.eqns) == 1 and jaxpr.eqns[0].primitive.name in _CALLS:
    jaxpr = jaxpr.eqns[0].params[_CALLS[jaxpr.eqns[0].primitive.name]].jaxpr
  return (len(jaxpr.eqns) == 1 and len(jaxpr.invars) == 1
          and _relu_operand(jaxpr.eqns[0]) is not None
          and jaxpr.eqns[0].invars[_relu_operand(jaxpr.eqns[0])] is jaxpr.invars[0])


def _relu_input(eqn):
  """The index of a ReLU equation's input (plain max or a jax.nn.relu call), or None."""
  if eqn.primitive.name == 'custom_jvp_call':
    return 0 if _is_relu_jaxpr(eqn.params['call_jaxpr'].jaxpr) else None
  return _relu_operand(eqn)


def _eval(jaxpr, consts, args, relu):
  """Evaluates `jaxpr` with every ReLU equation bound as `relu` (canonical's walker
  follows the `jit` sub-programs)."""

  def step(eqn, invals, path):
    del path
    i = _relu_input(eqn)
    if i is None:
      return _bind(eqn, invals)
    return [relu(jnp.broadcast_to(invals[i], eqn.outvars[0].aval.shape))]

  return _walk(jaxpr, consts, args, step)


def with_relu_rule(fn, rule: str):
  """`fn` with every ReLU's backward pass following `rule` (see the module docstring).

  Args:
    fn: a function of pytrees of arrays returning a pytree of arrays (an apply_fn).
    rule: 'gradient' (returns `fn` itself), 'guided' or 'deconvnet'.

  Returns:
    A function with the same signature and the same forward values; only its
    derivatives differ. It retraces `fn` on each call: call it inside jit.
  """
  validation.check_choice(rule, RULES, 'rule')
  if rule == 'gradient':
    return fn
  relu = _RULE_RELU[rule]

  def wrapped(*args):
    closed, shapes = jax.make_jaxpr(fn, return_shape=True)(*args)
    out = _eval(closed.jaxpr, closed.consts, jax.tree.leaves(args), relu)
    return jax.tree.unflatten(jax.tree.structure(shapes), out)

  return wrapped


def count_relus(fn, *args) -> int:
  """How many ReLUs `with_relu_rule` rewrites in `fn(*args)` (calls of it in a loop
  body count once)."""
  closed = jax.make_jaxpr(fn)(*args)
  count = [0]

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name in _CALLS:
        walk(eqn.params[_CALLS[eqn.primitive.name]].jaxpr)
      elif _relu_input(eqn) is not None:
        count[0] += 1

  walk(closed.jaxpr)
  return count[0]
