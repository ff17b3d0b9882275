"""Two reasoning-gym datasets that misbehave on purpose (imported by reward workers through
R1CORE_REWARD_PRELOAD in test_tasks_reasoning_gym.py): their generator hangs for seeds = 0 mod 4
and raises for seeds = 1 mod 4; their verifier spins forever on the answer "hang" and raises on "raise"."""
import time
from dataclasses import dataclass
from typing import Optional

from reasoning_gym.dataset import ProceduralDataset
from reasoning_gym.factory import DATASETS, register_dataset


@dataclass
class BrokenConfig:
    seed: Optional[int] = None
    size: int = 1

    def validate(self):
        pass


class BrokenDataset(ProceduralDataset):
    def __init__(self, config: BrokenConfig):
        super().__init__(config=config, seed=config.seed, size=config.size)

    def __getitem__(self, idx):
        s = self.seed + idx
        if s % 4 == 0:
            time.sleep(3600)
        if s % 4 == 1:
            raise RuntimeError("broken generator")
        return {"question": f"What is {s} + 1?", "answer": str(s + 1), "metadata": {}}

    def score_answer(self, answer, entry):
        if answer == "hang":  # busy, as a runaway verifier is: the reward limit counts CPU time
            while True:
                pass
        if answer == "raise":
            raise RuntimeError("broken verifier")
        return float(answer == entry["answer"])


if "r1core_test_broken" not in DATASETS:
    register_dataset("r1core_test_broken", BrokenDataset, BrokenConfig)
