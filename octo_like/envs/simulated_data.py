"""The simulated mixes' `GeneratedDatasets`: MetaWorld demonstrations collected on first use.

`make train` pretrains on scripted-expert demonstrations that no one has to download: the entry
point builds `SimulatedDatasets(mix, config.simulation)` and calls `ensure()` (main process)
before the loop, which then reads ``metaworld_<variant>`` from `sources()` like any dataset.
Each collection lives under ``simulation.cache_dir/<fingerprint of what was collected>``, so a
changed task list or episode count collects anew and an unchanged one is reused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

from octo_like import storage
from octo_like.data.config import DatasetSource
from octo_like.data.oxe.mixes import resolve_mix
from octo_like.envs.demos import (
    CollectionConfig,
    all_instructions,
    cache_root,
    ensure_demonstrations,
)
from octo_like.envs.tasks import pretraining_tasks
from octo_like.envs.variants import variant_of_mix_member
from octo_like.model.language.vocabulary import (
    EMBEDDED_TOKENIZER_VERSION,
    write_embedded_tokenizer,
)
from octo_like.training.config import SimulationDataConfig


@dataclasses.dataclass(frozen=True)
class SimulatedDatasets:
    """`octo_like.data.generated.GeneratedDatasets` for a simulated mix (e.g. ``metaworld``)."""

    mix: str
    simulation: SimulationDataConfig

    def collection(self, variant: str) -> CollectionConfig:
        s = self.simulation
        return CollectionConfig(
            tasks=pretraining_tasks(s.tasks, s.held_out),
            episodes_per_task=s.episodes_per_task,
            val_episodes_per_task=s.val_episodes_per_task,
            variant=variant,
            image_size=s.image_size,
            expert_noise=s.expert_noise,
            seed=s.seed,
            steps_after_success=s.steps_after_success,
            image_encoding=s.image_encoding,
            action_labels=s.action_labels,
            expert_gain=s.expert_gain,
        )

    def _variant(self, dataset_name: str) -> str:
        return variant_of_mix_member(self.mix, dataset_name).name

    def sources(self) -> list[DatasetSource]:
        return [
            DatasetSource(
                name=spec.name,
                location=cache_root(
                    self.simulation.cache_dir, self.collection(self._variant(spec.name))
                ),
                weight=weight,
            )
            for spec, weight in resolve_mix(self.mix)
        ]

    def instructions(self) -> list[str]:
        s = self.simulation
        return all_instructions(pretraining_tasks(s.tasks, s.held_out))

    def tokenizer_dir(self) -> str:
        texts = "\n".join([f"embedded-v{EMBEDDED_TOKENIZER_VERSION}", *self.instructions()])
        digest = hashlib.sha256(texts.encode()).hexdigest()[:12]
        return os.path.join(os.path.expanduser(self.simulation.cache_dir), f"tokenizer-{digest}")

    def ensure(self) -> None:
        """Collects each dataset of the mix if missing, then its tokenizer if missing."""
        for source in self.sources():
            ensure_demonstrations(
                self.simulation.cache_dir,
                self.collection(self._variant(source.name)),
                workers=self.simulation.workers,
            )
        tokenizer_dir = self.tokenizer_dir()
        if not storage.exists(storage.join(tokenizer_dir, "spiece.model")):
            write_embedded_tokenizer(tokenizer_dir, self.instructions())
