"""Installment plans in integer minor units: the one arithmetic, shared by the reserve script
(limits/lua/_lib.lua `installment_plan`), its model and the gateway's counter-offers.

The principal is split into `months` equal installments rounded down; the rounding remainder
is paid with the FIRST installment. The fee is a flat monthly charge on the original
principal, `monthly_fee_bps` basis points, rounded half up to a minor unit, on every installment.
"""

from __future__ import annotations

import msgspec


class Plan(msgspec.Struct, frozen=True):
    months: int
    principal_minor: int
    first_installment_minor: int  # principal part of the first installment: carries the remainder
    installment_minor: int  # principal part of every later installment
    fee_per_installment_minor: int
    monthly_fee_bps: int

    @property
    def fee_total_minor(self) -> int:
        return self.fee_per_installment_minor * self.months

    def text(self) -> str:
        """The form carried by script replies and outbox events."""
        return (f"{self.months}:{self.first_installment_minor}:{self.installment_minor}"
                f":{self.fee_per_installment_minor}:{self.monthly_fee_bps}")


def plan(principal_minor: int, months: int, monthly_fee_bps: int) -> Plan:
    assert principal_minor > 0 and months >= 2 and monthly_fee_bps >= 0
    installment = principal_minor // months
    first = principal_minor - installment * (months - 1)
    fee = (principal_minor * monthly_fee_bps + 5_000) // 10_000
    return Plan(months, principal_minor, first, installment, fee, monthly_fee_bps)


def parse(text: str, principal_minor: int) -> Plan | None:
    """The plan of a reply or event field ("" means none)."""
    if not text:
        return None
    months, first, each, fee, bps = map(int, text.split(":"))
    return Plan(months, principal_minor, first, each, fee, bps)
