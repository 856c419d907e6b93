"""One process of a two-process `jax.distributed` top-activations run on localhost (CPU).

Started by tests/test_top_activations.py, twice, with different process ids:

  python tests/_distributed_worker.py PORT PROCESS_ID NUM_PROCESSES OUTPUT.npz SOURCE LAYER N \
      BATCH_SIZE [CHECKPOINT]

Each process streams its share of the batches (batch b goes to process b % P); every
process gets the merged result and writes it to OUTPUT.npz with its process id in the
name ('out.npz' -> 'out.process0.npz').
"""

import os
import sys

os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import jax  # noqa: E402
import numpy as np  # noqa: E402


def main(argv):
  port, pid, procs, output, source, layer, n, batch_size, *rest = argv[1:]
  # Cross-process collectives on CPU (the final gather) go through gloo.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address=f'127.0.0.1:{port}',
                             num_processes=int(procs), process_id=int(pid),
                             initialization_timeout=120)
  import jaxviz
  from jaxviz import top_activations as ta
  assert jax.process_count() == int(procs), jax.process_count()
  model = jaxviz.load_model('shapes', 'random')
  seen = []
  result = ta.top_activations(model, model.params, source, layer, n=int(n),
                              batch_size=int(batch_size),
                              checkpoint=rest[0] if rest else None, checkpoint_every=1,
                              progress=lambda done, total: seen.append((done, total)))
  root, ext = os.path.splitext(output)
  np.savez(f'{root}.process{pid}{ext}', **result._asdict(),
           streamed=np.asarray(seen[-1][1] if seen else 0))
  jax.distributed.shutdown()
  print(f'process {pid} done', flush=True)


if __name__ == '__main__':
  main(sys.argv)
