"""Per-sample features of one unit's stream, computed for a whole block of samples at once and carried from
block to block in a `StreamState`:

* signals: each sensor's value and, for controlled values (`tracks` in the plant model), the control deviation
  from the setpoint; with `lags`, the previous samples' signals too (a dynamic model, where autocorrelation
  calls for it);
* smoothed: an exponentially weighted mean of the features (slow drifts and small persistent shifts);
* rates: each signal's change since the previous sample (spikes, jumps), and the exponentially weighted mean
  of its square (roughness: intermittent spikes, noise that grows);
* unchanged: for how many samples each sensor has kept exactly the same value (stuck transmitters).

Everything counts in samples, not seconds, so 1 s and 5 min equipment behave alike: a silence longer than
`GAP_PERIODS` sample periods restarts the stream, and every sample after the first is scored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import msgspec
import numpy as np
from scipy.signal import lfilter

from linewatch.core.plant import EquipmentClass

EWMA_LAMBDA = 0.1  # weight of the newest sample: a memory of about ten samples
# The smoothed features start from a stream's first sample, so they are as noisy as one sample at first: the
# drift detectors wait until the start has faded to under 5 % of the average.
SMOOTH_WARMUP = math.ceil(math.log(0.05) / math.log(1 - EWMA_LAMBDA))
GAP_PERIODS = 5.0  # a longer silence restarts the stream (rates and smoothing would span the gap)


@dataclass(frozen=True)
class FeatureLayout:
    sensors: list[str]
    tracks: dict[str, str] = field(default_factory=dict)  # controlled value -> its setpoint sensor
    lags: int = 0

    @classmethod
    def for_class(cls, spec: EquipmentClass, lags: int = 0) -> FeatureLayout:
        tracks = {name: s.tracks for name, s in spec.sensors.items() if s.tracks}
        return cls(list(spec.sensors), tracks, lags)

    @cached_property
    def signals(self) -> list[str]:
        return [*self.sensors, *(f"{pv}:deviation" for pv in self.tracks)]

    @cached_property
    def names(self) -> list[str]:
        return [*self.signals, *(f"{s}@-{lag}" for lag in range(1, self.lags + 1) for s in self.signals)]

    @cached_property
    def owner(self) -> np.ndarray:
        """For each feature, the sensor it speaks for (a deviation for its controlled value)."""
        per_signal = [*range(len(self.sensors)), *(self.sensors.index(pv) for pv in self.tracks)]
        return np.array(per_signal * (self.lags + 1))

    @cached_property
    def _deviation_index(self) -> tuple[list[int], list[int]]:
        return [self.sensors.index(pv) for pv in self.tracks], [self.sensors.index(sp) for sp in self.tracks.values()]

    def signal_block(self, values: np.ndarray) -> np.ndarray:
        """Sensor values (n x sensors) -> signals (n x signals)."""
        if not self.tracks:
            return values
        pv, sp = self._deviation_index
        return np.hstack([values, values[:, pv] - values[:, sp]])

    @property
    def key(self) -> str:
        return f"{','.join(self.signals)}|{self.lags}"


class StreamState(msgspec.Struct):
    """What the features remember of a unit's stream; a gap, a stop or another feature layout resets it."""

    layout: str = ""
    last_ts: float = -1e300  # before any sample (JSON, where the state is kept, has no infinity)
    seen: int = 0
    last: list[float] = []  # the last signal row (forward fill and rates)
    history: list[list[float]] = []  # the last `lags` signal rows, newest first
    smoothed: list[float] = []  # EWMA of the feature vector
    roughness: list[float] = []  # EWMA of each signal's squared change
    unchanged: list[int] = []  # per sensor: samples without a change

    def reset(self) -> None:
        self.seen, self.last, self.history, self.smoothed, self.roughness, self.unchanged = 0, [], [], [], [], []


@dataclass
class FeatureBlock:
    features: np.ndarray  # n x features
    smoothed: np.ndarray  # n x features
    rates: np.ndarray  # n x signals
    roughness: np.ndarray  # n x signals
    unchanged: np.ndarray  # n x sensors
    missing: np.ndarray  # n x sensors: the source declares the sensor but sent no value
    position: np.ndarray  # n: samples since the stream began
    warm: np.ndarray  # n: enough history to score (every sample after the first `lags + 1` of a stream)
    smooth_warm: np.ndarray  # n: the smoothed features have forgotten the stream's start (SMOOTH_WARMUP)

    @classmethod
    def concat(cls, blocks: list[FeatureBlock]) -> FeatureBlock:
        return cls(*(np.concatenate([getattr(b, name) for b in blocks]) for name in cls.__dataclass_fields__))

    def take(self, rows: np.ndarray | slice) -> FeatureBlock:
        return FeatureBlock(*(getattr(self, name)[rows] for name in self.__dataclass_fields__))


def stream_block(
    state: StreamState,
    layout: FeatureLayout,
    values: np.ndarray,
    provided: np.ndarray,
    ts: np.ndarray,
    period_s: float,
) -> FeatureBlock:
    """Features of `values` (n x sensors, NaN where a sample has no value), continuing `state`."""
    if state.layout != layout.key:
        state.reset()
        state.layout = layout.key
    gaps = np.flatnonzero(np.diff(np.concatenate([[state.last_ts], ts])) > GAP_PERIODS * period_s)
    pieces = np.split(np.arange(len(ts)), gaps[gaps > 0]) if len(gaps) else [np.arange(len(ts))]
    blocks = []
    for piece in pieces:
        if len(piece) == 0:
            continue
        if piece[0] in gaps:
            state.reset()
        blocks.append(_continue(state, layout, values[piece], provided))
    state.last_ts = float(ts[-1])
    return blocks[0] if len(blocks) == 1 else FeatureBlock.concat(blocks)


def _continue(state: StreamState, layout: FeatureLayout, values: np.ndarray, provided: np.ndarray) -> FeatureBlock:
    n, sensors = values.shape
    missing = np.isnan(values)
    fresh = not state.last
    previous_values = np.array(state.last[:sensors]) if not fresh else None
    filled = _forward_fill(values, missing, previous_values)
    signals = layout.signal_block(filled)
    last = np.array(state.last) if not fresh else signals[0]
    rates = np.diff(np.vstack([last, signals]), axis=0)
    if fresh:
        rates[0] = np.nan
    if layout.lags:
        history = np.array(state.history) if state.history else np.repeat(signals[:1], layout.lags, axis=0)
        rows = np.vstack([history[::-1], signals])  # oldest first
        features = np.hstack([rows[layout.lags - lag : layout.lags - lag + n] for lag in range(layout.lags + 1)])
        state.history = rows[-layout.lags :][::-1].tolist()
    else:
        features = signals
    smoothed = _ewma(features, np.array(state.smoothed) if state.smoothed else features[0])
    squares = np.nan_to_num(rates) ** 2
    roughness = _ewma(squares, np.array(state.roughness) if state.roughness else squares[0])
    unchanged = _run_lengths(values, filled, previous_values, np.array(state.unchanged) if state.unchanged else None)
    seen = np.arange(state.seen, state.seen + n)
    warm, smooth_warm = seen >= layout.lags + 1, seen >= SMOOTH_WARMUP
    state.seen += n
    state.last = signals[-1].tolist()
    state.smoothed = smoothed[-1].tolist()
    state.roughness = roughness[-1].tolist()
    state.unchanged = unchanged[-1].tolist()
    return FeatureBlock(features, smoothed, rates, roughness, unchanged, missing & provided, seen, warm, smooth_warm)


def _ewma(rows: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Exponentially weighted mean along the rows, continuing from `start`."""
    initial = ((1 - EWMA_LAMBDA) * start)[None]
    return np.asarray(lfilter([EWMA_LAMBDA], [1.0, EWMA_LAMBDA - 1.0], rows, axis=0, zi=initial)[0])


def _forward_fill(block: np.ndarray, missing: np.ndarray, last: np.ndarray | None) -> np.ndarray:
    if not missing.any():
        return block
    filled = block.copy()
    if last is None:  # the stream starts with a gap: the block's median stands in until a value comes
        last = np.zeros(block.shape[1])
        seen = ~missing.all(axis=0)
        last[seen] = np.nanmedian(block[:, seen], axis=0)
    previous = last
    for row, gaps in zip(filled, missing, strict=True):
        row[gaps] = previous[gaps]
        previous = row
    return np.asarray(np.nan_to_num(filled))


def _run_lengths(
    values: np.ndarray, filled: np.ndarray, previous: np.ndarray | None, carried: np.ndarray | None
) -> np.ndarray:
    """Per sensor, how many samples in a row have repeated the same value (0: it just changed)."""
    n, sensors = values.shape
    before = np.vstack([previous if previous is not None else np.full(sensors, np.nan), filled[:-1]])
    same = (values == before) | np.isnan(values)  # a missing value is not a change (missing is flagged apart)
    index = np.arange(n)[:, None]
    last_change = np.maximum.accumulate(np.where(~same, index, -1), axis=0)
    runs = index - last_change
    start = carried if carried is not None else np.zeros(sensors, dtype=int)
    return np.where(last_change < 0, runs + start, runs)
