# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
# cython: infer_types=False, embedsignature=True
# distutils: libraries = z
"""The compiled twin of hotpath/_plan_py.py, which is the specification: same names, signatures,
results (byte for byte) and errors (the one InvalidArgument class of _plan_py).

The fast path takes what the gateway passes: protobuf messages, whose string fields are exact
`str` and whose integer fields are exact `int`, rules made by this module's compile_products and
a partition count within 1..PARTITIONS_MAX. Any other input is handed to the Python twin, so the
two cannot disagree on odd input.
"""

from cpython.long cimport PyLong_AsLongAndOverflow, PyLong_AsLongLongAndOverflow
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.string cimport memset

import hashlib

from hotpath import _plan_py
from hotpath._plan_py import _ID_CHARACTERS, CHANNEL_NAMES, InvalidArgument
from limits import keys
from limits.catalog import CURRENCIES
from limits.constants import AMOUNT_MINOR_MAX, HOLD_TOKEN_LENGTH, ID_LENGTH_MAX, PARTITIONS_MAX
from limits.reasons import DeclineReason


cdef extern from "zlib.h":
    # libz's CRC-32 is the one zlib.crc32 computes; running it over the str's own ASCII buffer
    # spares the bytes copy that customer_id.encode() would make.
    unsigned long crc32(unsigned long crc, const unsigned char *buf, unsigned int length) nogil


cdef enum:
    _MCC_BITMAP_BYTES = 1250  # an MCC is four decimal digits: one bit for each of 10000

cdef Py_ssize_t _ID_LENGTH_MAX = ID_LENGTH_MAX
cdef long long _AMOUNT_MINOR_MAX = AMOUNT_MINOR_MAX
cdef long long _PARTITIONS_MAX = PARTITIONS_MAX
cdef Py_ssize_t _HOLD_TOKEN_LENGTH = HOLD_TOKEN_LENGTH
cdef Py_ssize_t _CHANNEL_COUNT = len(CHANNEL_NAMES)
cdef frozenset _CURRENCIES = CURRENCIES

# Key kinds come from limits.keys, the only place a key is spelled.
cdef str _K_CUSTOMER = keys.KIND_CUSTOMER
cdef str _K_CUSTOMER_HOLDS = keys.KIND_CUSTOMER_HOLDS
cdef str _K_HOLD = keys.KIND_HOLD
cdef str _K_IDEMPOTENCY_AUTHORIZE = keys.KIND_IDEMPOTENCY_AUTHORIZE
cdef str _K_IDEMPOTENCY_CAPTURE = keys.KIND_IDEMPOTENCY_CAPTURE
cdef str _K_IDEMPOTENCY_VOID = keys.KIND_IDEMPOTENCY_VOID
cdef str _K_DUE = keys.KEY_DUE
cdef str _K_OUTBOX = keys.KEY_OUTBOX
cdef str _SCOPE_SEPARATOR = keys.SCOPE_SEPARATOR

# Every partition's base and hold-id prefix, made once at import by limits.keys itself, so a
# request only indexes a tuple and the formats cannot drift from keys.base and keys.hold_id.
cdef tuple _BASES = tuple([keys.base(partition) for partition in range(PARTITIONS_MAX)])
cdef tuple _HOLD_PREFIXES = tuple([
    keys.hold_id(partition, "0" * HOLD_TOKEN_LENGTH).removesuffix("0" * HOLD_TOKEN_LENGTH)
    for partition in range(PARTITIONS_MAX)
])
# A prefix is the partition's digits and one separator (`007-`); all are equally long.
cdef Py_ssize_t _HOLD_DIGITS = len(_HOLD_PREFIXES[0]) - 1
cdef Py_UCS4 _HOLD_SEPARATOR = (<str>_HOLD_PREFIXES[0])[_HOLD_DIGITS]
assert all([len(prefix) == _HOLD_DIGITS + 1 for prefix in _HOLD_PREFIXES])
assert all([prefix[:_HOLD_DIGITS].isdigit() and int(prefix[:_HOLD_DIGITS]) == partition
            for partition, prefix in enumerate(_HOLD_PREFIXES)])

cdef int _CHANNEL_NOT_ALLOWED = DeclineReason.CHANNEL_NOT_ALLOWED
cdef int _MCC_NOT_ALLOWED = DeclineReason.MCC_NOT_ALLOWED
cdef int _AMOUNT_BELOW_MINIMUM = DeclineReason.AMOUNT_BELOW_MINIMUM
cdef int _AMOUNT_ABOVE_MAXIMUM = DeclineReason.AMOUNT_ABOVE_MAXIMUM
# product_decline answers a DeclineReason member, or the int 0 when no rule is broken, as the
# Python twin does; the reserve script receives str() of that answer.
cdef tuple _REASONS = tuple([
    DeclineReason(number) if number else 0 for number in range(max(DeclineReason) + 1)
])
cdef tuple _REASON_TEXTS = tuple([str(reason) for reason in _REASONS])

cdef str _REQUIRED = "required"
cdef str _ID_TOO_LONG = f"must be at most {ID_LENGTH_MAX} characters"
cdef str _ID_BAD_CHARACTER = "must be printable ASCII without spaces, '{', '}' or '|'"
cdef str _AMOUNT_NOT_POSITIVE = "must be greater than 0 (integer minor units)"
cdef str _AMOUNT_TOO_LARGE = f"must be at most {AMOUNT_MINOR_MAX}"
cdef str _MCC_NOT_FOUR_DIGITS = "must be four digits (ISO 18245)"
cdef str _CURRENCY_UNKNOWN = "unknown currency (ISO 4217 code expected)"
cdef str _HOLD_NOT_OURS = "not a hold id issued by this gateway"

# Copying a prepared state is cheaper than parsing digest_size on every call.
cdef object _BLAKE2B_8 = hashlib.blake2b(digest_size=8)


cdef inline bint _is_id_character(Py_UCS4 character) noexcept nogil:
    # 0x21..0x7A and '~': printable ASCII without space, '{', '|', '}' (or DEL).
    return 0x21 <= character <= 0x7A or character == 0x7E


# The C rule must admit exactly the specification's set, which is all ASCII.
assert _ID_CHARACTERS == frozenset([chr(c) for c in range(0x80) if _is_id_character(c)])


cdef inline int _mcc_code(object mcc) noexcept:
    """The value of a four-digit MCC, or -1 if mcc is not an exact str of four ASCII digits."""
    cdef Py_UCS4 character
    cdef int code = 0
    if type(mcc) is not str or len(<str>mcc) != 4:
        return -1
    for character in <str>mcc:
        if not u'0' <= character <= u'9':
            return -1
        code = code * 10 + (<int>character - ord('0'))
    return code


cdef inline bint _has_bit(const unsigned char *bits, int code) noexcept nogil:
    return bits[code >> 3] & (1 << (code & 7))


cdef inline void _set_bit(unsigned char *bits, int code) noexcept nogil:
    bits[code >> 3] |= 1 << (code & 7)


cdef class ProductRules:
    """One catalog product, prepared once at start-up for the per-request checks."""

    cdef readonly str product_id
    cdef readonly str currency
    cdef readonly long long amount_min_minor
    cdef readonly long long amount_max_minor
    cdef readonly frozenset channels
    cdef readonly frozenset mcc_allow
    cdef readonly frozenset mcc_deny
    cdef readonly str hold_ttl_ms
    cdef readonly tuple velocity_args
    cdef readonly dict nodes_by_channel
    # The same rules indexed by channel number and MCC value, so a request hashes nothing.
    cdef unsigned int _channel_bits
    cdef tuple _args_tail_by_channel  # velocity args + the channel's nodes, by channel number
    cdef bint _has_mcc_allow
    cdef unsigned char _mcc_allow_bits[_MCC_BITMAP_BYTES]
    cdef unsigned char _mcc_deny_bits[_MCC_BITMAP_BYTES]
    cdef object _product  # to pickle: the tables above are rebuilt from it

    def __init__(self, product):
        cdef Py_ssize_t number
        cdef int code
        self._product = product
        self.product_id = product.id
        self.currency = product.currency
        self.amount_min_minor = product.amount_min_minor
        self.amount_max_minor = product.amount_max_minor
        self.channels = frozenset(product.channels)
        self.mcc_allow = frozenset(product.mcc_allow)
        self.mcc_deny = frozenset(product.mcc_deny)
        self.hold_ttl_ms = str(product.hold_ttl_s * 1000)
        velocity = product.velocity
        self.velocity_args = (
            str(velocity.day.amount_max_minor),
            str(velocity.day.count_max),
            str(velocity.month.amount_max_minor),
            str(velocity.month.count_max),
        )
        self.nodes_by_channel = {
            channel: product.nodes_for(channel) for channel in CHANNEL_NAMES[1:]
        }
        self._channel_bits = 0
        tails = [()]
        for number in range(1, _CHANNEL_COUNT):
            channel = CHANNEL_NAMES[number]
            if channel in self.channels:
                self._channel_bits |= (<unsigned int>1) << number
            tails.append(self.velocity_args + tuple(self.nodes_by_channel[channel]))
        self._args_tail_by_channel = tuple(tails)
        # An entry that is not four digits never equals a checked MCC; product_decline hands an
        # unchecked MCC of another form to the Python twin, which looks in the sets.
        self._has_mcc_allow = len(self.mcc_allow) != 0
        memset(self._mcc_allow_bits, 0, _MCC_BITMAP_BYTES)
        memset(self._mcc_deny_bits, 0, _MCC_BITMAP_BYTES)
        for mcc in self.mcc_allow:
            code = _mcc_code(mcc)
            if code >= 0:
                _set_bit(self._mcc_allow_bits, code)
        for mcc in self.mcc_deny:
            code = _mcc_code(mcc)
            if code >= 0:
                _set_bit(self._mcc_deny_bits, code)

    def __reduce__(self):
        return ProductRules, (self._product,)

    cdef inline int _decline(self, bint channel_allowed, int mcc_code,
                             long long amount_minor) noexcept:
        """product_decline for a four-digit MCC."""
        if not channel_allowed:
            return _CHANNEL_NOT_ALLOWED
        if _has_bit(self._mcc_deny_bits, mcc_code) or (
            self._has_mcc_allow and not _has_bit(self._mcc_allow_bits, mcc_code)
        ):
            return _MCC_NOT_ALLOWED
        if amount_minor < self.amount_min_minor:
            return _AMOUNT_BELOW_MINIMUM
        if amount_minor > self.amount_max_minor:
            return _AMOUNT_ABOVE_MAXIMUM
        return 0


def compile_products(products):
    return {product_id: ProductRules(product) for product_id, product in products.items()}


cdef int _check_id(field, str value) except -1:
    cdef Py_ssize_t length = len(value)
    cdef Py_UCS4 character
    if length == 0:
        raise InvalidArgument(field, _REQUIRED)
    if length > _ID_LENGTH_MAX:
        raise InvalidArgument(field, _ID_TOO_LONG)
    for character in value:
        if not _is_id_character(character):
            raise InvalidArgument(field, _ID_BAD_CHARACTER)
    return 0


cdef inline int _check_id_any(field, object value) except -1:
    if type(value) is str:
        return _check_id(field, <str>value)
    _plan_py.check_id(field, value)
    return 0


def check_id(field, value):
    _check_id_any(field, value)


cdef inline bint _exact_amount(object amount_minor, long long *amount) except -1:
    """Whether amount_minor is an exact int within 1..AMOUNT_MINOR_MAX, its value in *amount."""
    cdef int overflow = 0
    if type(amount_minor) is not int:
        return False
    amount[0] = PyLong_AsLongLongAndOverflow(amount_minor, &overflow)
    return overflow == 0 and 0 < amount[0] <= _AMOUNT_MINOR_MAX


def check_amount(field, amount_minor):
    cdef long long amount
    if not _exact_amount(amount_minor, &amount):
        _plan_py.check_amount(field, amount_minor)


def product_decline(rules, channel, mcc, amount_minor):
    """The first product rule the purchase breaks, in the documented order, or 0."""
    cdef int overflow = 0
    cdef long long amount
    cdef int mcc_code = _mcc_code(mcc)
    if mcc_code >= 0 and type(amount_minor) is int and isinstance(rules, ProductRules):
        amount = PyLong_AsLongLongAndOverflow(amount_minor, &overflow)
        if not overflow:
            return _REASONS[(<ProductRules>rules)._decline(
                channel in (<ProductRules>rules).channels, mcc_code, amount
            )]
    return _plan_py.product_decline(rules, channel, mcc, amount_minor)


cdef inline str _digest(str text):
    digest = _BLAKE2B_8.copy()
    digest.update(text.encode())
    return digest.hexdigest()


def fingerprint(*parts):
    """A short digest of a request's payload, stored with its idempotency record."""
    return _digest("|".join(parts))


def plan_authorize(request, rules_by_product, partitions, token):
    """Validate an AuthorizeRequest and build the reserve script's (keys, args).

    `token` is the random part of the hold id (used only if the purchase is approved).
    Raises InvalidArgument for bad input, checking fields in the order of the proto.
    """
    cdef str idempotency_key, customer_id, product_id, merchant_id, mcc, currency, channel
    cdef str base, hold_id, amount
    cdef ProductRules rules
    cdef long long amount_minor, partition, partition_count
    cdef long channel_number
    cdef int mcc_code, overflow = 0
    cdef Py_ssize_t customer_id_length
    cdef const char *customer_id_bytes
    idempotency_key_object = request.idempotency_key
    customer_id_object = request.customer_id
    product_id_object = request.product_id
    merchant_id_object = request.merchant_id
    mcc_object = request.mcc
    amount_minor_object = request.amount_minor
    currency_object = request.currency
    if not (
        type(idempotency_key_object) is str and type(customer_id_object) is str
        and type(product_id_object) is str and type(merchant_id_object) is str
        and type(mcc_object) is str and type(amount_minor_object) is int
        and type(currency_object) is str and type(rules_by_product) is dict
        and type(partitions) is int and type(token) is str
        and len(<str>token) == _HOLD_TOKEN_LENGTH
    ):
        return _plan_py.plan_authorize(request, rules_by_product, partitions, token)
    partition_count = PyLong_AsLongLongAndOverflow(partitions, &overflow)
    if overflow or not 0 < partition_count <= _PARTITIONS_MAX:
        return _plan_py.plan_authorize(request, rules_by_product, partitions, token)
    idempotency_key = <str>idempotency_key_object
    customer_id = <str>customer_id_object
    product_id = <str>product_id_object
    merchant_id = <str>merchant_id_object
    mcc = <str>mcc_object
    currency = <str>currency_object

    _check_id("idempotency_key", idempotency_key)
    _check_id("customer_id", customer_id)
    _check_id("product_id", product_id)
    rules_object = (<dict>rules_by_product).get(product_id)
    if rules_object is None:
        raise InvalidArgument("product_id", f"unknown product {product_id!r}")
    channel_object = request.channel
    if not isinstance(rules_object, ProductRules) or type(channel_object) is not int:
        return _plan_py.plan_authorize(request, rules_by_product, partitions, token)
    rules = <ProductRules>rules_object
    channel_number = PyLong_AsLongAndOverflow(channel_object, &overflow)
    if channel_number == 0 and not overflow:
        raise InvalidArgument("channel", _REQUIRED)
    if overflow or not 0 < channel_number < _CHANNEL_COUNT:
        raise InvalidArgument("channel", f"unknown channel {channel_object}")
    channel = <str>CHANNEL_NAMES[channel_number]
    _check_id("merchant_id", merchant_id)
    mcc_code = _mcc_code(mcc)
    if mcc_code < 0:
        raise InvalidArgument("mcc", _MCC_NOT_FOUR_DIGITS)
    if not _exact_amount(amount_minor_object, &amount_minor):
        # An int out of bounds: the Python twin raises, with the same message.
        _plan_py.check_amount("amount_minor", amount_minor_object)
        return _plan_py.plan_authorize(request, rules_by_product, partitions, token)
    if not currency:
        raise InvalidArgument("currency", _REQUIRED)
    if currency not in _CURRENCIES:
        raise InvalidArgument("currency", _CURRENCY_UNKNOWN)
    if currency != rules.currency:
        raise InvalidArgument("currency", f"product {product_id!r} is in {rules.currency}")

    # Everything is checked; from here on the plan is only assembled. customer_id is checked
    # ASCII, so its UTF-8 form is its own buffer and no bytes object is made.
    customer_id_bytes = PyUnicode_AsUTF8AndSize(customer_id, &customer_id_length)
    partition = <long long>crc32(
        0, <const unsigned char *>customer_id_bytes, <unsigned int>customer_id_length
    ) % partition_count
    base = <str>_BASES[partition]
    hold_id = <str>_HOLD_PREFIXES[partition] + <str>token
    amount = f"{amount_minor}"
    keys_ = [
        f"{base}{_K_CUSTOMER}{customer_id}",
        f"{base}{_K_CUSTOMER_HOLDS}{customer_id}",
        f"{base}{_K_DUE}",
        f"{base}{_K_OUTBOX}",
        f"{base}{_K_IDEMPOTENCY_AUTHORIZE}{customer_id}{_SCOPE_SEPARATOR}{idempotency_key}",
        f"{base}{_K_HOLD}{hold_id}",
    ]
    args = [
        base,
        customer_id,
        hold_id,
        _digest(f"{product_id}|{channel}|{merchant_id}|{mcc}|{amount}|{currency}"),
        product_id,
        amount,
        rules.hold_ttl_ms,
        <str>_REASON_TEXTS[rules._decline(
            (rules._channel_bits >> channel_number) & 1, mcc_code, amount_minor
        )],
        merchant_id,
        mcc,
        channel,
        currency,
    ]
    args.extend(<tuple>rules._args_tail_by_channel[channel_number])
    return keys_, args


cdef inline bint _exact_hold_request(object idempotency_key, object hold_id, object partitions,
                                     long long *partition_count) except -1:
    cdef int overflow = 0
    if not (type(idempotency_key) is str and type(hold_id) is str and type(partitions) is int):
        return False
    partition_count[0] = PyLong_AsLongLongAndOverflow(partitions, &overflow)
    return overflow == 0


cdef str _hold_base(str hold_id, long long partitions):
    """The base of the hold's partition, by the rule of keys.partition_of_hold."""
    cdef Py_ssize_t index
    cdef long long partition = 0
    cdef Py_UCS4 character
    _check_id("hold_id", hold_id)
    # hold_id is checked ASCII, where str.isdigit means '0'..'9'.
    if (len(hold_id) != _HOLD_DIGITS + 1 + _HOLD_TOKEN_LENGTH
            or hold_id[_HOLD_DIGITS] != _HOLD_SEPARATOR):
        raise InvalidArgument("hold_id", _HOLD_NOT_OURS)
    for index in range(_HOLD_DIGITS):
        character = hold_id[index]
        if not u'0' <= character <= u'9':
            raise InvalidArgument("hold_id", _HOLD_NOT_OURS)
        partition = partition * 10 + (<long long>character - ord('0'))
    if partition >= partitions:
        raise InvalidArgument("hold_id", _HOLD_NOT_OURS)
    if partition >= _PARTITIONS_MAX:
        return keys.base(partition)  # asserts, as for the Python twin
    return <str>_BASES[partition]


def plan_capture(request, partitions):
    """Validate a CaptureRequest and build the capture script's (keys, args)."""
    cdef long long partition_count, amount_minor
    cdef str idempotency_key, hold_id, base, amount, final
    idempotency_key_object = request.idempotency_key
    _check_id_any("idempotency_key", idempotency_key_object)
    hold_id_object = request.hold_id
    if not _exact_hold_request(idempotency_key_object, hold_id_object, partitions,
                               &partition_count):
        return _plan_py.plan_capture(request, partitions)
    idempotency_key = <str>idempotency_key_object
    hold_id = <str>hold_id_object
    base = _hold_base(hold_id, partition_count)
    amount_minor_object = request.amount_minor
    if not _exact_amount(amount_minor_object, &amount_minor):
        # Raises for a bad int; an amount of another type is the Python twin's to plan.
        _plan_py.check_amount("amount_minor", amount_minor_object)
        return _plan_py.plan_capture(request, partitions)
    amount = f"{amount_minor}"
    final = "1" if request.final else "0"
    keys_ = [
        f"{base}{_K_HOLD}{hold_id}",
        f"{base}{_K_IDEMPOTENCY_CAPTURE}{hold_id}{_SCOPE_SEPARATOR}{idempotency_key}",
        f"{base}{_K_DUE}",
        f"{base}{_K_OUTBOX}",
    ]
    return keys_, [base, hold_id, _digest(f"capture|{amount}|{final}"), amount, final]


def plan_void(request, partitions):
    """Validate a VoidRequest and build the void script's (keys, args)."""
    cdef long long partition_count
    cdef str idempotency_key, hold_id, base
    idempotency_key_object = request.idempotency_key
    _check_id_any("idempotency_key", idempotency_key_object)
    hold_id_object = request.hold_id
    if not _exact_hold_request(idempotency_key_object, hold_id_object, partitions,
                               &partition_count):
        return _plan_py.plan_void(request, partitions)
    idempotency_key = <str>idempotency_key_object
    hold_id = <str>hold_id_object
    base = _hold_base(hold_id, partition_count)
    keys_ = [
        f"{base}{_K_HOLD}{hold_id}",
        f"{base}{_K_IDEMPOTENCY_VOID}{hold_id}{_SCOPE_SEPARATOR}{idempotency_key}",
        f"{base}{_K_DUE}",
        f"{base}{_K_OUTBOX}",
    ]
    return keys_, [base, hold_id, _digest("void")]
