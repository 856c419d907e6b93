"""Model-agnostic metrics that evaluate the methods: localisation against object masks,
faithfulness (deletion / insertion), sanity checks by weight randomisation, similarity of
maps, and summaries of fooling and class-visualisation results.

Like the methods, they are pure functions of (apply_fn, params, inputs) where a model is
involved, jit-compiled where they compute on arrays, and import no model code and no
matplotlib (figures for them are in `jaxviz.figures`).
"""

from jaxviz.metrics.faithfulness import (DeletionInsertion, blur_baseline, deletion_insertion,
                                         saliency_ranks)
from jaxviz.metrics.localization import (MaskMass, center_baseline, center_map, mask_mass,
                                         pointing_game)
from jaxviz.metrics.sanity import (SanityCheck, cascading_randomization,
                                   independent_randomization, input_gradient_fn,
                                   parameterized_layers, randomize_layers)
from jaxviz.metrics.similarity import average_ranks, normalize_maps, spearman, ssim
from jaxviz.metrics.summaries import class_visualization_summary, fooling_summary
