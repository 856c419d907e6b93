"""Class visualisation (Simonyan et al. 2014; Yosinski et al. 2015): figures 7-16 of the
course report. All targets are optimised together in one vmapped, jitted loop.

  python scripts/class_visualization.py [--targets=gorilla,tabby,tarantula,'Border terrier']
      [--num_iterations=200] [--learning_rate=5] [--l2_reg=1e-3] [--optimizer=sgd|adam]
      [--init=noise|samples:chelsea|PATH] [--snapshot_every=0]

Writes class_visualization.png, probability.png (target probability per step),
results.npz and manifest.json (and snapshots.png with --snapshot_every) into --output_dir.
--images is read only with --init=images.
"""

import os

import numpy as np
from absl import app, flags

import jaxviz
from jaxviz import data, figures
import common

_COMMON = common.define_common_flags('class_visualization')
flags.adopt_module_key_flags(common)  # --helpshort lists the shared flags too
_TARGETS = flags.DEFINE_list(
    'targets', ['gorilla', 'tabby', 'tarantula', 'Border terrier'],
    'Classes to visualise (names or indices), one image each. Default: the course\'s '
    'gorilla, cat, tarantula and terrier.')
_NUM_ITERATIONS = flags.DEFINE_integer('num_iterations', 200, 'Gradient steps.',
                                       lower_bound=1)
_LEARNING_RATE = flags.DEFINE_float('learning_rate', 5.0, 'Step size (also Adam\'s).')
_L2_REG = flags.DEFINE_float('l2_reg', 1e-3, 'lambda in f_target(x) - lambda ||x||_2.')
_BLUR_EVERY = flags.DEFINE_integer('blur_every', 10, 'Blur every this many steps (0: '
                                   'never).', lower_bound=0)
_BLUR_SIGMA = flags.DEFINE_float('blur_sigma', 0.5, 'Gaussian blur sigma in pixels.')
_MAX_JITTER = flags.DEFINE_integer('max_jitter', 16, 'Random roll of up to this many '
                                   'pixels before each step (0: none).', lower_bound=0)
_OPTIMIZER = flags.DEFINE_enum('optimizer', 'sgd', ['sgd', 'adam'],
                               "'sgd': the course's x += lr * g; 'adam': optax.adam(lr).")
_INIT = flags.DEFINE_string(
    'init', 'noise', "'noise' (N(0, 1) in the normalised space, seeded by --seed), "
    "'samples:NAME' (a bundled photo: grace_hopper, chelsea, coffee, astronaut, rocket, "
    "motorcycle), 'images' (what --images names), or an image file, folder or .npz; "
    'from 1 image for all targets or one image per target.')
_SNAPSHOT_EVERY = flags.DEFINE_integer('snapshot_every', 0, 'Also keep the images after '
                                       'every this many steps (0: none).', lower_bound=0)


@common.one_line_errors
def main(argv):
  del argv
  # Everything the method would refuse, checked before the model is loaded: the flags,
  # then the init images.
  common.check_flags(__name__)
  if _SNAPSHOT_EVERY.value > _NUM_ITERATIONS.value:
    raise jaxviz.InputError(f'--snapshot_every={_SNAPSHOT_EVERY.value} is more than '
                            f'--num_iterations={_NUM_ITERATIONS.value}: no snapshot would '
                            'be taken')
  if _INIT.value == 'images':
    init = data.load_images(_COMMON.images.value, _COMMON.image_size.value).images
  else:
    init = common.load_init(_INIT.value, _COMMON.image_size.value)
  if init is not None and len(init) not in (1, len(_TARGETS.value)):
    raise jaxviz.InputError(f'--init={_INIT.value} has {len(init)} images for '
                            f'{len(_TARGETS.value)} targets: give 1 or one per target')
  side = min(init.shape[1:3]) if init is not None else _COMMON.image_size.value
  if _MAX_JITTER.value >= side:
    raise jaxviz.InputError(f'--max_jitter={_MAX_JITTER.value} must be smaller than the '
                            f'image ({side} pixels)')
  common.enable_compilation_cache()
  model = common.resolve_model(_COMMON.model.value, _COMMON.weights.value)
  targets = common.class_indices(model, _TARGETS.value)
  hyper = dict(num_iterations=_NUM_ITERATIONS.value, learning_rate=_LEARNING_RATE.value,
               l2_reg=_L2_REG.value, blur_every=_BLUR_EVERY.value,
               blur_sigma=_BLUR_SIGMA.value, max_jitter=_MAX_JITTER.value,
               snapshot_every=_SNAPSHOT_EVERY.value, optimizer=_OPTIMIZER.value)

  result, seconds = common.run_class_visualization(
      model, targets, _COMMON.seed.value, init=init, image_size=_COMMON.image_size.value,
      desc=f'{model.name} class visualisation', **hyper)

  out = _COMMON.output_dir.value
  names = [model.class_names[k] for k in targets]
  start = 'noise' if init is None else _INIT.value
  title = (f'{model.name} class visualisation from {start}: lr {_LEARNING_RATE.value:g}, '
           f'l2 {_L2_REG.value:g} ({_OPTIMIZER.value}), {common.weights_label(model)}')
  images = common.to_rgb01(model, result.images)
  titles = common.class_visualization_titles(model, targets, result, _NUM_ITERATIONS.value)
  figures.save(figures.class_visualization_figure(images, titles, title),
               os.path.join(out, 'class_visualization.png'))
  figures.save(figures.probability_figure(result.probability_trace, names, title),
               os.path.join(out, 'probability.png'))
  snapshots = None
  if result.snapshots is not None:
    snapshots = common.to_rgb01(model, result.snapshots)
    # At most 8 per target in the picture (evenly spaced, the last included); all of
    # them go into results.npz.
    shown = np.unique(np.linspace(snapshots.shape[1] - 1, 0, 8).round().astype(int))
    figures.save(figures.class_visualization_figure(
        snapshots[:, shown].reshape(-1, *snapshots.shape[2:]),
        [f'{name}\nstep {(s + 1) * _SNAPSHOT_EVERY.value}' for name in names for s in shown],
        title, columns=len(shown)), os.path.join(out, 'snapshots.png'))
  common.save_npz(
      os.path.join(out, 'results.npz'), images=images, normalised=result.images,
      targets=targets, target_names=names, target_probability=result.target_probability,
      predicted=result.predicted, probability_trace=result.probability_trace,
      snapshots=snapshots, init=init)
  common.write_manifest(out, common.script_flags(), model,
                        timings={'class_visualization_s': round(seconds, 3)})

  print(f'{model.name} ({common.weights_label(model)}): {len(targets)} class '
        f'visualisation(s) from {start}, {_NUM_ITERATIONS.value} steps in {seconds:.1f} s')
  for name, p, k in zip(names, result.target_probability, result.predicted):
    print(f'  {name:>24}: p = {p:.3g}, predicted {model.class_names[k]}')
  print(f'wrote {out}/class_visualization.png, probability.png, '
        f'{"snapshots.png, " if snapshots is not None else ""}results.npz, manifest.json')


if __name__ == '__main__':
  app.run(main, flags_parser=common.parse_flags)
