"""Random search: uniform samples of the space, never proposing the same network twice.

The baseline every other strategy has to beat (Li & Talwalkar 2019 showed it is a hard
one). Works in every objective mode because it ignores the results.
"""
from __future__ import annotations

import itertools
from typing import Any, Mapping

from search_spaces.architecture import Architecture
from search_spaces.base import SearchSpace

from ..objectives import Objective
from .base import Result, Strategy, check_count, check_number, random_state_from_json, random_state_to_json, register_strategy


@register_strategy("random")
class RandomSearch(Strategy):
    """Uniform sampling via ``space.sample``, skipping networks already proposed or told.

    Options:
      ``max_tries`` (100): samples drawn per ask to find an unseen network. When all of
          them were seen, a space of at most ``enumerate_limit`` points is enumerated and
          an unseen point is drawn uniformly from the rest (None when none is left); a
          larger space returns the last (duplicate) sample rather than stopping a search
          that still has room.
      ``enumerate_limit`` (65536): see above.
    """

    @classmethod
    def check_options(cls, space: SearchSpace, objective: Objective, options: Mapping[str, Any]) -> None:
        check_count("random", options, "max_tries", 1)
        check_number("random", options, "enumerate_limit", "a number >= 0", lambda v: v >= 0)

    def __init__(self, space: SearchSpace, objective: Objective, seed: int = 0, *,
                 max_tries: int = 100, enumerate_limit: int = 65536) -> None:
        super().__init__(space, objective, seed)
        self.check_options(space, objective, dict(max_tries=max_tries, enumerate_limit=enumerate_limit))
        self.max_tries = max_tries
        self.enumerate_limit = enumerate_limit
        self._seen: dict[str, None] = {}  # ordered set of canonical ids
        self._all: dict[str, Architecture] | None = None  # lazily enumerated small space

    def ask(self) -> Architecture | None:
        arch = None
        for _ in range(self.max_tries):
            arch = self.space.sample(self.rng)
            if arch.id not in self._seen:
                break
        else:
            if self.space.size() <= self.enumerate_limit:
                unseen = [a for key, a in self._enumerate().items() if key not in self._seen]
                if not unseen:
                    return None
                arch = self.rng.choice(unseen)
        assert arch is not None
        self._seen[arch.id] = None
        return arch

    def _enumerate(self) -> dict[str, Architecture]:
        if self._all is None:
            decisions = self.space.decisions()
            self._all = {}
            for values in itertools.product(*decisions.values()):
                arch = self.space.from_sample(dict(zip(decisions, values)))
                self._all.setdefault(arch.id, arch)
        return self._all

    def tell(self, arch: Architecture, result: Result) -> None:
        # Results do not steer random search; an unasked architecture is only marked seen.
        self._seen[self._key(arch)] = None

    def state_dict(self) -> dict[str, Any]:
        return {"rng": random_state_to_json(self.rng), "seen": list(self._seen)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        random_state_from_json(self.rng, state["rng"])
        self._seen = dict.fromkeys(state["seen"])
