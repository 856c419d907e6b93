"""The visualisation methods: pure functions of (apply_fn, params, inputs, hyperparameters,
key), jit-compiled, batched with vmap. They import no model code and no matplotlib."""

from jaxviz.methods.class_visualization import (ClassVisualization, class_visualization,
                                                class_visualization_one, gaussian_blur)
from jaxviz.methods.fooling import FoolingResult, fooling_image, fooling_images
from jaxviz.methods.saliency import saliency_map, saliency_maps
