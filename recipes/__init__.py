"""Built-in recipes: complete experiments selected with ``recipe=NAME`` (configs/recipe/NAME.yaml)."""

from brevetti_pipe.recipes import vials_classification, vials_segmentation

__all__ = ["vials_classification", "vials_segmentation"]
