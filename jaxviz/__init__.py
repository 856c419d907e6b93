"""jaxviz: looking inside image classifiers with JAX.

Data flows one way: files -> `data` -> `preprocess` -> `models` -> `methods` -> `figures`.
"""

from jaxviz.errors import InputError, JaxvizError, WeightsError
from jaxviz.loading import Model, cache_dir, imagenet_class_names, load_model
from jaxviz.models import ARCHITECTURES
from jaxviz.preprocess import (IMAGENET_MEAN, IMAGENET_STD, deprocess, preprocess,
                               valid_range)

__version__ = '0.1.0'
from jaxviz.methods import (ClassVisualization, FoolingResult, class_visualization,
                            fooling_images, saliency_maps)
from jaxviz import parallel  # noqa: E402  (batches over devices, in chunks)
