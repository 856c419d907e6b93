"""The README's promises about the repository stay true."""

import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(path):
  with open(os.path.join(REPO, path)) as f:
    return f.read()


def test_ci_runs_the_readme_test_command():
  readme = _read('README.md')
  first_screen = readme.split('\n## ', 2)[:2]
  commands = re.findall(r'^(?:\$ )?(\.venv/bin/python -m pytest[^\n]*|python3 -m venv[^\n]*)$',
                        '\n'.join(first_screen), flags=re.M)
  assert len(commands) == 2, commands  # exactly two set-up commands on the first screen
  install_and_run, test = commands
  assert 'pip install' in install_and_run and 'scripts/' in install_and_run
  assert test in _read('.ci/run').splitlines()
