"""Per-sample features from a sliding window, computed for a whole block of samples at once: each sensor's
value, its change over the window, its rolling standard deviation, and for controlled values (`tracks` in
the plant model) the control deviation from the setpoint."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from linewatch.core.plant import EquipmentClass

WINDOW = 10  # samples


@dataclass(frozen=True)
class FeatureLayout:
    sensors: list[str]
    names: list[str]
    tracked: list[tuple[int, int]]  # (process value, setpoint) sensor indices
    of_sensor: list[list[int]]  # feature columns that belong to each sensor
    std_columns: slice

    @classmethod
    def for_class(cls, spec: EquipmentClass) -> FeatureLayout:
        return cls.build(list(spec.sensors), {n: s.tracks for n, s in spec.sensors.items() if s.tracks})

    @property
    def tracks(self) -> dict[str, str]:
        return {self.sensors[pv]: self.sensors[sp] for pv, sp in self.tracked}

    @classmethod
    def build(cls, sensors: list[str], tracks: dict[str, str]) -> FeatureLayout:
        """Also how a saved model rebuilds its layout, without the plant file."""
        s = len(sensors)
        tracked = [(sensors.index(pv), sensors.index(sp)) for pv, sp in tracks.items()]
        names = [f"{sensor}:{kind}" for kind in ("value", "delta", "std") for sensor in sensors]
        names += [f"{sensors[pv]}:deviation" for pv, _ in tracked]
        of_sensor = [[i, s + i, 2 * s + i] for i in range(s)]
        for k, (pv, _) in enumerate(tracked):
            of_sensor[pv].append(3 * s + k)
        return cls(sensors, names, tracked, of_sensor, slice(2 * s, 3 * s))


@dataclass
class FeatureWindow:
    """The last WINDOW rows of one unit's (forward-filled) readings, carried from frame to frame."""

    history: np.ndarray | None = None
    seen: int = 0  # rows since the last reset; the first WINDOW rows have no full window yet

    def reset(self) -> None:
        self.history, self.seen = None, 0

    def build(
        self, block: np.ndarray, layout: FeatureLayout, provided: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Features, missing mask (n x s) and which rows have a full window, for `block` (n x s, NaN where a
        sensor has no value). Only sensors the source `provided` (declares) count as missing."""
        missing = np.isnan(block)
        filled = _forward_fill(block, missing, None if self.history is None else self.history[-1])
        history = np.repeat(filled[:1], WINDOW, axis=0) if self.history is None else self.history
        rows = np.vstack([history, filled])
        n = len(block)
        current = rows[WINDOW:]
        columns = [current, current - rows[:n], sliding_window_view(rows, WINDOW, axis=0)[1 : n + 1].std(axis=-1)]
        if layout.tracked:
            pv, sp = zip(*layout.tracked, strict=True)
            columns.append(current[:, list(pv)] - current[:, list(sp)])
        complete = np.arange(self.seen, self.seen + n) >= WINDOW
        self.history = rows[-WINDOW:]
        self.seen += n
        return np.hstack(columns), missing & provided, complete


def _forward_fill(block: np.ndarray, missing: np.ndarray, last: np.ndarray | None) -> np.ndarray:
    if not missing.any():
        return block
    filled = block.copy()
    previous = last if last is not None else np.nanmedian(block, axis=0)
    for row, gaps in zip(filled, missing, strict=True):
        row[gaps] = previous[gaps]
        previous = row
    return np.asarray(np.nan_to_num(filled))
