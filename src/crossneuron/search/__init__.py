"""The mask search (SPEC 6): targets, quantizers, evaluation engines, records and results."""

from .engine import EvalResult, NaiveEngine
from .plan import Piece, SitePlan
from .run import SearchOptions, run_search

__all__ = ["EvalResult", "NaiveEngine", "Piece", "SearchOptions", "SitePlan", "run_search"]
