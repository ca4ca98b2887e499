"""Instalment plans in integer minor units: the one arithmetic, shared by the reserve script
(limits/lua/_lib.lua `installment_plan`), its model and the gateway's counter-offers.

The principal is split into `months` equal instalments rounded down; the rounding remainder
is paid with the FIRST instalment. The fee is a flat monthly charge on the original
principal, `monthly_fee_bps` basis points, rounded half up to a minor unit, on every instalment.
"""

from __future__ import annotations

import msgspec


class Plan(msgspec.Struct, frozen=True):
    months: int
    principal_minor: int
    first_instalment_minor: int  # principal part of the first instalment: carries the remainder
    instalment_minor: int  # principal part of every later instalment
    fee_per_instalment_minor: int
    monthly_fee_bps: int

    @property
    def fee_total_minor(self) -> int:
        return self.fee_per_instalment_minor * self.months

    def text(self) -> str:
        """The form carried by script replies and outbox events."""
        return (f"{self.months}:{self.first_instalment_minor}:{self.instalment_minor}"
                f":{self.fee_per_instalment_minor}:{self.monthly_fee_bps}")


def plan(principal_minor: int, months: int, monthly_fee_bps: int) -> Plan:
    assert principal_minor > 0 and months >= 2 and monthly_fee_bps >= 0
    instalment = principal_minor // months
    first = principal_minor - instalment * (months - 1)
    fee = (principal_minor * monthly_fee_bps + 5_000) // 10_000
    return Plan(months, principal_minor, first, instalment, fee, monthly_fee_bps)


def parse(text: str, principal_minor: int) -> Plan | None:
    """The plan of a reply or event field ("" means none)."""
    if not text:
        return None
    months, first, each, fee, bps = map(int, text.split(":"))
    return Plan(months, principal_minor, first, each, fee, bps)
