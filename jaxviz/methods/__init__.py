"""The visualisation methods: pure functions of (apply_fn, params, inputs, hyperparameters,
key), jit-compiled, batched with vmap. They import no model code and no matplotlib.

Each method is its per-example mathematics; `_batched` runs it over batches, devices and
chunks, `_ascent` is the input-optimisation loop, `attribution` the attribution protocol,
`attacks` the pixel-budget attacks, `relu_rules` the ReLU backward rules of guided backprop and the DeconvNet.
"""

from jaxviz.methods.attribution import (REDUCTIONS, attribute, attribution,
                                        attribution_maps, gradient, l2, max_abs, methods,
                                        sum_abs)
from jaxviz.methods.attacks import AttackResult, attack_one, bim, fgsm, pgd, start_point
from jaxviz.methods.class_visualization import (ClassVisualization, class_visualization,
                                                class_visualization_one)
from jaxviz.methods.fooling import FoolingResult, fooling_image, fooling_images
from jaxviz.methods.gradient_x_input import gradient_x_input
from jaxviz.methods.grad_cam import (grad_cam, grad_cam_one, guided_grad_cam,
                                     guided_grad_cam_one)
from jaxviz.methods.guided import (deconvnet, deconvnet_one, guided_backprop,
                                   guided_backprop_one)
from jaxviz.methods.integrated_gradients import (IntegratedGradients, integrated_gradients,
                                                 integrated_gradients_one, path_rule)
from jaxviz.methods.layer_gradient import layer_gradient, layer_gradient_one
from jaxviz.methods.layers import DEFAULT_LAYERS
from jaxviz.methods.deep_dream import DeepDream, deep_dream
from jaxviz.methods.feature_visualization import (FeatureVisualization,
                                                  channel_visualization)
from jaxviz.methods.occlusion import Occlusion, occlusion, occlusion_one
from jaxviz.methods.relu_rules import count_relus, with_relu_rule
from jaxviz.methods.saliency import saliency_map, saliency_maps
from jaxviz.methods.smoothgrad import smoothgrad, smoothgrad_one
