"""Regenerates every figure of the course report (seed 000, figures 1-16) in one folder.

  python scripts/make_figures.py [--weights=imagenet] [--output_dir=outputs/figures]
      [--models=squeezenet1_1,vgg16] [--quick]

Figures 17-36 go beyond the report: the attribution methods side by side
(scripts/attribution.py) and Zeiler & Fergus's occlusion panels (scripts/occlusion.py), on
SqueezeNet and on the self-trained shapes model; FGSM, BIM and PGD at one budget
(scripts/attack.py) on both; robust accuracy against the budget (scripts/robustness.py)
and the transfer matrix of two shapes models (scripts/transfer.py); what the networks
have learned: receptive fields, the top patches of a generated dataset
(scripts/top_images.py), feature visualisation (scripts/feature_visualization.py),
activation maps, filters, DeepDream and the invariance study (scripts/activations.py,
filters.py, deep_dream.py, invariance.py), each of these run as its own process.

Writes figNN_*.png, index.html and index.md (each figure with its caption and the
single-script command that makes the same picture), summary.json (the numbers quoted in
the captions) and manifest.json. --quick divides every iteration count by 20 and uses
112-pixel images: a pipeline check in about a minute on CPU, not the report's figures.
"""

import dataclasses
import glob
import html
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

import jax
import numpy as np
from absl import app, flags

import jaxviz
from jaxviz import data, figures, receptive_field, robustness
import common

SCRIPTS = os.path.dirname(os.path.abspath(__file__))

_WEIGHTS = flags.DEFINE_string(
    'weights', 'imagenet', "'imagenet' (converted on first use; random-init with a note "
    "when it cannot be had) or 'random'.")
_OUTPUT_DIR = flags.DEFINE_string('output_dir', os.path.join('outputs', 'figures'),
                                  'Folder for the PNGs, index.html and index.md.')
_MODELS = flags.DEFINE_list('models', ['squeezenet1_1', 'vgg16', 'shapes'],
                            'Models to run (squeezenet1_1, vgg16, shapes); figures of the '
                            'others are listed as skipped.')
_QUICK = flags.DEFINE_bool('quick', False, 'Iterations / 20 and 112-pixel images: checks '
                           'the pipeline in a minute or two on CPU.')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', None, 'Image side (default 224; 112 with '
                                   '--quick).', lower_bound=16)
_DIVISOR = flags.DEFINE_integer('iterations_divisor', None, 'Divide every iteration count '
                                'by this (default 1; 20 with --quick).', lower_bound=1)
_IMAGES = flags.DEFINE_string('images', 'samples', 'Images for saliency and fooling; the '
                              'first one is fooled.')
_SEED = flags.DEFINE_integer('seed', 0, 'PRNG seed of the class visualisations.')

QUICK_DIVISOR, QUICK_SIZE = 20, 112
# The course report's classes: gorilla, cat, tarantula, terrier (ImageNet names).
NOISE_TARGETS = ('gorilla', 'tabby', 'tarantula', 'Border terrier')
SWEEP_TARGETS = ('tarantula', 'gorilla')
# The report starts from an ImageNet dog photo; the bundled photo closest in spirit is
# scikit-image's cat, visualised as its own class.
PHOTO, PHOTO_CLASS = 'chelsea', 'tabby'
# scripts/attribution.py's SmoothGrad samples and integrated-gradients steps.
SMOOTHGRAD_SAMPLES, IG_STEPS = 50, 50
# scripts/attack.py's, robustness.py's and transfer.py's steps, images and data seed.
ATTACK_STEPS, ROBUSTNESS_IMAGES, DATA_SEED = 10, 200, 1000
# scripts/top_images.py's generated dataset, scripts/feature_visualization.py's steps.
TOP_IMAGES, FEATURE_STEPS = 10000, 100


@dataclasses.dataclass
class Entry:
  """One figure of the index."""
  number: int
  title: str
  caption: str = ''
  file: str | None = None
  command: str = ''
  skipped: str = ''
  numbers: dict = dataclasses.field(default_factory=dict)


class Maker:
  """Runs the report's experiments, model by model, and collects the index entries."""

  def __init__(self, weights, models, quick, images, seed, output_dir, image_size=None,
               divisor=None):
    self.weights, self.models = weights, models
    self.images_source, self.seed, self.out = images, seed, output_dir
    self.size = image_size or (QUICK_SIZE if quick else 224)
    self.divisor = divisor or (QUICK_DIVISOR if quick else 1)
    self.entries: list[Entry] = []
    self.loaded: dict[str, jaxviz.Model] = {}  # models are loaded when first needed
    self._images = None

  # Shared inputs ------------------------------------------------------------------------

  def model(self, name: str) -> jaxviz.Model:
    if name not in self.loaded:
      self.loaded[name] = common.resolve_model(name, self.weights)
    return self.loaded[name]

  def images(self) -> data.ImageSet:
    if self._images is None:
      self._images = data.load_images(self.images_source, self.size)
    return self._images

  def iterations(self, n: int) -> int:
    return max(1, n // self.divisor)

  def command(self, script: str, model: str, **flag_values) -> str:
    """The single-script command that draws the same picture."""
    args = [f'--model={model}'] if model != 'squeezenet1_1' else []
    if self.weights != 'imagenet':
      args.append(f'--weights={self.weights}')
    if self.images_source != 'samples':
      args.append(f'--images={self.images_source}')
    if self.size != 224:
      args.append(f'--image_size={self.size}')
    if self.seed and script == 'class_visualization':
      args.append(f'--seed={self.seed}')
    args += [f'--{k}={v}' for k, v in flag_values.items()]
    return shlex.join(['python', f'scripts/{script}.py', *args])

  def save(self, entry: Entry, name: str, fig) -> Entry:
    entry.file = f'fig{entry.number:02d}_{name}.png'
    figures.save(fig, os.path.join(self.out, entry.file))
    self.entries.append(entry)
    return entry

  def skip(self, numbers, title, model):
    for n in numbers:
      self.entries.append(Entry(n, title, skipped=f'{model} is not in --models'))

  # The report's figures -----------------------------------------------------------------

  def saliency(self, number: int, model_name: str, objective: str):
    model = self.model(model_name)
    images = self.images()
    labels = (common.class_indices(model, images.labels) if images.labels is not None
              else common.predict(model, model.preprocess(images.images)))
    maps, timings = common.run_saliency(model, images.images, labels, objective)
    what = 'class score' if objective == 'score' else 'cross-entropy'
    title = f'{model_name} saliency maps, gradient of the {what}'
    fig = common.saliency_plot(model, images.images, maps, labels,
                               f'Figure {number}: {title} ({common.weights_label(model)})')
    self.save(Entry(number, title,
                    f'Saliency maps (max over RGB of |d {what} / d pixel|) of {model_name} '
                    f'for the labelled class of each photo.',
                    command=self.command('saliency', model_name, objective=objective),
                    numbers=timings), f'saliency_{model_name}_{objective}', fig)

  def fooling(self, numbers=(5, 6), model_name='squeezenet1_1', target='stingray'):
    model = self.model(model_name)
    image = self.images().images[:1]
    target_index = model.class_index(target)
    runs = {}
    for number, objective in zip(numbers, ('score', 'cross_entropy')):
      run = common.run_fooling(model, image, target_index, objective, 1.0,
                               self.iterations(100))
      runs[objective] = run
      how = ('gradient ascent on the score' if objective == 'score'
             else 'gradient descent on the cross-entropy')
      title = f'{model_name} fooling image towards {target!r} by {how}'
      fig = common.fooling_plot(model, run, f'Figure {number}: {title} '
                                f'({common.weights_label(model)})')
      status = ('fooled' if run['fooled'][0] else
                'stalled: zero gradient' if run['stalled'][0] else 'not fooled')
      self.save(Entry(
          number, title,
          f'Original, fooled image, difference (min-max rescaled) and difference x10. '
          f'{model.class_names[run["original_predicted"][0]]} -> '
          f'{model.class_names[run["predicted"][0]]} in {int(run["iterations"][0])} '
          f'iterations ({status}), ||delta||_2 = {run["l2"][0]:.3g}.',
          command=self.command('adversarial', model_name, target=target,
                               objective=objective,
                               **({'max_iterations': self.iterations(100)}
                                  if self.divisor > 1 else {})),
          numbers={'iterations': int(run['iterations'][0]), 'fooled': bool(run['fooled'][0]),
                   'l2': float(run['l2'][0]), 'linf': float(run['linf'][0])}),
          f'fooling_{objective}', fig)
    score, ce = (int(runs[k]['iterations'][0]) for k in ('score', 'cross_entropy'))
    self.entries[-1].caption += (f' Iterations: score ascent {score}, cross-entropy descent '
                                 f'{ce} (the course report: 85 and 37).')

  def class_visualizations(self, numbers, model_name, targets, what, *, init=None,
                           init_flag='noise', **hyper):
    """One batched run over `targets`, one figure per target."""
    model = self.model(model_name)
    indices = common.class_indices(model, targets)
    hyper = {'num_iterations': 200, 'learning_rate': 5.0, 'l2_reg': 1e-3, **hyper}
    hyper['num_iterations'] = self.iterations(hyper['num_iterations'])
    result, seconds = common.run_class_visualization(
        model, indices, self.seed, init=init, image_size=self.size,
        desc=f'figures {numbers[0]}-{numbers[-1]}', **hyper)
    images = common.to_rgb01(model, result.images)
    titles = common.class_visualization_titles(model, indices, result,
                                               hyper['num_iterations'])
    flag_values = {'targets': ','.join(targets), **hyper}
    if init_flag != 'noise':
      flag_values['init'] = init_flag
    command = self.command('class_visualization', model_name, **flag_values)
    for i, (number, target) in enumerate(zip(numbers, targets)):
      title = f'{model_name} class visualisation of {target!r} {what}'
      fig = figures.class_visualization_figure(
          images[i:i + 1], [titles[i]], f'Figure {number}: {title} '
          f'({common.weights_label(model)})')
      self.save(Entry(number, title,
                      f'{hyper["num_iterations"]} steps, learning rate '
                      f'{hyper["learning_rate"]:g}, l2_reg {hyper["l2_reg"]:g}, blur every 10 '
                      f'steps (sigma 0.5), jitter up to 16 px; final target probability '
                      f'{result.target_probability[i]:.3g}, predicted '
                      f'{model.class_names[result.predicted[i]]!r} ({seconds:.1f} s for '
                      f'{len(targets)} image(s) optimised together).',
                      command=command,
                      numbers={'target_probability': float(result.target_probability[i]),
                               'predicted': model.class_names[result.predicted[i]]}),
                f'class_{model_name}_{target.replace(" ", "_")}', fig)

  def from_photo(self, numbers, model_name, learning_rate):
    photo = common.load_init(f'samples:{PHOTO}', self.size)
    self.save(Entry(numbers[0], f'the photo the visualisation of figure {numbers[1]} '
                    'starts from',
                    f'Bundled sample photo {PHOTO!r} (ImageNet class {PHOTO_CLASS!r}); the '
                    'course report used an ImageNet photo of a Tibetan mastiff.',
                    command=f'(input of figure {numbers[1]})'),
              f'photo_{PHOTO}', figures.class_visualization_figure(
                  photo / 255.0, [f'{PHOTO} ({PHOTO_CLASS})'], f'Figure {numbers[0]}'))
    self.class_visualizations(numbers[1:], model_name, (PHOTO_CLASS,),
                              f'from the photo, lr {learning_rate:g}', init=photo,
                              init_flag=f'samples:{PHOTO}', num_iterations=1000,
                              learning_rate=learning_rate)

  def shapes_model(self) -> jaxviz.Model:
    """The self-trained shapes model; trained first (~2.5 minutes) if not cached, except in
    quick mode, which takes random init instead (and says so) to stay quick."""
    if 'shapes' not in self.loaded:
      if self.weights == 'random':
        model = jaxviz.load_model('shapes', 'random')
      else:
        try:
          model = jaxviz.load_model('shapes', 'trained', train_if_missing=self.divisor == 1)
        except jaxviz.WeightsError:
          print('note: no trained shapes model is cached and quick mode does not train one '
                '(python scripts/train_shapes.py does); using random init', file=sys.stderr)
          model = jaxviz.load_model('shapes', 'random')
      self.loaded['shapes'] = model
    return self.loaded['shapes']

  def model_command(self, script: str, model_name: str, model, **flag_values) -> str:
    """`command`, but for the shapes model: the scripts take generated shapes images for
    it, and random init must be asked for where quick mode fell back to it."""
    if model_name != 'shapes':
      return self.command(script, model_name, **flag_values)
    args = ['--model=shapes'] + (['--weights=random'] if model.metadata.get('source')
                                 == 'random' else [])
    args += [f'--{k}={v}' for k, v in flag_values.items()]
    return shlex.join(['python', f'scripts/{script}.py', *args])

  def attribution(self, numbers, model_name: str):
    """The attribution grid (scripts/attribution.py's default methods) and one image's
    occlusion panels (scripts/occlusion.py); occlusion runs once for both."""
    model = self.shapes_model() if model_name == 'shapes' else self.model(model_name)
    images = data.load_images('shapes', 64) if model_name == 'shapes' else self.images()
    labels = (common.class_indices(model, images.labels) if images.labels is not None
              else common.predict(model, model.preprocess(images.images)))
    x = model.preprocess(images.images)
    size = images.images.shape[1]
    window, default_stride, _ = common.occluder(size, None, None)
    # Quick mode: non-overlapping windows, a quarter of the positions or fewer.
    stride = window if self.divisor > 1 else default_stride
    samples, steps = self.iterations(SMOOTHGRAD_SAMPLES), self.iterations(IG_STEPS)
    options = {'smoothgrad': dict(samples=samples, sample_chunk=min(32, samples),
                                  chunk_size=1),
               'integrated_gradients': dict(steps=steps, step_chunk=min(32, steps),
                                            chunk_size=1)}
    maps, seconds = {}, {}
    for name in common.DEFAULT_METHODS:
      start = time.perf_counter()
      if name == 'occlusion':
        occluded = jax.tree.map(np.asarray, jaxviz.occlusion(
            model, model.params, x, labels, window=window, stride=stride, window_chunk=32,
            chunk_size=1, cpu_kernels=model.cpu_kernels))
        maps[name] = occluded.attribution
      else:
        maps[name] = np.asarray(jaxviz.attribution_maps(
            model, name, x, labels, key=jax.random.key(self.seed), **options.get(name, {})))
      seconds[name] = round(time.perf_counter() - start, 2)
    label_names = [model.class_names[k] for k in labels]
    weights = common.weights_label(model)
    flag_values = {}
    if samples != SMOOTHGRAD_SAMPLES or steps != IG_STEPS:
      flag_values.update(samples=samples, steps=steps)
    if stride != default_stride:
      flag_values.update(stride=stride)
    command = self.model_command('attribution', model_name, model, **flag_values)
    what = 'the self-trained shapes model' if model_name == 'shapes' else model_name
    title = f'{what}: eight attribution methods side by side'
    fig = figures.attribution_grid_figure(
        images.images / 255.0, maps,
        [f'{n}\n{c}' for n, c in zip(images.names, label_names)],
        f'Figure {numbers[0]}: {title} ({weights}); each map clipped at its 99th percentile')
    self.save(Entry(
        numbers[0], title,
        f'Columns: the input gradient (Simonyan et al.), SmoothGrad ({samples} '
        f'sample{"s" if samples > 1 else ""}, noise 15%), integrated gradients ({steps} '
        f'Gauss-Legendre step{"s" if steps > 1 else ""}, zero baseline), '
        f'guided backprop, the DeconvNet, Grad-CAM at its default layer (upsampled), '
        f'guided Grad-CAM and occlusion ({window}-px window, stride {stride}); pixel '
        f'methods as max over RGB of |attribution|, each map clipped at its 99th '
        f'percentile and drawn over its image. Seconds per method (first call, '
        f'compiling): ' + ', '.join(f'{k} {v:g}' for k, v in seconds.items()) + '.',
        command=command, numbers={'seconds': seconds, 'window': window, 'stride': stride,
                                  'samples': samples, 'steps': steps}),
        f'attribution_{model_name}', fig)
    i = 0  # the first image's occlusion panels
    one = jax.tree.map(lambda a: a[i], occluded)
    occlusion_command = self.model_command('occlusion', model_name, model, **{
        k: v for k, v in flag_values.items() if k == 'stride'})
    title = f'{what}: occlusion of {images.names[i]!r} (Zeiler & Fergus Fig. 7)'
    fig = figures.occlusion_figure(
        images.images[i] / 255.0, one, model.class_names, labels[i], window, stride,
        f'Figure {numbers[1]}: {title}, label {label_names[i]!r} ({weights})')
    drop = float(one.score_drop.max())
    self.save(Entry(
        numbers[1], title,
        f'A {window}-px square of the mean colour slid over the image with stride {stride}: '
        f'the label\'s probability and score drop at each position, the most probable class '
        f'at each position, and each pixel\'s mean score drop; largest drop {drop:.3g} '
        f'(logits), lowest probability {float(one.probability.min()):.3g}.',
        command=occlusion_command,
        numbers={'largest_score_drop': drop,
                 'lowest_probability': float(one.probability.min())}),
        f'occlusion_{model_name}_{images.names[i]}', fig)

  def attacks(self, number: int, model_name: str):
    """scripts/attack.py's figure: FGSM, BIM, PGD-Linf and PGD-L2 on the first image at
    one budget (8/255; L2 scaled to the image), untargeted from its label."""
    model = self.shapes_model() if model_name == 'shapes' else self.model(model_name)
    images = data.load_images('shapes', 64) if model_name == 'shapes' else self.images()
    image = images.images[:1]
    labels = (common.class_indices(model, images.labels[:1]) if images.labels is not None
              else common.predict(model, model.preprocess(image)))
    steps, epsilon = self.iterations(ATTACK_STEPS), 8 / 255
    epsilon_l2 = common.default_epsilon_l2(*image.shape[1:3])
    runs = common.run_attacks(
        model, image, labels, common.DEFAULT_ATTACKS, targeted=False, epsilon=epsilon,
        epsilon_l2=epsilon_l2, steps=steps, step_size=2.5 * epsilon / steps,
        step_size_l2=2.5 * epsilon_l2 / steps, early_stop=False, seed=self.seed)
    clean = common.predict(model, model.preprocess(image))
    what = 'the self-trained shapes model' if model_name == 'shapes' else model_name
    title = f'{what}: FGSM, BIM, PGD-Linf and PGD-L2 at 8/255 (L2 {epsilon_l2:.3g})'
    fig = common.attack_plot(model, image, clean, runs, images.names[:1],
                             f'Figure {number}: {title}, {steps} steps, untargeted '
                             f'({common.weights_label(model)})')
    outcome = {a: {'success': bool(r['success'][0]), 'predicted': model.class_names[
        r['predicted'][0]], 'linf_255': float(r['linf'][0] * 255), 'l2': float(r['l2'][0])}
        for a, r in runs.items()}
    flag_values = {'steps': steps} if steps != ATTACK_STEPS else {}
    self.save(Entry(
        number, title,
        f'Each row: the original {images.names[0]!r} ({model.class_names[clean[0]]}), the '
        f'adversarial image, the difference (min-max rescaled) and the difference x10, as '
        f'the course draws fooling images; budgets in pixel units, step 2.5 x budget / '
        f'{steps}. ' + '; '.join(
            f'{common.ATTACKS[a][0]}: {"success" if o["success"] else "failure"}, '
            f'{o["predicted"]}, Linf {o["linf_255"]:.3g}/255, L2 {o["l2"]:.3g}'
            for a, o in outcome.items()) + '.',
        command=self.model_command('attack', model_name, model, **flag_values),
        numbers=outcome), f'attacks_{model_name}', fig)

  def shapes_seed(self, seed: int) -> jaxviz.Model:
    """The shapes model of training seed `seed`, as `shapes_model` loads seed 0."""
    if seed == 0:
      return self.shapes_model()
    key = f'shapes:{seed}'
    if key not in self.loaded:
      model = None
      if self.shapes_model().metadata.get('source') != 'random':
        try:
          model = jaxviz.load_model('shapes', 'trained', seed=seed,
                                    train_if_missing=self.divisor == 1)
        except jaxviz.WeightsError:
          print(f'note: no trained shapes model of seed {seed} is cached and quick mode does '
                'not train one; using random init', file=sys.stderr)
      self.loaded[key] = model or jaxviz.load_model('shapes', 'random', seed=seed)
    return self.loaded[key]

  def attack_studies(self, numbers):
    """scripts/robustness.py's and scripts/transfer.py's figures on the shapes models."""
    model = self.shapes_model()
    count = max(20, ROBUSTNESS_IMAGES // self.divisor)
    steps = self.iterations(ATTACK_STEPS)
    images, labels, source = robustness.labelled_images(None, True, count, DATA_SEED)
    labels = common.class_indices(model, labels)
    report = robustness.robust_accuracy(model, images, labels, steps=steps, seed=self.seed)
    weights = common.weights_label(model)
    title = 'the self-trained shapes model: accuracy against the attack budget'
    flags_ = {'num_images': count} if count != ROBUSTNESS_IMAGES else {}
    flags_.update({'steps': steps} if steps != ATTACK_STEPS else {})
    pgd = report['attacks']['pgd']
    self.save(Entry(
        numbers[0], title,
        f'Untargeted FGSM, PGD-Linf and PGD-L2 ({steps} steps) on {report["images"]} '
        f'held-out images ({source}); clean accuracy {report["clean_accuracy"]:.3f}. '
        f'PGD-Linf accuracy at ' + ', '.join(
            f'{e:.3g}/255: {a:.3f}' for e, a in zip(pgd['epsilons_255'], pgd['accuracy']))
        + f'. The course\'s fooling method succeeds on {report["naive"]["success_rate"]:.3f} '
        f'of the images with a median Linf of {report["naive"]["linf_255"]["median"]:.3g}/255 '
        f'(marked).',
        command=shlex.join(['python', 'scripts/robustness.py', *(
            f'--{k}={v}' for k, v in flags_.items()), *(
            ['--weights=random'] if model.metadata.get('source') == 'random' else [])]),
        numbers={'clean_accuracy': report['clean_accuracy'], 'pgd_accuracy': pgd['accuracy'],
                 'naive_success_rate': report['naive']['success_rate']}),
        'robustness_shapes', common.robustness_plot(report, f'Figure {numbers[0]}: {title} '
                                                             f'({weights})'))
    models = [model, self.shapes_seed(1)]
    names = ['shapes:0', 'shapes:1']
    report = robustness.transfer_matrix(models, images, labels, attack='pgd',
                                        epsilon=8 / 255, steps=steps, seed=self.seed,
                                        names=names)
    title = 'PGD-Linf adversarials of one shapes model classified by another'
    fig = common.transfer_plot(report, 'pgd', 8 / 255, source, models,
                               prefix=f'Figure {numbers[1]}: ')
    command = shlex.join(['python', 'scripts/transfer.py', *(
        [f'--num_images={count}'] if count != ROBUSTNESS_IMAGES else []), *(
        [f'--steps={steps}'] if steps != ATTACK_STEPS else []), *(
        ['--weights=random'] if model.metadata.get('source') == 'random' else [])])
    rate, noise = report['rate'], report['random_control']
    share = lambda r: 'n/a' if r is None else f'{r:.3f}'  # None: no image to count
    self.save(Entry(
        numbers[1], title,
        f'Shapes models of training seeds 0 and 1, PGD-Linf at 8/255 ({steps} steps) on '
        f'the images both classify correctly: white-box success {share(rate[0][0])} and '
        f'{share(rate[1][1])}, transfer 0 -> 1 {share(rate[0][1])}, 1 -> 0 '
        f'{share(rate[1][0])}; random noise of the same budget: {share(noise[0])} and '
        f'{share(noise[1])}.',
        command=command, numbers={'rate': rate, 'random_control': report['random_control']}),
        'transfer_shapes', fig)

  # What the network has learned ---------------------------------------------------------

  def receptive_fields(self, number: int):
    """VGG16's fields at five depths on the first sample photo (no weights needed: a field
    depends on the architecture alone)."""
    image = data.sample_images(224).images[0] / 255.0
    units = [('features.3', 'conv1_2', (56, 56)), ('features.9', 'pool2', (28, 28)),
             ('features.16', 'pool3', (14, 14)), ('features.23', 'pool4', (7, 7)),
             ('features.29', 'conv5_3', (7, 7)), ('features.29', 'conv5_3', (0, 13))]
    boxes, labels, fields = [], [], {}
    for layer, name, (i, j) in units:
      f = receptive_field.receptive_field('vgg16', layer)
      boxes.append((f.span(i)[0], f.span(j)[0], f.size))
      labels.append(f'{layer} = {name} unit ({i}, {j}): {f.size} px, jump {f.jump}')
      fields[name] = {'size': f.size, 'jump': f.jump, 'start': f.start}
    title = 'VGG16 receptive fields'
    self.save(Entry(
        number, title,
        'The exact receptive fields of the centre units of conv1_2, pool2, pool3, pool4 '
        'and conv5_3 on a 224-pixel image, and of conv5_3\'s top-right unit, whose field '
        'hangs over the border (padding): conv5_3 sees '
        f'{fields["conv5_3"]["size"]} px with a jump of {fields["conv5_3"]["jump"]}.',
        command='python -c "import jaxviz; print(jaxviz.receptive_field.receptive_fields('
                "'vgg16'))\"", numbers=fields),
        'receptive_fields_vgg16', figures.receptive_field_figure(
            image, boxes, labels, f'Figure {number}: {title} (224 px input)'))

  def script_figure(self, number: int, model_name: str, title: str, caption: str,
                    script: str, png: str, name: str, **flag_values):
    """A figure drawn by one of the scripts, run as it is documented (its own process, its
    own flags), copied into the index with that command."""
    model = self.shapes_model() if model_name == 'shapes' else self.model(model_name)
    command = self.model_command(script, model_name, model, **flag_values)
    run_dir = os.path.join(self.out, 'runs', name)
    args = shlex.split(command)[2:] + [f'--output_dir={run_dir}']
    done = subprocess.run([sys.executable, os.path.join(SCRIPTS, f'{script}.py'), *args],
                          capture_output=True, text=True)
    if done.returncode:
      last = (done.stderr.strip().splitlines() or ['no output'])[-1]
      raise jaxviz.JaxvizError(f'{command} failed: {last}')
    drawn = sorted(glob.glob(os.path.join(run_dir, png)))
    if not drawn:
      raise jaxviz.JaxvizError(f'{command} wrote no {png} into {run_dir}')
    summary = ' '.join(line for line in done.stdout.strip().splitlines()
                       if not line.startswith('wrote '))
    entry = Entry(number, title, f'{caption} {summary}'.strip(), command=command,
                  file=f'fig{number:02d}_{name}.png')
    shutil.copyfile(drawn[0], os.path.join(self.out, entry.file))
    self.entries.append(entry)

  def features(self, numbers, model_name: str):
    """Feature visualisation of one layer's channels: pixel basis and lucid's decorrelated
    Fourier basis on the shapes model, the Fourier basis on SqueezeNet."""
    steps = self.iterations(FEATURE_STEPS)
    if model_name == 'shapes':
      self.script_figure(
          numbers[0], model_name, 'the shapes model: channels of features.5 maximised, pixel basis',
          'Each tile: the image from mid-grey that maximises one channel\'s mean '
          f'activation minus 1e-3 ||x||^2 ({steps} Adam steps, lr 0.1); dead channels '
          'stay grey.', 'feature_visualization', 'feature_visualization.png',
          'features_shapes_pixel', layer='features.5', channels='0-15', optimizer='adam',
          learning_rate=0.1, num_iterations=steps)
      self.script_figure(
          numbers[1], model_name, 'the shapes model: channels of features.5 in the '
          'decorrelated Fourier basis',
          'The same channels ascended in lucid\'s Fourier basis with decorrelated '
          f'colour (Olah et al. 2017), from noise, {2 * steps} Adam steps, jitter 2.',
          'feature_visualization', 'feature_visualization.png', 'features_shapes_fourier',
          layer='features.5', channels='0-15', parameterization='fourier',
          decorrelate=True, init='noise', optimizer='adam', learning_rate=0.05,
          max_jitter=2, num_iterations=2 * steps)
    else:
      self.script_figure(
          numbers[0], model_name, f'{model_name}: channels of features.7 in the '
          'decorrelated Fourier basis', f'{2 * steps} Adam steps from noise, jitter 8.',
          'feature_visualization', 'feature_visualization.png', f'features_{model_name}',
          layer='features.7', channels='0-15', parameterization='fourier', decorrelate=True,
          init='noise', optimizer='adam', learning_rate=0.05, max_jitter=8,
          num_iterations=2 * steps)

  def inspection(self, numbers, model_name: str):
    """Activation maps and first-layer filters (seed 002's first two ways to look inside
    a network), the shapes model's deeper filters, DeepDream and the invariance study."""
    first, layer = ('features.0_activation', 'features.3') if model_name == 'shapes' else (
        'features.1', 'features.3')
    self.script_figure(
        numbers[0], model_name, f'{model_name}: activation maps of {layer}',
        'Every channel of the layer for the first image, each on its own min-max scale; '
        'dead (all-zero) channels blank.', 'activations', 'activations_*.png',
        f'activations_{model_name}', layer=layer, num_images=1)
    self.script_figure(
        numbers[1], model_name, f'{model_name}: first-layer filters',
        'The first convolution\'s kernels as RGB tiles, each scaled by its own min and max.',
        'filters', 'filters.png', f'filters_{model_name}')
    if model_name != 'shapes':
      return
    self.script_figure(
        numbers[2], model_name, 'the shapes model: the kernels of features.2.expand3x3',
        'Rows: output channels; columns: input channels; one colour scale centred on 0.',
        'filters', 'filters.png', 'filters_deeper_shapes', layer='features.2.expand3x3')
    self.script_figure(
        numbers[3], model_name, 'the shapes model: DeepDream on features.5',
        'mean(a^2) of the layer ascended over 3 octaves (scale 1.4) with jitter 8, '
        f'{self.iterations(10)} normalised steps each.', 'deep_dream', 'deep_dream.png',
        'deep_dream_shapes', layer='features.5', num_images=2, octaves=3,
        steps_per_octave=self.iterations(10), max_jitter=8)
    self.script_figure(
        numbers[4], model_name, 'the shapes model: invariance to rotation, translation and scale',
        'As Zeiler & Fergus\'s Fig. 5: distance of the first and top layers\' features to '
        'the original\'s and the true class\'s probability, every transform of an image '
        'in one vmapped call.', 'invariance', 'invariance.png', 'invariance_shapes',
        num_images=5)

  def top_images(self, number: int, model_name: str = 'shapes'):
    """scripts/top_images.py on the generated shapes set: the top patches of 8 channels
    with their DeconvNet projections."""
    count = max(500, TOP_IMAGES // self.divisor)
    self.script_figure(
        number, model_name, 'the shapes model: the top-6 patches of features.5\'s first 8 channels',
        f'{count} generated images streamed through the model (a running top-k for every '
        'channel at once); each patch is the receptive field of the maximal unit, with '
        'its Zeiler & Fergus projection beside it.', 'top_images', 'top_images.png',
        'top_images_shapes', layer='features.5', source=f'shapes:{count}',
        batch_size=256, channels='0-7', n=6)

  def run(self):
    plan = [
        ('squeezenet1_1', (1, 2), 'saliency', lambda: (
            self.saliency(1, 'squeezenet1_1', 'score'),
            self.saliency(2, 'squeezenet1_1', 'cross_entropy'))),
        ('vgg16', (3, 4), 'VGG16 saliency', lambda: (
            self.saliency(3, 'vgg16', 'score'), self.saliency(4, 'vgg16', 'cross_entropy'))),
        ('squeezenet1_1', (5, 6), 'fooling images', self.fooling),
        ('squeezenet1_1', (7, 8, 9, 10), 'class visualisation from noise',
         lambda: self.class_visualizations((7, 8, 9, 10), 'squeezenet1_1', NOISE_TARGETS,
                                           'from noise (course defaults)')),
        ('squeezenet1_1', (11, 12), 'class visualisation sweep',
         lambda: self.class_visualizations(
             (11, 12), 'squeezenet1_1', SWEEP_TARGETS, 'from noise, lr 2, l2_reg 0.1',
             num_iterations=2000, learning_rate=2.0, l2_reg=0.1)),
        ('squeezenet1_1', (13, 14), 'class visualisation from a photo',
         lambda: self.from_photo((13, 14), 'squeezenet1_1', 0.1)),
        ('vgg16', (15, 16), 'VGG16 class visualisation from a photo',
         lambda: self.from_photo((15, 16), 'vgg16', 0.5)),
        ('squeezenet1_1', (17, 18), 'attribution methods and occlusion',
         lambda: self.attribution((17, 18), 'squeezenet1_1')),
        ('shapes', (19, 20), 'attribution methods and occlusion on the shapes model',
         lambda: self.attribution((19, 20), 'shapes')),
        ('squeezenet1_1', (21,), 'attacks at one budget', lambda: self.attacks(21, 'squeezenet1_1')),
        ('shapes', (22,), 'attacks at one budget on the shapes model',
         lambda: self.attacks(22, 'shapes')),
        ('shapes', (23, 24), 'robust accuracy and transfer on the shapes models',
         lambda: self.attack_studies((23, 24))),
        (None, (25,), 'receptive fields', lambda: self.receptive_fields(25)),
        ('shapes', (26,), 'top patches over a dataset', lambda: self.top_images(26)),
        ('shapes', (27, 28), 'feature visualisation on the shapes model',
         lambda: self.features((27, 28), 'shapes')),
        ('squeezenet1_1', (29,), 'feature visualisation',
         lambda: self.features((29,), 'squeezenet1_1')),
        ('shapes', (30, 31, 32, 33, 34), 'activations, filters, DeepDream and invariance '
         'on the shapes model', lambda: self.inspection((30, 31, 32, 33, 34), 'shapes')),
        ('squeezenet1_1', (35, 36), 'activation maps and filters',
         lambda: self.inspection((35, 36), 'squeezenet1_1')),
    ]
    for model_name, numbers, title, make in plan:
      label = (f'figures {numbers[0]}-{numbers[-1]}' if len(numbers) > 1
               else f'figure {numbers[0]}')
      if model_name is not None and model_name not in self.models:
        print(f'{label}: {title}: skipped ({model_name} not in --models)', flush=True)
        self.skip(numbers, title, model_name)
        continue
      print(f'{label}: {title} ({model_name or "no weights"}) ...', flush=True)
      start = time.perf_counter()
      make()
      print(f'{label}: done in {time.perf_counter() - start:.1f} s', flush=True)
    self.entries.sort(key=lambda e: e.number)

  # The index ----------------------------------------------------------------------------

  def random_models(self) -> list[str]:
    return [n for n, m in self.loaded.items() if m.metadata.get('source') == 'random']

  def header(self) -> list[str]:
    lines = [f'Command: `{shlex.join(["python", "scripts/make_figures.py", *sys.argv[1:]])}`',
             f'Models: {", ".join(self.loaded) or "none"}; images: {self.images_source} at '
             f'{self.size} px; seed {self.seed}; {time.strftime("%Y-%m-%d %H:%M")}.']
    if self.divisor > 1 or self.size != 224:
      lines.append(f'QUICK MODE: iteration counts divided by {self.divisor} and '
                   f'{self.size}-pixel images; a pipeline check, not the report\'s figures.')
    random = self.random_models()
    if random:
      lines.append(f'WEIGHTS WERE RANDOM for {", ".join(random)} (ImageNet weights '
                   'unavailable): these figures only check the pipeline and say nothing '
                   'about a trained network.')
    return lines

  def write_index(self):
    title = 'jaxviz: the figures of the course report (seed 000)'
    md = [f'# {title}', ''] + [f'{line}  ' for line in self.header()] + ['']
    body = [f'<h1>{html.escape(title)}</h1>'] + [
        f'<p{" class=warn" if line.startswith(("QUICK", "WEIGHTS")) else ""}>'
        + re.sub(r'`([^`]*)`', r'<code>\1</code>', html.escape(line)) + '</p>'
        for line in self.header()]
    for e in self.entries:
      heading = f'Figure {e.number}: {e.title}'
      md.append(f'## {heading}\n')
      body.append(f'<h2 id="fig{e.number}">{html.escape(heading)}</h2>')
      if e.skipped:
        md.append(f'Skipped: {e.skipped}.\n')
        body.append(f'<p><em>Skipped: {html.escape(e.skipped)}.</em></p>')
        continue
      md += [f'![{heading}]({e.file})\n', f'{e.caption}\n', f'`{e.command}`\n']
      body += [f'<figure><img src="{html.escape(e.file)}" alt="{html.escape(heading)}">',
               f'<figcaption>{html.escape(e.caption)}</figcaption></figure>',
               f'<p><code>{html.escape(e.command)}</code></p>']
    page = ('<!doctype html>\n<html><head><meta charset="utf-8">'
            f'<title>{html.escape(title)}</title><style>'
            'body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}'
            'img{max-width:100%}.warn{color:#a00;font-weight:bold}'
            'code{background:#eee;padding:2px 4px}</style></head><body>\n'
            + '\n'.join(body) + '\n</body></html>\n')
    for name, text in (('index.html', page), ('index.md', '\n'.join(md))):
      jaxviz.checkpoint.atomic_write(os.path.join(self.out, name),
                                     lambda f, text=text: f.write(text.encode()))
    summary = {f'figure{e.number}': dataclasses.asdict(e) for e in self.entries}
    jaxviz.checkpoint.atomic_write(os.path.join(self.out, 'summary.json'), lambda f: f.write(
        json.dumps(summary, indent=2, default=str).encode()))


@common.one_line_errors
def main(argv):
  del argv
  common.check_flags(__name__)
  unknown = sorted(set(_MODELS.value) - {'squeezenet1_1', 'vgg16', 'shapes'})
  if unknown:
    raise jaxviz.InputError(f'--models: the figures use squeezenet1_1, vgg16 and shapes, '
                            f'not {unknown}')
  common.enable_compilation_cache()
  maker = Maker(_WEIGHTS.value, _MODELS.value, _QUICK.value, _IMAGES.value, _SEED.value,
                _OUTPUT_DIR.value, _IMAGE_SIZE.value, _DIVISOR.value)
  start = time.perf_counter()
  maker.run()
  maker.write_index()
  if maker.loaded:
    first = next(iter(maker.loaded.values()))
    common.write_manifest(maker.out, common.script_flags(), first,
                          models={n: {k: v for k, v in m.metadata.items() if k != 'class_names'}
                                  for n, m in maker.loaded.items()},
                          seconds=round(time.perf_counter() - start, 1))
  made = sum(1 for e in maker.entries if not e.skipped)
  print(f'{made} figures ({len(maker.entries) - made} skipped) in '
        f'{time.perf_counter() - start:.0f} s: {os.path.join(maker.out, "index.html")}')
  for line in maker.header()[2:]:
    print(f'note: {line}')


if __name__ == '__main__':
  app.run(main, flags_parser=common.parse_flags)
