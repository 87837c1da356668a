"""The mask search (SPEC 6): modes, stages, quantizers, evaluation engines and records."""

from .engine import Engine, NaiveEngine
from .modes import MODES, Mode
from .options import SearchOptions
from .plan import Piece, SitePlan
from .records import EvalResult
from .run import ModeResult, Search

__all__ = ["MODES", "Engine", "EvalResult", "Mode", "ModeResult", "NaiveEngine", "Piece", "Search", "SearchOptions",
           "SitePlan"]  # fmt: skip
