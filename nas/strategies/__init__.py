"""Search strategies: the :class:`Strategy` contract, its registry and the built-ins
(``random``, ``evolution``, ``rl``, ``tpe``, ``darts``), which are imported on first look-up."""
from .base import (
    ENTRY_POINT_GROUP, Result, Strategy, checked_strategy_class, get_strategy, get_strategy_class, list_strategies, register_strategy,
)

__all__ = [
    "ENTRY_POINT_GROUP", "Result", "Strategy", "checked_strategy_class", "get_strategy", "get_strategy_class", "list_strategies",
    "register_strategy",
]
