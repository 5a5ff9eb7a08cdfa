"""Which detection data an evaluation trains and validates on, from a config block.

``DataConfig(source="synthetic")`` is the built-in generated dataset (the default);
any other ``source`` is a dataset folder (COCO, YOLO or VOC, detected from the layout).
"""
from __future__ import annotations

from dataclasses import dataclass

from .trainer import PreparedData, prepare


@dataclass(frozen=True)
class DataConfig:
    source: str = "synthetic"     # "synthetic" or a dataset folder
    format: str | None = None     # for folders: coco | yolo | voc (default: detected)
    train_split: str = "train"
    val_split: str = "val"
    n_train: int = 512            # images used (the first n); synthetic: images generated
    n_val: int = 128
    seed: int = 0                 # synthetic only: which generated images

    def load(self, input_size: int) -> tuple[PreparedData, PreparedData]:
        """(train, val) letterboxed to ``input_size``; cached per process."""
        if self.source == "synthetic":
            from .synthetic import make_synthetic

            train = make_synthetic(self.n_train, input_size, seed=self.seed, split="train")
            val = make_synthetic(self.n_val, input_size, seed=self.seed, split="val")
        else:
            from .datasets import load_dataset

            train = load_dataset(self.source, self.train_split, self.format)
            val = load_dataset(self.source, self.val_split, self.format)
        return prepare(train, input_size, self.n_train), prepare(val, input_size, self.n_val)

    def num_classes(self) -> int:
        if self.source == "synthetic":
            from .synthetic import SYNTHETIC_CLASSES

            return len(SYNTHETIC_CLASSES)
        from .datasets import load_dataset

        return load_dataset(self.source, self.train_split, self.format).num_classes
