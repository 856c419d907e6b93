"""The main job: get ImageNet weights (or say why not) and classify the sample photos.

  python scripts/demo.py [--model=squeezenet1_1] [--weights=imagenet] [--images=samples]
"""

import jax
import numpy as np
from absl import app, flags

import jaxviz
from jaxviz import data
import common

_MODEL = flags.DEFINE_enum('model', 'squeezenet1_1', sorted(jaxviz.ARCHITECTURES),
                           'Architecture.')
_WEIGHTS = flags.DEFINE_string('weights', 'imagenet',
                               "'imagenet', 'random', or a converted .npz file.")
_IMAGES = flags.DEFINE_string('images', 'samples',
                              "'samples', a folder of images, an image, or an .npz.")
_TOP = flags.DEFINE_integer('top', 3, 'How many classes to print per image.')


@common.one_line_errors
def main(argv):
  del argv
  model = common.resolve_model(_MODEL.value, _WEIGHTS.value)
  images = data.load_images(_IMAGES.value)
  logits = jax.jit(model.apply)(model.params, model.preprocess(images.images))
  probs = np.asarray(jax.nn.softmax(logits))
  source = model.metadata.get('source')
  print(f'{model.name} ({source} weights) on {len(images.names)} images:')
  for name, p in zip(images.names, probs):
    top = np.argsort(-p)[:_TOP.value]
    print(f'  {name:>14}: ' + ', '.join(f'{model.class_names[k]} {p[k]:.1%}' for k in top))


if __name__ == '__main__':
  app.run(main)
