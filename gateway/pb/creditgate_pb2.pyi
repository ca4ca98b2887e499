from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Channel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHANNEL_UNSPECIFIED: _ClassVar[Channel]
    CHANNEL_QR_SCAN: _ClassVar[Channel]
    CHANNEL_POS: _ClassVar[Channel]
    CHANNEL_ECOMMERCE: _ClassVar[Channel]
    CHANNEL_CASH: _ClassVar[Channel]

class DeclineReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECLINE_REASON_UNSPECIFIED: _ClassVar[DeclineReason]
    DECLINE_REASON_CUSTOMER_UNKNOWN: _ClassVar[DeclineReason]
    DECLINE_REASON_CUSTOMER_FROZEN: _ClassVar[DeclineReason]
    DECLINE_REASON_CUSTOMER_CLOSED: _ClassVar[DeclineReason]
    DECLINE_REASON_CHANNEL_NOT_ALLOWED: _ClassVar[DeclineReason]
    DECLINE_REASON_MCC_NOT_ALLOWED: _ClassVar[DeclineReason]
    DECLINE_REASON_AMOUNT_BELOW_MINIMUM: _ClassVar[DeclineReason]
    DECLINE_REASON_AMOUNT_ABOVE_MAXIMUM: _ClassVar[DeclineReason]
    DECLINE_REASON_VELOCITY_COUNT_EXCEEDED: _ClassVar[DeclineReason]
    DECLINE_REASON_VELOCITY_AMOUNT_EXCEEDED: _ClassVar[DeclineReason]
    DECLINE_REASON_INSUFFICIENT_CREDIT: _ClassVar[DeclineReason]
    DECLINE_REASON_CUSTOMER_OVERDUE: _ClassVar[DeclineReason]
    DECLINE_REASON_REVERSED: _ClassVar[DeclineReason]
    DECLINE_REASON_MERCHANT_NOT_ALLOWED: _ClassVar[DeclineReason]
    DECLINE_REASON_PRODUCT_NOT_EFFECTIVE: _ClassVar[DeclineReason]
    DECLINE_REASON_OUTSIDE_ALLOWED_HOURS: _ClassVar[DeclineReason]
    DECLINE_REASON_FIRST_PURCHASE_ABOVE_MAXIMUM: _ClassVar[DeclineReason]

class CustomerStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CUSTOMER_STATUS_UNSPECIFIED: _ClassVar[CustomerStatus]
    CUSTOMER_STATUS_ACTIVE: _ClassVar[CustomerStatus]
    CUSTOMER_STATUS_FROZEN: _ClassVar[CustomerStatus]
    CUSTOMER_STATUS_CLOSED: _ClassVar[CustomerStatus]
    CUSTOMER_STATUS_OVERDUE: _ClassVar[CustomerStatus]

class HoldState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HOLD_STATE_UNSPECIFIED: _ClassVar[HoldState]
    HOLD_STATE_OPEN: _ClassVar[HoldState]
    HOLD_STATE_CAPTURED: _ClassVar[HoldState]
    HOLD_STATE_VOIDED: _ClassVar[HoldState]
    HOLD_STATE_EXPIRED: _ClassVar[HoldState]
    HOLD_STATE_REVERSED: _ClassVar[HoldState]

class ReverseOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REVERSE_OUTCOME_UNSPECIFIED: _ClassVar[ReverseOutcome]
    REVERSE_OUTCOME_RELEASED: _ClassVar[ReverseOutcome]
    REVERSE_OUTCOME_ALREADY_CLOSED: _ClassVar[ReverseOutcome]
    REVERSE_OUTCOME_ORIGINAL_DECLINED: _ClassVar[ReverseOutcome]
    REVERSE_OUTCOME_TOMBSTONED: _ClassVar[ReverseOutcome]
CHANNEL_UNSPECIFIED: Channel
CHANNEL_QR_SCAN: Channel
CHANNEL_POS: Channel
CHANNEL_ECOMMERCE: Channel
CHANNEL_CASH: Channel
DECLINE_REASON_UNSPECIFIED: DeclineReason
DECLINE_REASON_CUSTOMER_UNKNOWN: DeclineReason
DECLINE_REASON_CUSTOMER_FROZEN: DeclineReason
DECLINE_REASON_CUSTOMER_CLOSED: DeclineReason
DECLINE_REASON_CHANNEL_NOT_ALLOWED: DeclineReason
DECLINE_REASON_MCC_NOT_ALLOWED: DeclineReason
DECLINE_REASON_AMOUNT_BELOW_MINIMUM: DeclineReason
DECLINE_REASON_AMOUNT_ABOVE_MAXIMUM: DeclineReason
DECLINE_REASON_VELOCITY_COUNT_EXCEEDED: DeclineReason
DECLINE_REASON_VELOCITY_AMOUNT_EXCEEDED: DeclineReason
DECLINE_REASON_INSUFFICIENT_CREDIT: DeclineReason
DECLINE_REASON_CUSTOMER_OVERDUE: DeclineReason
DECLINE_REASON_REVERSED: DeclineReason
DECLINE_REASON_MERCHANT_NOT_ALLOWED: DeclineReason
DECLINE_REASON_PRODUCT_NOT_EFFECTIVE: DeclineReason
DECLINE_REASON_OUTSIDE_ALLOWED_HOURS: DeclineReason
DECLINE_REASON_FIRST_PURCHASE_ABOVE_MAXIMUM: DeclineReason
CUSTOMER_STATUS_UNSPECIFIED: CustomerStatus
CUSTOMER_STATUS_ACTIVE: CustomerStatus
CUSTOMER_STATUS_FROZEN: CustomerStatus
CUSTOMER_STATUS_CLOSED: CustomerStatus
CUSTOMER_STATUS_OVERDUE: CustomerStatus
HOLD_STATE_UNSPECIFIED: HoldState
HOLD_STATE_OPEN: HoldState
HOLD_STATE_CAPTURED: HoldState
HOLD_STATE_VOIDED: HoldState
HOLD_STATE_EXPIRED: HoldState
HOLD_STATE_REVERSED: HoldState
REVERSE_OUTCOME_UNSPECIFIED: ReverseOutcome
REVERSE_OUTCOME_RELEASED: ReverseOutcome
REVERSE_OUTCOME_ALREADY_CLOSED: ReverseOutcome
REVERSE_OUTCOME_ORIGINAL_DECLINED: ReverseOutcome
REVERSE_OUTCOME_TOMBSTONED: ReverseOutcome

class LevelHeadroom(_message.Message):
    __slots__ = ("node", "cap_minor", "held_minor", "used_minor", "available_minor", "raise_minor", "raise_expires_at_ms")
    NODE_FIELD_NUMBER: _ClassVar[int]
    CAP_MINOR_FIELD_NUMBER: _ClassVar[int]
    HELD_MINOR_FIELD_NUMBER: _ClassVar[int]
    USED_MINOR_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_MINOR_FIELD_NUMBER: _ClassVar[int]
    RAISE_MINOR_FIELD_NUMBER: _ClassVar[int]
    RAISE_EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    node: str
    cap_minor: int
    held_minor: int
    used_minor: int
    available_minor: int
    raise_minor: int
    raise_expires_at_ms: int
    def __init__(self, node: _Optional[str] = ..., cap_minor: _Optional[int] = ..., held_minor: _Optional[int] = ..., used_minor: _Optional[int] = ..., available_minor: _Optional[int] = ..., raise_minor: _Optional[int] = ..., raise_expires_at_ms: _Optional[int] = ...) -> None: ...

class InstallmentPlan(_message.Message):
    __slots__ = ("months", "principal_minor", "first_installment_minor", "installment_minor", "fee_per_installment_minor", "fee_total_minor", "monthly_fee_bps")
    MONTHS_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_MINOR_FIELD_NUMBER: _ClassVar[int]
    FIRST_INSTALLMENT_MINOR_FIELD_NUMBER: _ClassVar[int]
    INSTALLMENT_MINOR_FIELD_NUMBER: _ClassVar[int]
    FEE_PER_INSTALLMENT_MINOR_FIELD_NUMBER: _ClassVar[int]
    FEE_TOTAL_MINOR_FIELD_NUMBER: _ClassVar[int]
    MONTHLY_FEE_BPS_FIELD_NUMBER: _ClassVar[int]
    months: int
    principal_minor: int
    first_installment_minor: int
    installment_minor: int
    fee_per_installment_minor: int
    fee_total_minor: int
    monthly_fee_bps: int
    def __init__(self, months: _Optional[int] = ..., principal_minor: _Optional[int] = ..., first_installment_minor: _Optional[int] = ..., installment_minor: _Optional[int] = ..., fee_per_installment_minor: _Optional[int] = ..., fee_total_minor: _Optional[int] = ..., monthly_fee_bps: _Optional[int] = ...) -> None: ...

class AuthorizeRequest(_message.Message):
    __slots__ = ("idempotency_key", "customer_id", "product_id", "channel", "merchant_id", "mcc", "amount_minor", "currency", "allow_partial", "installment_months")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    MCC_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    ALLOW_PARTIAL_FIELD_NUMBER: _ClassVar[int]
    INSTALLMENT_MONTHS_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    customer_id: str
    product_id: str
    channel: Channel
    merchant_id: str
    mcc: str
    amount_minor: int
    currency: str
    allow_partial: bool
    installment_months: int
    def __init__(self, idempotency_key: _Optional[str] = ..., customer_id: _Optional[str] = ..., product_id: _Optional[str] = ..., channel: _Optional[_Union[Channel, str]] = ..., merchant_id: _Optional[str] = ..., mcc: _Optional[str] = ..., amount_minor: _Optional[int] = ..., currency: _Optional[str] = ..., allow_partial: _Optional[bool] = ..., installment_months: _Optional[int] = ...) -> None: ...

class AuthorizeResponse(_message.Message):
    __slots__ = ("approved", "decline_reason", "response_code", "decline_level", "hold_id", "available_minor", "levels", "hold_expires_at_ms", "decided_at_ms", "partial", "approved_amount_minor", "counter_offer_minor", "counter_offer_level", "counter_offer_plans", "installment_plan", "catalog_version")
    APPROVED_FIELD_NUMBER: _ClassVar[int]
    DECLINE_REASON_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_CODE_FIELD_NUMBER: _ClassVar[int]
    DECLINE_LEVEL_FIELD_NUMBER: _ClassVar[int]
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_MINOR_FIELD_NUMBER: _ClassVar[int]
    LEVELS_FIELD_NUMBER: _ClassVar[int]
    HOLD_EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    APPROVED_AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    COUNTER_OFFER_MINOR_FIELD_NUMBER: _ClassVar[int]
    COUNTER_OFFER_LEVEL_FIELD_NUMBER: _ClassVar[int]
    COUNTER_OFFER_PLANS_FIELD_NUMBER: _ClassVar[int]
    INSTALLMENT_PLAN_FIELD_NUMBER: _ClassVar[int]
    CATALOG_VERSION_FIELD_NUMBER: _ClassVar[int]
    approved: bool
    decline_reason: DeclineReason
    response_code: str
    decline_level: str
    hold_id: str
    available_minor: int
    levels: _containers.RepeatedCompositeFieldContainer[LevelHeadroom]
    hold_expires_at_ms: int
    decided_at_ms: int
    partial: bool
    approved_amount_minor: int
    counter_offer_minor: int
    counter_offer_level: str
    counter_offer_plans: _containers.RepeatedCompositeFieldContainer[InstallmentPlan]
    installment_plan: InstallmentPlan
    catalog_version: str
    def __init__(self, approved: _Optional[bool] = ..., decline_reason: _Optional[_Union[DeclineReason, str]] = ..., response_code: _Optional[str] = ..., decline_level: _Optional[str] = ..., hold_id: _Optional[str] = ..., available_minor: _Optional[int] = ..., levels: _Optional[_Iterable[_Union[LevelHeadroom, _Mapping]]] = ..., hold_expires_at_ms: _Optional[int] = ..., decided_at_ms: _Optional[int] = ..., partial: _Optional[bool] = ..., approved_amount_minor: _Optional[int] = ..., counter_offer_minor: _Optional[int] = ..., counter_offer_level: _Optional[str] = ..., counter_offer_plans: _Optional[_Iterable[_Union[InstallmentPlan, _Mapping]]] = ..., installment_plan: _Optional[_Union[InstallmentPlan, _Mapping]] = ..., catalog_version: _Optional[str] = ...) -> None: ...

class CaptureRequest(_message.Message):
    __slots__ = ("idempotency_key", "hold_id", "amount_minor", "final")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    hold_id: str
    amount_minor: int
    final: bool
    def __init__(self, idempotency_key: _Optional[str] = ..., hold_id: _Optional[str] = ..., amount_minor: _Optional[int] = ..., final: _Optional[bool] = ...) -> None: ...

class CaptureResponse(_message.Message):
    __slots__ = ("hold_id", "state", "captured_minor", "captured_total_minor", "released_minor", "held_minor", "decided_at_ms", "over_captured_minor")
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CAPTURED_MINOR_FIELD_NUMBER: _ClassVar[int]
    CAPTURED_TOTAL_MINOR_FIELD_NUMBER: _ClassVar[int]
    RELEASED_MINOR_FIELD_NUMBER: _ClassVar[int]
    HELD_MINOR_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    OVER_CAPTURED_MINOR_FIELD_NUMBER: _ClassVar[int]
    hold_id: str
    state: HoldState
    captured_minor: int
    captured_total_minor: int
    released_minor: int
    held_minor: int
    decided_at_ms: int
    over_captured_minor: int
    def __init__(self, hold_id: _Optional[str] = ..., state: _Optional[_Union[HoldState, str]] = ..., captured_minor: _Optional[int] = ..., captured_total_minor: _Optional[int] = ..., released_minor: _Optional[int] = ..., held_minor: _Optional[int] = ..., decided_at_ms: _Optional[int] = ..., over_captured_minor: _Optional[int] = ...) -> None: ...

class VoidRequest(_message.Message):
    __slots__ = ("idempotency_key", "hold_id")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    hold_id: str
    def __init__(self, idempotency_key: _Optional[str] = ..., hold_id: _Optional[str] = ...) -> None: ...

class VoidResponse(_message.Message):
    __slots__ = ("hold_id", "state", "released_minor", "captured_total_minor", "decided_at_ms")
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    RELEASED_MINOR_FIELD_NUMBER: _ClassVar[int]
    CAPTURED_TOTAL_MINOR_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    hold_id: str
    state: HoldState
    released_minor: int
    captured_total_minor: int
    decided_at_ms: int
    def __init__(self, hold_id: _Optional[str] = ..., state: _Optional[_Union[HoldState, str]] = ..., released_minor: _Optional[int] = ..., captured_total_minor: _Optional[int] = ..., decided_at_ms: _Optional[int] = ...) -> None: ...

class RefundRequest(_message.Message):
    __slots__ = ("idempotency_key", "hold_id", "amount_minor")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    hold_id: str
    amount_minor: int
    def __init__(self, idempotency_key: _Optional[str] = ..., hold_id: _Optional[str] = ..., amount_minor: _Optional[int] = ...) -> None: ...

class RefundResponse(_message.Message):
    __slots__ = ("hold_id", "refunded_minor", "refunded_total_minor", "refundable_minor", "decided_at_ms")
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    REFUNDED_MINOR_FIELD_NUMBER: _ClassVar[int]
    REFUNDED_TOTAL_MINOR_FIELD_NUMBER: _ClassVar[int]
    REFUNDABLE_MINOR_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    hold_id: str
    refunded_minor: int
    refunded_total_minor: int
    refundable_minor: int
    decided_at_ms: int
    def __init__(self, hold_id: _Optional[str] = ..., refunded_minor: _Optional[int] = ..., refunded_total_minor: _Optional[int] = ..., refundable_minor: _Optional[int] = ..., decided_at_ms: _Optional[int] = ...) -> None: ...

class ForceCaptureRequest(_message.Message):
    __slots__ = ("idempotency_key", "customer_id", "product_id", "channel", "merchant_id", "mcc", "amount_minor", "currency", "original_hold_id")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    MCC_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    customer_id: str
    product_id: str
    channel: Channel
    merchant_id: str
    mcc: str
    amount_minor: int
    currency: str
    original_hold_id: str
    def __init__(self, idempotency_key: _Optional[str] = ..., customer_id: _Optional[str] = ..., product_id: _Optional[str] = ..., channel: _Optional[_Union[Channel, str]] = ..., merchant_id: _Optional[str] = ..., mcc: _Optional[str] = ..., amount_minor: _Optional[int] = ..., currency: _Optional[str] = ..., original_hold_id: _Optional[str] = ...) -> None: ...

class ForceCaptureResponse(_message.Message):
    __slots__ = ("hold_id", "over_limit", "over_limit_levels", "levels", "decided_at_ms")
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    OVER_LIMIT_FIELD_NUMBER: _ClassVar[int]
    OVER_LIMIT_LEVELS_FIELD_NUMBER: _ClassVar[int]
    LEVELS_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    hold_id: str
    over_limit: bool
    over_limit_levels: _containers.RepeatedScalarFieldContainer[str]
    levels: _containers.RepeatedCompositeFieldContainer[LevelHeadroom]
    decided_at_ms: int
    def __init__(self, hold_id: _Optional[str] = ..., over_limit: _Optional[bool] = ..., over_limit_levels: _Optional[_Iterable[str]] = ..., levels: _Optional[_Iterable[_Union[LevelHeadroom, _Mapping]]] = ..., decided_at_ms: _Optional[int] = ...) -> None: ...

class ReverseRequest(_message.Message):
    __slots__ = ("customer_id", "original_idempotency_key")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    original_idempotency_key: str
    def __init__(self, customer_id: _Optional[str] = ..., original_idempotency_key: _Optional[str] = ...) -> None: ...

class ReverseResponse(_message.Message):
    __slots__ = ("outcome", "hold_id", "released_minor", "decided_at_ms")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    RELEASED_MINOR_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    outcome: ReverseOutcome
    hold_id: str
    released_minor: int
    decided_at_ms: int
    def __init__(self, outcome: _Optional[_Union[ReverseOutcome, str]] = ..., hold_id: _Optional[str] = ..., released_minor: _Optional[int] = ..., decided_at_ms: _Optional[int] = ...) -> None: ...

class IncrementAuthorizationRequest(_message.Message):
    __slots__ = ("idempotency_key", "hold_id", "amount_minor")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    hold_id: str
    amount_minor: int
    def __init__(self, idempotency_key: _Optional[str] = ..., hold_id: _Optional[str] = ..., amount_minor: _Optional[int] = ...) -> None: ...

class IncrementAuthorizationResponse(_message.Message):
    __slots__ = ("approved", "decline_reason", "response_code", "decline_level", "hold_id", "amount_total_minor", "held_minor", "available_minor", "levels", "decided_at_ms", "counter_offer_minor", "counter_offer_level")
    APPROVED_FIELD_NUMBER: _ClassVar[int]
    DECLINE_REASON_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_CODE_FIELD_NUMBER: _ClassVar[int]
    DECLINE_LEVEL_FIELD_NUMBER: _ClassVar[int]
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_TOTAL_MINOR_FIELD_NUMBER: _ClassVar[int]
    HELD_MINOR_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_MINOR_FIELD_NUMBER: _ClassVar[int]
    LEVELS_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    COUNTER_OFFER_MINOR_FIELD_NUMBER: _ClassVar[int]
    COUNTER_OFFER_LEVEL_FIELD_NUMBER: _ClassVar[int]
    approved: bool
    decline_reason: DeclineReason
    response_code: str
    decline_level: str
    hold_id: str
    amount_total_minor: int
    held_minor: int
    available_minor: int
    levels: _containers.RepeatedCompositeFieldContainer[LevelHeadroom]
    decided_at_ms: int
    counter_offer_minor: int
    counter_offer_level: str
    def __init__(self, approved: _Optional[bool] = ..., decline_reason: _Optional[_Union[DeclineReason, str]] = ..., response_code: _Optional[str] = ..., decline_level: _Optional[str] = ..., hold_id: _Optional[str] = ..., amount_total_minor: _Optional[int] = ..., held_minor: _Optional[int] = ..., available_minor: _Optional[int] = ..., levels: _Optional[_Iterable[_Union[LevelHeadroom, _Mapping]]] = ..., decided_at_ms: _Optional[int] = ..., counter_offer_minor: _Optional[int] = ..., counter_offer_level: _Optional[str] = ...) -> None: ...

class RepayRequest(_message.Message):
    __slots__ = ("idempotency_key", "customer_id", "amount_minor")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    customer_id: str
    amount_minor: int
    def __init__(self, idempotency_key: _Optional[str] = ..., customer_id: _Optional[str] = ..., amount_minor: _Optional[int] = ...) -> None: ...

class RepaymentAllocation(_message.Message):
    __slots__ = ("path", "amount_minor")
    PATH_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    path: str
    amount_minor: int
    def __init__(self, path: _Optional[str] = ..., amount_minor: _Optional[int] = ...) -> None: ...

class RepayResponse(_message.Message):
    __slots__ = ("customer_id", "repaid_minor", "allocations", "overpaid_minor", "outstanding_minor", "decided_at_ms")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    REPAID_MINOR_FIELD_NUMBER: _ClassVar[int]
    ALLOCATIONS_FIELD_NUMBER: _ClassVar[int]
    OVERPAID_MINOR_FIELD_NUMBER: _ClassVar[int]
    OUTSTANDING_MINOR_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    repaid_minor: int
    allocations: _containers.RepeatedCompositeFieldContainer[RepaymentAllocation]
    overpaid_minor: int
    outstanding_minor: int
    decided_at_ms: int
    def __init__(self, customer_id: _Optional[str] = ..., repaid_minor: _Optional[int] = ..., allocations: _Optional[_Iterable[_Union[RepaymentAllocation, _Mapping]]] = ..., overpaid_minor: _Optional[int] = ..., outstanding_minor: _Optional[int] = ..., decided_at_ms: _Optional[int] = ...) -> None: ...

class AuthorizeBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[AuthorizeRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[AuthorizeRequest, _Mapping]]] = ...) -> None: ...

class AuthorizeBatchItem(_message.Message):
    __slots__ = ("response", "error")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    response: AuthorizeResponse
    error: BatchItemError
    def __init__(self, response: _Optional[_Union[AuthorizeResponse, _Mapping]] = ..., error: _Optional[_Union[BatchItemError, _Mapping]] = ...) -> None: ...

class BatchItemError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class AuthorizeBatchResponse(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[AuthorizeBatchItem]
    def __init__(self, items: _Optional[_Iterable[_Union[AuthorizeBatchItem, _Mapping]]] = ...) -> None: ...

class GetCreditRequest(_message.Message):
    __slots__ = ("customer_id", "product_id")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    product_id: str
    def __init__(self, customer_id: _Optional[str] = ..., product_id: _Optional[str] = ...) -> None: ...

class VelocityWindow(_message.Message):
    __slots__ = ("product_id", "period", "amount_minor", "count", "amount_max_minor", "count_max", "resets_at_ms")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MAX_MINOR_FIELD_NUMBER: _ClassVar[int]
    COUNT_MAX_FIELD_NUMBER: _ClassVar[int]
    RESETS_AT_MS_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    period: str
    amount_minor: int
    count: int
    amount_max_minor: int
    count_max: int
    resets_at_ms: int
    def __init__(self, product_id: _Optional[str] = ..., period: _Optional[str] = ..., amount_minor: _Optional[int] = ..., count: _Optional[int] = ..., amount_max_minor: _Optional[int] = ..., count_max: _Optional[int] = ..., resets_at_ms: _Optional[int] = ...) -> None: ...

class GetCreditResponse(_message.Message):
    __slots__ = ("customer_id", "status", "levels", "velocity", "available_minor", "as_of_ms", "outstanding_minor", "credit_balance_minor")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LEVELS_FIELD_NUMBER: _ClassVar[int]
    VELOCITY_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_MINOR_FIELD_NUMBER: _ClassVar[int]
    AS_OF_MS_FIELD_NUMBER: _ClassVar[int]
    OUTSTANDING_MINOR_FIELD_NUMBER: _ClassVar[int]
    CREDIT_BALANCE_MINOR_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    status: CustomerStatus
    levels: _containers.RepeatedCompositeFieldContainer[LevelHeadroom]
    velocity: _containers.RepeatedCompositeFieldContainer[VelocityWindow]
    available_minor: int
    as_of_ms: int
    outstanding_minor: int
    credit_balance_minor: int
    def __init__(self, customer_id: _Optional[str] = ..., status: _Optional[_Union[CustomerStatus, str]] = ..., levels: _Optional[_Iterable[_Union[LevelHeadroom, _Mapping]]] = ..., velocity: _Optional[_Iterable[_Union[VelocityWindow, _Mapping]]] = ..., available_minor: _Optional[int] = ..., as_of_ms: _Optional[int] = ..., outstanding_minor: _Optional[int] = ..., credit_balance_minor: _Optional[int] = ...) -> None: ...

class PutCustomerRequest(_message.Message):
    __slots__ = ("customer_id", "status", "timezone", "caps_minor")
    class CapsMinorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TIMEZONE_FIELD_NUMBER: _ClassVar[int]
    CAPS_MINOR_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    status: CustomerStatus
    timezone: str
    caps_minor: _containers.ScalarMap[str, int]
    def __init__(self, customer_id: _Optional[str] = ..., status: _Optional[_Union[CustomerStatus, str]] = ..., timezone: _Optional[str] = ..., caps_minor: _Optional[_Mapping[str, int]] = ...) -> None: ...

class Customer(_message.Message):
    __slots__ = ("customer_id", "status", "timezone", "caps_minor")
    class CapsMinorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TIMEZONE_FIELD_NUMBER: _ClassVar[int]
    CAPS_MINOR_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    status: CustomerStatus
    timezone: str
    caps_minor: _containers.ScalarMap[str, int]
    def __init__(self, customer_id: _Optional[str] = ..., status: _Optional[_Union[CustomerStatus, str]] = ..., timezone: _Optional[str] = ..., caps_minor: _Optional[_Mapping[str, int]] = ...) -> None: ...

class GetCustomerRequest(_message.Message):
    __slots__ = ("customer_id",)
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    def __init__(self, customer_id: _Optional[str] = ...) -> None: ...

class SetTemporaryRaiseRequest(_message.Message):
    __slots__ = ("customer_id", "node", "raise_minor", "expires_at_ms")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    RAISE_MINOR_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    node: str
    raise_minor: int
    expires_at_ms: int
    def __init__(self, customer_id: _Optional[str] = ..., node: _Optional[str] = ..., raise_minor: _Optional[int] = ..., expires_at_ms: _Optional[int] = ...) -> None: ...

class SetTemporaryRaiseResponse(_message.Message):
    __slots__ = ("level", "decided_at_ms")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    level: LevelHeadroom
    decided_at_ms: int
    def __init__(self, level: _Optional[_Union[LevelHeadroom, _Mapping]] = ..., decided_at_ms: _Optional[int] = ...) -> None: ...
