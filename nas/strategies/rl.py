"""Policy-gradient search (REINFORCE), as in Zoph & Le 2017 and ENAS (Pham et al. 2018),
with a factorised controller: one independent categorical distribution per decision.

Why factorised instead of ENAS's LSTM: the decisions of our spaces are a flat dict, the
LSTM's coupling buys little at a few hundred evaluations, and a numpy policy costs
microseconds per step where a torch LSTM costs milliseconds (which matters when a
benchmark runs hundreds of searches). Each ask samples one choice per decision from
``softmax(logits[d])``; each tell does one REINFORCE step

    grad = A * d log pi(a) / d logits + entropy_weight * d H(pi) / d logits,
    A = r - baseline,   baseline <- decay * baseline + (1 - decay) * r,

and Adam ascends it.

Reward shaping (``reward_shaping``): with ``"rank"`` (default) ``r`` is the reward's
quantile among all rewards told so far, in [0, 1]. Raw accuracies have a long tail of
broken networks (NAS-Bench-201: 10% accuracy next to 94%) whose huge negative
advantages drown the small differences among good networks; the quantile is also
independent of the reward's units (mAP in [0, 1], accuracy in %), so one learning rate
fits every objective. (Rank-based fitness shaping as in natural evolution strategies;
on NAS-Bench-201 it took REINFORCE from ~85 to ~55-65 evaluations to match random
search at 150.) ``"std"`` uses the raw reward with the advantage divided by a running
standard deviation instead.

Reward: ``objective.score(metrics)``; in ``pareto`` mode the augmented Tchebycheff
scalarisation with a weight drawn uniformly in [0, 1] at each tell, normalised by the
running min/max of the values seen (the policy then spreads over the trade-offs).

Duplicates: a policy that concentrates keeps drawing networks it has already evaluated.
With ``reuse_results`` (default) such a draw, or one of a failed or pending network, is
not returned: the policy draws again (up to ``max_redraws`` times), so the budget goes to
new networks. Re-drawn known results do not update the policy: repeating one sample many
times would collapse it.

An architecture told without having been asked (resume, user seeds) is learned from as
if the policy had drawn it (an off-policy step; harmless at a few of them).
"""
from __future__ import annotations

import bisect
from collections import deque
from typing import Any, Mapping

import numpy as np

from search_spaces.architecture import Architecture
from search_spaces.base import SearchSpace
from search_spaces.errors import InputError

from ..objectives import Metrics, Objective
from .base import (
    Result, Strategy, check_count, check_flags, check_number, is_failure, random_state_from_json, random_state_to_json, register_strategy, result_from_json,
    result_to_json,
)

_ADAM_BETAS = (0.9, 0.999)
_ADAM_EPS = 1e-8


@register_strategy("rl")
class ReinforceStrategy(Strategy):
    """REINFORCE over independent categoricals, one per decision.

    Options:
      ``learning_rate`` (0.2): Adam step on the logits.
      ``baseline_decay`` (0.9): EMA factor of the reward baseline (and of the reward
          variance for ``reward_shaping="std"``).
      ``entropy_weight`` (0.05): entropy bonus; keeps the policy from collapsing early.
      ``reward_shaping`` ("rank"): "rank" or "std", see the module docstring.
      ``reuse_results`` (True) / ``max_redraws`` (100): see the module docstring.
    Defaults tuned on NAS-Bench-201 (bench/strategies_nb201.py, seeds 0-99 and
    2000-2299): lr in {0.02..0.4}, decay in {0.8, 0.9, 0.95}, entropy in {0, 0.05}.
    """

    @classmethod
    def check_options(cls, space: SearchSpace, objective: Objective, options: Mapping[str, Any]) -> None:
        check_number("rl", options, "learning_rate", "a number > 0", lambda v: v > 0)
        check_number("rl", options, "baseline_decay", "a number in [0, 1)", lambda v: 0 <= v < 1)
        check_number("rl", options, "entropy_weight", "a number >= 0", lambda v: v >= 0)
        check_count("rl", options, "max_redraws", 0)
        check_flags("rl", options, "reuse_results")
        if options.get("reward_shaping", "rank") not in ("rank", "std"):
            raise InputError(f"rl option 'reward_shaping': {options['reward_shaping']!r} is not 'rank' or 'std'")

    def __init__(self, space: SearchSpace, objective: Objective, seed: int = 0, *,
                 learning_rate: float = 0.2, baseline_decay: float = 0.9, entropy_weight: float = 0.05,
                 reward_shaping: str = "rank", reuse_results: bool = True, max_redraws: int = 100) -> None:
        super().__init__(space, objective, seed)
        self.check_options(space, objective, dict(learning_rate=learning_rate, baseline_decay=baseline_decay,
                                                  entropy_weight=entropy_weight, reward_shaping=reward_shaping,
                                                  max_redraws=max_redraws, reuse_results=reuse_results))
        self.reward_shaping = reward_shaping
        self.learning_rate = learning_rate
        self.baseline_decay = baseline_decay
        self.entropy_weight = entropy_weight
        self.reuse_results = reuse_results
        self.max_redraws = max_redraws
        self._decisions = space.decisions()
        self._names = list(self._decisions)
        sizes = np.array([len(c) for c in self._decisions.values()])
        # One row of logits per decision, padded to the widest; padding is masked out.
        self._mask = np.arange(sizes.max())[None, :] < sizes[:, None]
        self._rows = np.arange(len(sizes))
        self._logits = np.zeros(self._mask.shape)
        self._adam_m = np.zeros(self._mask.shape)
        self._adam_v = np.zeros(self._mask.shape)
        self._adam_t = 0
        self._baseline: float | None = None
        self._reward_var = 0.0
        self._rewards: list[float] = []  # sorted rewards told so far (rank shaping)
        self._value_bounds: list[list[float]] | None = None  # pareto: running min/max of values
        self._results: dict[str, Metrics] = {}  # canonical id -> metrics of every success told
        self._tried: dict[str, None] = {}  # canonical ids asked or told (failures included)
        self._pending: dict[str, deque[tuple[int, ...]]] = {}  # id -> drawn choice indices, per ask
        self._arch_cache: dict[tuple[int, ...], Architecture] = {}  # draws -> canonical arch (speed only)

    # ----- policy ------------------------------------------------------------------------
    def _probs(self) -> np.ndarray:
        x = np.where(self._mask, self._logits, -np.inf)
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def _draw(self) -> tuple[int, ...]:
        # Inverse-CDF draws from random.Random: all randomness in one serialisable generator.
        cdf = np.cumsum(self._probs(), axis=1)
        u = np.array([self.rng.random() for _ in self._names]) * cdf[:, -1]
        idx = (cdf <= u[:, None]).sum(axis=1)
        return tuple(int(i) for i in np.minimum(idx, self._mask.sum(axis=1) - 1))

    def _arch(self, indices: tuple[int, ...]) -> Architecture:
        arch = self._arch_cache.get(indices)
        if arch is None:
            if len(self._arch_cache) > 100_000:
                self._arch_cache.clear()
            arch = self.space.from_sample({n: self._decisions[n][i] for n, i in zip(self._names, indices)})
            self._arch_cache[indices] = arch
        return arch

    def _indices_of(self, arch: Architecture) -> tuple[int, ...]:
        out = []
        for name in self._names:
            value = arch.sample[name]
            out.append(next(i for i, c in enumerate(self._decisions[name]) if c == value and type(c) is type(value)))
        return tuple(out)

    def ask(self) -> Architecture | None:
        indices = self._draw()
        arch = self._arch(indices)
        for _ in range(self.max_redraws if self.reuse_results else 0):
            if arch.id not in self._tried:  # known results, failures and pending asks are re-drawn
                break
            indices = self._draw()
            arch = self._arch(indices)
        self._tried[arch.id] = None
        self._pending.setdefault(arch.id, deque()).append(indices)
        return arch

    # ----- learning ----------------------------------------------------------------------
    def _reward(self, metrics: Metrics) -> float:
        if not self.objective.is_multi_objective():
            return self.objective.score(metrics)
        return self.objective.scalarize(metrics, self.rng.random(), self._value_bounds)

    def _shape(self, reward: float) -> float:
        """Rank shaping: the reward's quantile among all rewards so far (ties count half)."""
        lo = bisect.bisect_left(self._rewards, reward)
        hi = bisect.bisect_right(self._rewards, reward)
        bisect.insort(self._rewards, reward)
        return (lo + 0.5 * (hi - lo)) / len(self._rewards) if len(self._rewards) > 1 else 0.5

    def _update(self, indices: tuple[int, ...], reward: float) -> None:
        if self.reward_shaping == "rank":
            reward = self._shape(reward)
        if self._baseline is None:
            self._baseline = reward
        advantage = reward - self._baseline
        d = self.baseline_decay
        self._reward_var = d * self._reward_var + (1 - d) * advantage ** 2
        self._baseline = d * self._baseline + (1 - d) * reward
        if self.reward_shaping == "std" and self._reward_var > 0:
            advantage /= np.sqrt(self._reward_var)
        p = self._probs()
        grad = -advantage * p  # d log p[a] / d logits = onehot(a) - p, per decision
        grad[self._rows, list(indices)] += advantage
        if self.entropy_weight:
            logp = np.log(np.where(self._mask, p, 1.0))  # padding: p = 0, log 1 = 0
            entropy = -(p * logp).sum(axis=1, keepdims=True)
            grad += self.entropy_weight * (-p * (logp + entropy))  # d H / d logits
        self._adam_t += 1
        b1, b2 = _ADAM_BETAS
        self._adam_m = b1 * self._adam_m + (1 - b1) * grad
        self._adam_v = b2 * self._adam_v + (1 - b2) * grad ** 2
        m_hat = self._adam_m / (1 - b1 ** self._adam_t)
        v_hat = self._adam_v / (1 - b2 ** self._adam_t)
        self._logits = self._logits + self.learning_rate * m_hat / (np.sqrt(v_hat) + _ADAM_EPS)

    def tell(self, arch: Architecture, result: Result) -> None:
        arch = self.space.canonicalize(arch)
        key = arch.id
        self._tried[key] = None
        queue = self._pending.get(key)
        indices = queue.popleft() if queue else self._indices_of(arch)  # unasked: off-policy step
        if queue is not None and not queue:
            del self._pending[key]
        if is_failure(result):
            return  # no reward to learn from; the network is not drawn again
        metrics = {str(k): float(v) for k, v in result.items()}
        if self.objective.is_multi_objective():
            values = self.objective.values(metrics)
            if self._value_bounds is None:
                self._value_bounds = [[v, v] for v in values]
            for b, v in zip(self._value_bounds, values):
                b[0], b[1] = min(b[0], v), max(b[1], v)
        self._results[key] = metrics
        self._update(indices, self._reward(metrics))

    # ----- state -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "rng": random_state_to_json(self.rng),
            "logits": self._logits.tolist(),
            "adam_m": self._adam_m.tolist(),
            "adam_v": self._adam_v.tolist(),
            "adam_t": self._adam_t,
            "baseline": self._baseline,
            "reward_var": self._reward_var,
            "rewards": list(self._rewards),
            "value_bounds": self._value_bounds,
            "results": {k: result_to_json(m) for k, m in self._results.items()},
            "tried": list(self._tried),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        random_state_from_json(self.rng, state["rng"])
        self._logits = np.asarray(state["logits"], dtype=float)
        self._adam_m = np.asarray(state["adam_m"], dtype=float)
        self._adam_v = np.asarray(state["adam_v"], dtype=float)
        self._adam_t = int(state["adam_t"])
        self._baseline = state["baseline"]
        self._reward_var = float(state["reward_var"])
        self._rewards = [float(r) for r in state["rewards"]]
        self._value_bounds = state["value_bounds"]
        self._results = {k: result_from_json(m) for k, m in state["results"].items()}
        self._tried = dict.fromkeys(state["tried"])
        self._pending = {}
