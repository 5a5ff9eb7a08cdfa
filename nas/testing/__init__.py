"""Helpers for plugin authors: a toy search space with known optima and the strategy
conformance suite (:func:`run_strategy_conformance`, :data:`CHECKS`)."""
from .strategy_conformance import CHECKS, StrategyFactory, run_strategy_conformance
from .toy_space import ToySpace, toy_metrics

__all__ = ["CHECKS", "StrategyFactory", "run_strategy_conformance", "ToySpace", "toy_metrics"]
