"""Shared set-up and fixtures. Nothing here imports torch when it is loaded: the tests that
compare against torch import it themselves and skip without it (`model64` imports
torch_helpers only when such a test asks for it), so that the rest of the suite runs where
the [test] extra's torch is not installed (`pytest -m "not slow"`)."""

import atexit
import os
import shutil
import tempfile

import numpy as np
import pytest

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# Under pytest-xdist two worker processes share the cores: torch's OpenMP threads must
# sleep, not spin, while they wait, or the other worker's XLA slows torch 20-60x.
WORKERS = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
if WORKERS > 1:
  os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
# glibc reads this when a process starts, so it reaches the xdist workers and the scripts
# the tests run (this file is imported in the controlling process before they start): XLA
# allocates fresh temporary buffers per call, and transparent huge pages spare most of
# their page faults (the shapes model trains ~30% faster). See docs/performance.md.
os.environ.setdefault('GLIBC_TUNABLES', 'glibc.malloc.hugetlb=1')
# One XLA compilation cache for every script the tests run, in every worker: a model's
# random init (~50 small programs, ~10 s on two cores) and the programs the scripts share
# compile once per test run, not once per process. Made here, in the controlling process,
# so that the workers inherit it, and removed when the run ends. A size limit turns on
# JAX's file lock around the cache's reads and writes: processes write it at once. Set
# $JAXVIZ_TEST_XLA_CACHE to a folder to keep the cache between runs (it is not removed).
if 'JAXVIZ_TEST_XLA_CACHE' not in os.environ:
  os.environ['JAXVIZ_TEST_XLA_CACHE'] = tempfile.mkdtemp(prefix='jaxviz-test-xla-')
  atexit.register(shutil.rmtree, os.environ['JAXVIZ_TEST_XLA_CACHE'], ignore_errors=True)
# The environment of a script run by a test: merge into os.environ.
XLA_CACHE = {'JAX_COMPILATION_CACHE_DIR': os.environ['JAXVIZ_TEST_XLA_CACHE'],
             'JAX_COMPILATION_CACHE_MAX_SIZE': str(16 << 30)}


def rel_err(a, b) -> float:
  """Relative L2 error ||a - b|| / ||b|| over the whole array; ||a|| when b is all zero."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  scale = np.linalg.norm(b)
  return float(np.linalg.norm(a - b) / (scale if scale > 0 else 1.0))


def counting(apply_fn):
  """(apply_fn that records the shape of every trace of it, the list of shapes): a
  second call of a compiled method that traces nothing has compiled nothing anew."""
  traces = []

  def counted(params, x):
    traces.append(x.shape)
    return apply_fn(params, x)

  return counted, traces


def counting_hooks(model):
  """(a copy of the Model whose hooked_apply records the shape of every trace of it, the
  list of shapes), emptied after `layer_names`' own trace: as `counting`, for the methods
  that read a layer."""
  import dataclasses
  traces = []

  def counted(params, x, hooks):
    traces.append(x.shape)
    return model.hooked_apply(params, x, hooks)

  counted_model = dataclasses.replace(model, hooked_apply=counted)
  assert counted_model.layer_names == model.layer_names  # traced once, cached
  traces.clear()
  return counted_model, traces


@pytest.hookimpl(tryfirst=True)  # before -m selects on the marks
def pytest_collection_modifyitems(items):
  """Every test that needs the trained shapes model (shapes_cache, directly or through
  another fixture) is slow: training it takes ~2.5 minutes on two cores."""
  for item in items:
    if 'shapes_cache' in getattr(item, 'fixturenames', ()):
      item.add_marker(pytest.mark.slow)


@pytest.fixture(scope='session')
def weights_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('weights'))


@pytest.fixture(scope='module')
def model64(request, weights_dir):
  """The test module's random-init torchvision model (its NAME and SEED), converted to
  jaxviz and loaded in float64: the model the float64 certifications compare against
  torch_helpers.torch_model(NAME, SEED). Imports torch (through torch_helpers)."""
  import jax
  import jax.numpy as jnp

  import jaxviz
  from torch_helpers import converted_weights
  name, seed = request.module.NAME, request.module.SEED
  with jax.enable_x64(True):  # return, not yield: x64 must not leak into other tests
    return jaxviz.load_model(name, converted_weights(name, seed, weights_dir),
                             dtype=jnp.float64)


@pytest.fixture(scope='session')
def shapes_cache(tmp_path_factory):
  """A jaxviz cache holding the trained shapes model (seed 0), trained here once per
  test run as load_model('shapes') does on a fresh machine. $JAXVIZ_TEST_SHAPES_CACHE names
  a folder to keep it in between runs (for development; CI always trains).

  Training takes ~2.5 minutes on two cores: every test that uses this fixture is marked
  slow (pytest_collection_modifyitems above). Under pytest-xdist the workers share one
  folder of the run: the first to need the model trains it, holding a file lock, and the
  others wait for it, rather than each training its own copy on the same two cores."""
  import fcntl

  from jaxviz import training
  folder = os.environ.get('JAXVIZ_TEST_SHAPES_CACHE')
  if not folder:
    base = tmp_path_factory.getbasetemp()
    if os.environ.get('PYTEST_XDIST_WORKER'):
      base = base.parent  # the run's folder, above every worker's own
    folder = str(base / 'shapes_cache')
    os.makedirs(folder, exist_ok=True)
  previous = os.environ.get('JAXVIZ_CACHE')
  os.environ['JAXVIZ_CACHE'] = folder
  try:
    with open(os.path.join(folder, '.lock'), 'w') as lock:
      fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
      training.ensure_weights(0, progress=False)
    yield folder
  finally:
    if previous is None:
      del os.environ['JAXVIZ_CACHE']
    else:
      os.environ['JAXVIZ_CACHE'] = previous
