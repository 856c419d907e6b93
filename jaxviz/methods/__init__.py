"""The visualisation methods: pure functions of (apply_fn, params, inputs, hyperparameters,
key), jit-compiled, batched with vmap. They import no model code and no matplotlib.

Each method is its per-example mathematics; `_batched` runs it over batches, devices and
chunks, `_ascent` is the input-optimisation loop, `attribution` the attribution protocol.
"""

from jaxviz.methods.attribution import (REDUCTIONS, attribute, attribution, gradient, l2,
                                        max_abs, methods, sum_abs)
from jaxviz.methods.class_visualization import (ClassVisualization, class_visualization,
                                                class_visualization_one)
from jaxviz.methods.fooling import FoolingResult, fooling_image, fooling_images
from jaxviz.methods.gradient_x_input import gradient_x_input
from jaxviz.methods.saliency import saliency_map, saliency_maps
