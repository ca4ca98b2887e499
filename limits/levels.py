"""Arithmetic on a limit level that the scripts, their model and the replies share."""

from __future__ import annotations


def effective_cap(cap: int, raise_text: str | None, now_ms: int) -> int:
    """A level's cap plus its temporary raise while the raise lasts ("<raise>:<expires ms>");
    effective_cap in limits/lua/_lib.lua computes the same."""
    if not raise_text:
        return cap
    amount, expires = raise_text.split(":")
    return cap + int(amount) if int(expires) > now_ms else cap
