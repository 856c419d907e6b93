"""jaxviz's opt-in XLA:CPU setting (jaxviz/_xla_flags.py): applied on import when asked
for, kept out of training."""

import os
import subprocess
import sys

FLAG = '--xla_cpu_experimental_ynn_fusion_type='
REPORT = ('import os, sys; {before}import jaxviz; from jaxviz import _xla_flags; '
          'print(jaxviz.XLA_DEFAULTS_APPLIED); print(os.environ.get("XLA_FLAGS")); '
          'print(_xla_flags.env_without_defaults().get("XLA_FLAGS"))')


def _report(before='', **env):
  environ = {k: v for k, v in os.environ.items()
             if k not in ('XLA_FLAGS', 'JAXVIZ_XLA_DEFAULTS', 'JAXVIZ_XLA_FLAGS_BEFORE')}
  environ.update(env)
  out = subprocess.run([sys.executable, '-c', REPORT.format(before=before)], env=environ,
                       capture_output=True, text=True, check=True).stdout.splitlines()
  return out[0] == 'True', out[1], out[2]


def test_off_by_default():
  assert _report() == (False, 'None', 'None')
  assert _report(XLA_FLAGS='--xla_cpu_enable_fast_math=false')[0] is False


def test_applied_on_import_keeping_the_users_flags():
  assert _report(JAXVIZ_XLA_DEFAULTS='1') == (True, FLAG, 'None')
  # The user's own flags stay, ours are appended; a child process gets the user's back.
  own = '--xla_cpu_enable_fast_math=false'
  assert _report(XLA_FLAGS=own, JAXVIZ_XLA_DEFAULTS='1') == (True, f'{own} {FLAG}', own)


def test_a_child_of_a_child_still_gets_the_users_flags():
  # pytest-xdist workers inherit the controller's XLA_FLAGS, ours included: the training
  # process they start must still run without our flag.
  own = '--xla_cpu_enable_fast_math=false'
  inherited = dict(XLA_FLAGS=f'{own} {FLAG}', JAXVIZ_XLA_FLAGS_BEFORE=own,
                   JAXVIZ_XLA_DEFAULTS='1')
  assert _report(**inherited) == (True, f'{own} {FLAG}', own)
  assert _report(XLA_FLAGS=FLAG, JAXVIZ_XLA_FLAGS_BEFORE='',
                 JAXVIZ_XLA_DEFAULTS='1') == (True, FLAG, 'None')


def test_off_when_not_asked_set_by_the_user_or_too_late():
  assert _report(JAXVIZ_XLA_DEFAULTS='0') == (False, 'None', 'None')
  # The user chose a value for the flag: theirs wins, and it is not ours.
  other = '--xla_cpu_experimental_ynn_fusion_type=dot'
  assert _report(XLA_FLAGS=other, JAXVIZ_XLA_DEFAULTS='1') == (False, other, other)
  # A backend already exists: XLA has read XLA_FLAGS, so changing it would be a lie.
  late = _report(before='import jax; jax.numpy.zeros(1).block_until_ready(); ',
                 JAXVIZ_XLA_DEFAULTS='1')
  assert late == (False, 'None', 'None')
