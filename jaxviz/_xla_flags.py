"""An opt-in XLA:CPU setting jaxviz applies when it is imported: JAXVIZ_XLA_DEFAULTS=1.

`--xla_cpu_experimental_ynn_fusion_type=` (an empty list) stops XLA:CPU from handing
convolutions to its YNNPACK fusions; they then run on XLA's default (Eigen) kernels, which
are faster on these networks' layers: SqueezeNet 1.1's input-gradient step at batch 16
took 0.17-0.19 s against 0.27-0.28 s, VGG16's at batch 1 0.37-0.38 s against 0.39-0.40 s
(2-core AMD EPYC, alternating processes; README, Performance). Results change only by
float rounding (the equivalence tests hold either way).

It is a trade-off, so it is off unless asked for: VGG16's batched steps run 20-25% slower
with it, the float64 VGG equivalence tests many times slower (a CI run with it on did not
finish them in 20 minutes), and the shapes model trains 2x slower, so `jaxviz.training.ensure_weights` always trains in a
child process without it. With `JAXVIZ_XLA_DEFAULTS=1` it is applied (it concerns only
the CPU backend) unless XLA_FLAGS sets that flag already, and only if no JAX backend
exists yet (XLA reads XLA_FLAGS once, when it creates a backend).
"""

import os

CPU_FLAGS = ('--xla_cpu_experimental_ynn_fusion_type=',)
# XLA_FLAGS as it was before jaxviz added to it, kept in the environment so that child
# processes (pytest-xdist workers, the training process) can tell the user's flags from
# ours; unset when jaxviz added nothing.
_BEFORE = 'JAXVIZ_XLA_FLAGS_BEFORE'


def apply_defaults() -> bool:
  """Adds CPU_FLAGS to XLA_FLAGS if still possible; returns whether they are in effect."""
  if os.environ.get('JAXVIZ_XLA_DEFAULTS', '0') != '1':
    return False
  flags = os.environ.get('XLA_FLAGS', '')
  missing = [f for f in CPU_FLAGS if f.split('=')[0] not in flags]
  if not missing:
    return all(f in flags.split() for f in CPU_FLAGS)
  from jax._src import xla_bridge  # no public way to ask whether a backend exists
  if xla_bridge.backends_are_initialized():
    return False
  os.environ[_BEFORE] = flags
  os.environ['XLA_FLAGS'] = ' '.join([flags, *missing]).strip()
  return True


def env_without_defaults() -> dict:
  """This process's environment as it would be without jaxviz's XLA defaults (for a child
  process): the caller's own XLA_FLAGS, and JAXVIZ_XLA_DEFAULTS=0."""
  env = dict(os.environ, JAXVIZ_XLA_DEFAULTS='0')
  if _BEFORE in env:
    user = env.pop(_BEFORE)
    if user:
      env['XLA_FLAGS'] = user
    else:
      env.pop('XLA_FLAGS', None)
  return env
