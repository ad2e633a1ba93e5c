"""Editing and interpolation from inverted states: prompt swap, Prompt-to-Prompt, slerp paths.

- :mod:`gnri.edit.edit`: plain prompt-swap editing after any inverter (GNRI's public editing)
  and the combination of inverted states (pair batches, blends);
- :mod:`gnri.edit.p2p`: Prompt-to-Prompt attention control (word swap, refinement) sampled as a
  source/target pair batch through the core's loop, on the adapter's attention hooks
  (:mod:`gnri.models.processors`);
- :mod:`gnri.edit.v_injection`: RF-Edit's / FireFlow's value injection in FLUX's single-stream blocks;
- :mod:`gnri.edit.interpolate`: spherical interpolation between two inversions, regenerated.
"""

from gnri.edit.edit import combine_results, edit_conditioning, prompt_swap, stack_pair
from gnri.edit.interpolate import interpolate, interpolation_weights, slerp
from gnri.edit.p2p import P2PController, make_controller, p2p_edit, p2p_sample

__all__ = [
    "P2PController", "combine_results", "edit_conditioning", "interpolate", "interpolation_weights",
    "make_controller", "p2p_edit", "p2p_sample", "prompt_swap", "slerp", "stack_pair",
]
