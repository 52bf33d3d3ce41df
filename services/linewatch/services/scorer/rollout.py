"""The models a running scorer uses: ACTIVE drives alerts, CANDIDATE is scored beside it (shadow). Both
follow the registry pointers without a restart; a version that fails verification is refused with an error
and the last good one stays in use."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from linewatch.core.heap import freeze_long_lived
from linewatch.services.scorer import registry
from linewatch.services.scorer.models import ClassModel, pick
from linewatch.services.scorer.registry import Role

log = logging.getLogger(__name__)


@dataclass
class Loaded:
    version: str | None = None
    models: dict[str, ClassModel] = field(default_factory=dict)
    refused: str | None = None  # the last version refused, so its error is logged once
    unlearned: set[tuple[str, str]] = field(default_factory=set)  # (class, recipe) reported as not learned

    def model_for(self, equipment_class: str, recipe: str | None) -> ClassModel | None:
        """`pick`, and a warning, once a class and recipe, when the class's model never ran the recipe."""
        model = pick(self.models, equipment_class, recipe)
        if (
            model is None
            and recipe
            and equipment_class in self.models
            and (equipment_class, recipe) not in self.unlearned
        ):
            self.unlearned.add((equipment_class, recipe))
            log.warning(
                "recipe not learned, its frames are not scored: train on normal running data of it",
                extra={"version": self.version, "equipment_class": equipment_class, "recipe": recipe},
            )
        return model


class ModelSet:
    def __init__(self, root: Path, key: bytes) -> None:
        self.root = root
        self._key = key
        self.roles: dict[Role, Loaded] = {"ACTIVE": Loaded(), "CANDIDATE": Loaded()}
        self.failures = 0

    def refresh(self) -> None:
        for role, loaded in self.roles.items():
            try:
                wanted = registry.pointed(self.root, role)
            except registry.ModelVerificationError as exc:
                wanted = f"unreadable {role} pointer: {exc}"  # refused below, once
            if wanted == loaded.version or wanted == loaded.refused:
                continue
            if wanted is None:
                self.roles[role] = Loaded()
                log.info("model cleared", extra={"role": role})
                continue
            try:
                models = registry.load(self.root, wanted, self._key)
            except Exception as exc:  # whatever is wrong with it, the last good model stays in use
                self.failures += 1
                loaded.refused = wanted
                log.error(
                    "model refused, keeping the last good one",
                    extra={"role": role, "version": wanted, "kept": loaded.version, "error": str(exc)},
                )
                continue
            self.roles[role] = Loaded(wanted, models)
            freeze_long_lived()
            log.info("model loaded", extra={"role": role, "version": wanted, "classes": sorted(models)})

    @property
    def active(self) -> Loaded:
        return self.roles["ACTIVE"]

    @property
    def candidate(self) -> Loaded:
        return self.roles["CANDIDATE"]
