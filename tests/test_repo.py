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


def _imports(path: str, package: str) -> set[str]:
  """The modules of `package` that the file at `path` imports, at any depth in the file."""
  import ast
  found = set()
  for node in ast.walk(ast.parse(_read(path))):
    if isinstance(node, ast.Import):
      found |= {a.name for a in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      found.add(node.module)
      found |= {f'{node.module}.{a.name}' for a in node.names}
  return {m for m in found if m == package or m.startswith(package + '.')}


def _modules(package: str) -> dict[str, str]:
  """{dotted module name: path} for every module of `package`."""
  modules = {}
  for folder, _, files in os.walk(os.path.join(REPO, package)):
    for name in files:
      if name.endswith('.py'):
        path = os.path.relpath(os.path.join(folder, name), REPO)
        dotted = path[:-3].replace(os.sep, '.')
        modules[dotted[:-len('.__init__')] if dotted.endswith('.__init__') else dotted] = path
  return modules


def test_the_library_has_no_import_cycle_and_no_private_cross_module_import():
  modules = _modules('jaxviz')
  graph = {}
  for name, path in modules.items():
    deps = {d if d in modules else d.rsplit('.', 1)[0] for d in _imports(path, 'jaxviz')}
    graph[name] = {d for d in deps if d in modules and d != name}
    # `from jaxviz.x import _name` / `jaxviz.x._mod` reaching into another package's
    # private parts: only a package's own modules may (jaxviz._xla_cpu is the library's).
    for dep in _imports(path, 'jaxviz'):
      private = [p for p in dep.split('.')[1:] if p.startswith('_') and p != '__init__']
      owner = dep.split('.')[:2]
      if private and private[0] != '_xla_cpu':
        assert name.split('.')[:2] == owner, f'{name} imports private {dep}'
  # A package's __init__ importing its own modules is not a cycle of the import graph.
  edges = {m: {d for d in deps if not m.startswith(d + '.') and not
               (modules[m].endswith('__init__.py') and d.startswith(m + '.'))}
           for m, deps in graph.items()}
  state = {}

  def visit(m, stack):
    state[m] = 'open'
    for d in sorted(edges[m]):
      assert state.get(d) != 'open', 'import cycle: ' + ' -> '.join(stack + [m, d])
      if d not in state:
        visit(d, stack + [m])
    state[m] = 'done'

  for m in sorted(edges):
    if m not in state:
      visit(m, [])
  assert len(modules) > 20  # the walk found the library


def test_scripts_use_no_private_library_name():
  for name in os.listdir(os.path.join(REPO, 'scripts')):
    if name.endswith('.py'):
      for dep in _imports(os.path.join('scripts', name), 'jaxviz'):
        assert not any(p.startswith('_') for p in dep.split('.')[1:]), (name, dep)
