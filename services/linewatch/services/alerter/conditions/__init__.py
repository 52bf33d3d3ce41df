"""Alarm conditions, one module each. The registry maps the name used in the rules file and in the contract
(`AlarmEvent.condition`) to its class: a new condition is a module here plus one line below."""

from __future__ import annotations

from linewatch.core.contract import AlarmCondition
from linewatch.services.alerter.conditions.anomaly import Anomaly
from linewatch.services.alerter.conditions.base import Condition, FrameContext
from linewatch.services.alerter.conditions.exposure_dose import ExposureDose
from linewatch.services.alerter.conditions.no_data import NoData
from linewatch.services.alerter.conditions.spc_rule import SpcRule
from linewatch.services.alerter.conditions.spec_limit import SpecLimit

CONDITIONS: dict[AlarmCondition, type[Condition]] = {
    Anomaly.name: Anomaly,
    SpecLimit.name: SpecLimit,
    SpcRule.name: SpcRule,
    ExposureDose.name: ExposureDose,
    NoData.name: NoData,
}

__all__ = ["CONDITIONS", "Anomaly", "Condition", "FrameContext", "NoData"]
