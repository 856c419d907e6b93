"""jaxviz: looking inside image classifiers with JAX.

Data flows one way: files -> `data` -> `preprocess` -> `models` -> `methods` -> `figures`.
"""

__version__ = '0.1.0'

from jaxviz.errors import InputError, JaxvizError, WeightsError
from jaxviz.paths import cache_dir
from jaxviz.loading import Model, imagenet_class_names, load_model
from jaxviz.models import ARCHITECTURES
from jaxviz.preprocess import (IMAGENET_MEAN, IMAGENET_STD, deprocess, preprocess,
                               valid_range)
from jaxviz.methods import (ClassVisualization, FoolingResult, attribute,
                            class_visualization, fooling_images, saliency_maps)
from jaxviz import parallel
from jaxviz._xla_cpu import compiler_options
