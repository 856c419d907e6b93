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
from jaxviz.inspection import activation_maps, first_layer_filters, layer_filters
from jaxviz.invariance import InvarianceStudy, invariance_study, transform_images
from jaxviz import top_activations  # the module: top_activations.top_activations(...)
from jaxviz.top_activations import TopK
from jaxviz import receptive_field  # the module: jaxviz.receptive_field.receptive_field
from jaxviz.methods.projection import max_units, projection_crop, unit_projection
from jaxviz.methods.feature_visualization import FeatureVisualization, channel_visualization
from jaxviz.methods.deep_dream import DeepDream, deep_dream
from jaxviz import parallel
from jaxviz._xla_cpu import compiler_options
