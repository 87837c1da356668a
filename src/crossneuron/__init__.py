"""crossneuron: predict zero-valued CNN activations from their neighbours and count the MACs saved."""

from .errors import CrossneuronError
from .models import MODELS, build_model, model_names
from .net import PredictiveNet, SiteStats, Stats, attach
from .patterns import code_to_pattern, diagonal, enumerate_patterns, pattern_codes, pattern_to_code
from .search.ray_engine import RayBackend
from .sites import Site
from .tensors import optimize

__version__ = "0.24.0"

__all__ = [
    "MODELS",
    "CrossneuronError",
    "PredictiveNet",
    "RayBackend",
    "Site",
    "SiteStats",
    "Stats",
    "attach",
    "build_model",
    "code_to_pattern",
    "diagonal",
    "enumerate_patterns",
    "model_names",
    "optimize",
    "pattern_codes",
    "pattern_to_code",
]
