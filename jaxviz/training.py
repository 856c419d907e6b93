"""Trains the "shapes" model (a ShapesNet on jaxviz.shapes) and caches it.

No pretrained weights can be downloaded everywhere, so jaxviz trains a model of its own on
data it generates, to show that its methods find what a trained model looks at. Training
is reproducible from one seed: the init, every training batch (fresh images each step,
from the shapes stream (seed, 0), generated a few steps ahead) and the held-out test set
(stream (seed, 1)).
"""

import dataclasses
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxviz import checkpoint, models, shapes, validation
from jaxviz.paths import shapes_weights_path as weights_path
from jaxviz.errors import InputError


@dataclasses.dataclass(frozen=True)
class ShapesTraining:
  """How the shapes model is trained (the defaults reach >= 95% held-out accuracy).

  Attributes:
    seed: init and data seed.
    steps: optimiser steps; each sees `batch_size` images never seen before.
    batch_size: images per step.
    learning_rate: peak AdamW rate (linear warm-up over 50 steps, cosine decay to 0).
    weight_decay: AdamW's decoupled weight decay.
    test_size: held-out images for the reported accuracy.
    input_noise: std of uniform noise added to every training pixel (in [0, 1] pixel
      units; fresh each step; 0 for none). Batch norm's statistics are re-estimated on
      clean images after training. The noise keeps the network from relying on
      pixel-level patterns: without it, class visualisation drifts into the 'star'
      class (docs/validation.md).
  """
  seed: int = 0
  steps: int = 2500
  batch_size: int = 32
  learning_rate: float = 5e-3
  weight_decay: float = 1e-4
  test_size: int = 1000
  input_noise: float = 0.03


_RECALIBRATION_BATCHES = 40


def _normalise(images_uint8):
  mean, std = jnp.asarray(shapes.MEAN), jnp.asarray(shapes.STD)
  return (images_uint8.astype(jnp.float32) / 255.0 - mean) / std


def _uniform_noise(key, shape, std):
  """Uniform noise of standard deviation `std`, from 8 random bits a value.

  Four values per 32-bit draw, where `jax.random.normal` spends one (threefry) 32-bit word
  per value: about 6x cheaper.
  """
  size = int(np.prod(shape))
  words = jax.random.bits(key, (-(-size // 4),), jnp.uint32)
  u = jax.lax.bitcast_convert_type(words, jnp.uint8).reshape(-1)[:size].reshape(shape)
  return ((u.astype(jnp.float32) + 0.5) / 256 - 0.5) * (np.sqrt(12.0) * std)


def accuracy(apply_fn, params, data: shapes.ShapesData, batch_size: int = 250) -> float:
  """Top-1 accuracy of a model on uint8 shapes images."""
  predict = jax.jit(lambda p, x: jnp.argmax(apply_fn(p, _normalise(x)), -1))
  hits = sum(int(jnp.sum(predict(params, data.images[i:i + batch_size])
                         == data.labels[i:i + batch_size]))
             for i in range(0, len(data.labels), batch_size))
  return hits / max(len(data.labels), 1)


def train(config: ShapesTraining = ShapesTraining(), progress: bool = True):
  """Trains a ShapesNet from scratch.

  Args:
    config: a `ShapesTraining`.
    progress: show a tqdm progress bar (stderr) with the running loss and accuracy.

  Returns:
    (params, metadata): params as the pure dict `load_model` fills (eval mode: batch norm
    uses the running statistics), metadata as stored beside them in the weights file.
  """
  if config.steps < 1 or config.batch_size < 1:
    raise InputError(f'steps and batch_size must be positive, got {config}')
  validation.check_positive(config.learning_rate, 'learning_rate')
  validation.check_positive(config.input_noise, 'input_noise', zero=True)
  start = time.perf_counter()
  model = models.build('shapes', seed=config.seed)
  model.train()
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, config.learning_rate, min(50, config.steps // 4), config.steps)
  optimizer = nnx.Optimizer(model, optax.adamw(schedule, weight_decay=config.weight_decay),
                            wrt=nnx.Param)

  stream = jax.random.key(shapes.seed_int((config.seed, 0)))
  label_key = jax.random.key(shapes.seed_int((config.seed, 2)))
  noise_key = jax.random.key(shapes.seed_int((config.seed, 3)))
  n = config.batch_size

  # The images of `block` steps per call, queued ahead of the steps that use them. Drawn
  # inside the training step they cost about 3x as much on a 2-core CPU (measured: they
  # added 58 ms to a 126 ms step at batch 32; 20 ms on their own). At batch sizes that
  # divide 64, a call draws 64 images, generate's chunk: one compiled generator serves
  # both the training batches and the test set.
  block = max(1, 64 // n)
  step_labels = jax.jit(jax.vmap(lambda i: jax.random.randint(
      jax.random.fold_in(label_key, i), (n,), 0, len(shapes.CLASS_NAMES))))

  def batches(first_step):
    steps = first_step + np.arange(block, dtype=np.int32)
    labels = step_labels(steps)
    indices = (steps[:, None] * n + np.arange(n, dtype=np.int32)).reshape(-1)
    # size passed as generate passes it: jit keys a static argument by how it is given,
    # so the test set's generate() reuses this compiled generator (~5 s of compilation).
    images, _ = shapes.sample(stream, indices, labels.reshape(-1), shapes.IMAGE_SIZE)
    return images.reshape(block, n, *images.shape[1:]), labels

  @nnx.jit
  def step(model, optimizer, images, labels, index):
    x = _normalise(images)
    if config.input_noise:
      x = x + _uniform_noise(jax.random.fold_in(noise_key, index), x.shape,
                             config.input_noise / jnp.asarray(shapes.STD))

    def loss_fn(model):
      logits = model(x)
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
      return loss, jnp.mean(jnp.argmax(logits, -1) == labels)
    (loss, acc), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    optimizer.update(model, grads)
    return loss, acc

  bar = None
  if progress:
    from tqdm import tqdm
    bar = tqdm(total=config.steps, desc='training the shapes model', unit='step',
               file=sys.stderr, dynamic_ncols=True)
  loss_avg = acc_avg = None
  queued = batches(0)
  for i in range(config.steps):
    if i % block == 0:
      images, labels = queued
      if i + block < config.steps:
        queued = batches(i + block)  # dispatched now, computed meanwhile
    loss, acc = step(model, optimizer, images[i % block], labels[i % block],
                     jnp.int32(i))
    if bar is not None and (i % 10 == 9 or i == config.steps - 1):
      loss, acc = float(loss), float(acc)
      loss_avg = loss if loss_avg is None else 0.8 * loss_avg + 0.2 * loss
      acc_avg = acc if acc_avg is None else 0.8 * acc_avg + 0.2 * acc
      bar.set_postfix(loss=f'{loss_avg:.3f}', acc=f'{acc_avg:.2f}', refresh=False)
      bar.update(i + 1 - bar.n)
  if bar is not None:
    bar.close()
  if config.input_noise:
    # Batch norm's running statistics describe noisy images; evaluation sees clean ones.
    # Re-estimate them on 40 clean batches (never trained on) in training mode, without
    # a gradient step: the momentum 0.9 leaves 1.5% of the noisy estimate.
    @nnx.jit
    def recalibrate(model, images):
      model(_normalise(images))
    for j in range(-(-_RECALIBRATION_BATCHES // block)):
      images, _ = batches(config.steps + j * block)
      for b in range(block):
        recalibrate(model, images[b])
  model.eval()
  apply, _, params = models.functionalize(model)
  params = jax.tree.map(np.asarray, params)
  test = shapes.generate(config.test_size, seed=(config.seed, 1))
  metadata = {
      'model': 'shapes', 'source': 'trained', 'seed': config.seed,
      'training': dataclasses.asdict(config),
      'test_accuracy': accuracy(apply, params, test),
      'train_seconds': round(time.perf_counter() - start, 1),
      'image_size': shapes.IMAGE_SIZE, 'class_names': list(shapes.CLASS_NAMES),
      'mean': list(shapes.MEAN), 'std': list(shapes.STD),
  }
  return params, metadata


def ensure_weights(seed: int = 0, progress: bool = True) -> str:
  """The cached trained shapes model of `seed`, training (and caching) it if missing.

  Training takes about 2.5 minutes on two CPU cores (2500 steps); the file is written
  atomically, so an interrupted run leaves nothing half-written behind.
  """
  path = weights_path(seed)
  if not os.path.isfile(path):
    print(f'training the shapes model (seed {seed}; about 2.5 minutes on 2 CPU cores), '
          f'cached at {path}', file=sys.stderr)
    params, metadata = train(ShapesTraining(seed=seed), progress=progress)
    checkpoint.save(path, params, metadata)
  return path
