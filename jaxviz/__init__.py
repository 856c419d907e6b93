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
from jaxviz.ops import upsample
from jaxviz.methods import (AttackResult, ClassVisualization, FoolingResult, IntegratedGradients,
                            Occlusion, attribute, attribution_maps, bim, class_visualization,
                            deconvnet, fgsm, fooling_images, grad_cam, guided_backprop,
                            guided_grad_cam, integrated_gradients, layer_gradient,
                            occlusion, pgd, saliency_maps, smoothgrad)
from jaxviz.methods import methods as attribution_methods
from jaxviz import parallel
from jaxviz._xla_cpu import compiler_options
