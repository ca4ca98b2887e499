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

class LevelHeadroom(_message.Message):
    __slots__ = ("node", "cap_minor", "held_minor", "used_minor", "available_minor")
    NODE_FIELD_NUMBER: _ClassVar[int]
    CAP_MINOR_FIELD_NUMBER: _ClassVar[int]
    HELD_MINOR_FIELD_NUMBER: _ClassVar[int]
    USED_MINOR_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_MINOR_FIELD_NUMBER: _ClassVar[int]
    node: str
    cap_minor: int
    held_minor: int
    used_minor: int
    available_minor: int
    def __init__(self, node: _Optional[str] = ..., cap_minor: _Optional[int] = ..., held_minor: _Optional[int] = ..., used_minor: _Optional[int] = ..., available_minor: _Optional[int] = ...) -> None: ...

class AuthorizeRequest(_message.Message):
    __slots__ = ("idempotency_key", "customer_id", "product_id", "channel", "merchant_id", "mcc", "amount_minor", "currency")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    MCC_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    customer_id: str
    product_id: str
    channel: Channel
    merchant_id: str
    mcc: str
    amount_minor: int
    currency: str
    def __init__(self, idempotency_key: _Optional[str] = ..., customer_id: _Optional[str] = ..., product_id: _Optional[str] = ..., channel: _Optional[_Union[Channel, str]] = ..., merchant_id: _Optional[str] = ..., mcc: _Optional[str] = ..., amount_minor: _Optional[int] = ..., currency: _Optional[str] = ...) -> None: ...

class AuthorizeResponse(_message.Message):
    __slots__ = ("approved", "decline_reason", "response_code", "decline_level", "hold_id", "available_minor", "levels", "hold_expires_at_ms", "decided_at_ms")
    APPROVED_FIELD_NUMBER: _ClassVar[int]
    DECLINE_REASON_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_CODE_FIELD_NUMBER: _ClassVar[int]
    DECLINE_LEVEL_FIELD_NUMBER: _ClassVar[int]
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_MINOR_FIELD_NUMBER: _ClassVar[int]
    LEVELS_FIELD_NUMBER: _ClassVar[int]
    HOLD_EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    approved: bool
    decline_reason: DeclineReason
    response_code: str
    decline_level: str
    hold_id: str
    available_minor: int
    levels: _containers.RepeatedCompositeFieldContainer[LevelHeadroom]
    hold_expires_at_ms: int
    decided_at_ms: int
    def __init__(self, approved: _Optional[bool] = ..., decline_reason: _Optional[_Union[DeclineReason, str]] = ..., response_code: _Optional[str] = ..., decline_level: _Optional[str] = ..., hold_id: _Optional[str] = ..., available_minor: _Optional[int] = ..., levels: _Optional[_Iterable[_Union[LevelHeadroom, _Mapping]]] = ..., hold_expires_at_ms: _Optional[int] = ..., decided_at_ms: _Optional[int] = ...) -> None: ...

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
    __slots__ = ("hold_id", "state", "captured_minor", "captured_total_minor", "released_minor", "held_minor", "decided_at_ms")
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CAPTURED_MINOR_FIELD_NUMBER: _ClassVar[int]
    CAPTURED_TOTAL_MINOR_FIELD_NUMBER: _ClassVar[int]
    RELEASED_MINOR_FIELD_NUMBER: _ClassVar[int]
    HELD_MINOR_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    hold_id: str
    state: HoldState
    captured_minor: int
    captured_total_minor: int
    released_minor: int
    held_minor: int
    decided_at_ms: int
    def __init__(self, hold_id: _Optional[str] = ..., state: _Optional[_Union[HoldState, str]] = ..., captured_minor: _Optional[int] = ..., captured_total_minor: _Optional[int] = ..., released_minor: _Optional[int] = ..., held_minor: _Optional[int] = ..., decided_at_ms: _Optional[int] = ...) -> None: ...

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
    __slots__ = ("customer_id", "status", "levels", "velocity", "available_minor", "as_of_ms")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LEVELS_FIELD_NUMBER: _ClassVar[int]
    VELOCITY_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_MINOR_FIELD_NUMBER: _ClassVar[int]
    AS_OF_MS_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    status: CustomerStatus
    levels: _containers.RepeatedCompositeFieldContainer[LevelHeadroom]
    velocity: _containers.RepeatedCompositeFieldContainer[VelocityWindow]
    available_minor: int
    as_of_ms: int
    def __init__(self, customer_id: _Optional[str] = ..., status: _Optional[_Union[CustomerStatus, str]] = ..., levels: _Optional[_Iterable[_Union[LevelHeadroom, _Mapping]]] = ..., velocity: _Optional[_Iterable[_Union[VelocityWindow, _Mapping]]] = ..., available_minor: _Optional[int] = ..., as_of_ms: _Optional[int] = ...) -> None: ...

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
