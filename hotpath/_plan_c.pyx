# cython: language_level=3, boundscheck=False, wraparound=False, embedsignature=True
"""The compiled twin of hotpath/_plan_py.py, which is the specification: the same functions doing
the same steps in the same order, so the results (byte for byte) and the errors (the one
InvalidArgument class of _plan_py, and any other exception odd input causes) are the same.

What compiling adds, and nothing else: the rules as a cdef class (typed attribute reads), the
id and MCC character tests as C loops over a str's characters (any other type takes the
specification's set test), the slots of the scripts' KEYS and args as C indices read from
limits/contracts.py at import, and each partition's base, due and outbox keys made once at
import by limits.keys. The partition is keys.partition_of, the other keys are limits.keys'
functions, the fingerprint is hashlib's BLAKE2b, as in the specification. docs/benchmarks.md
("Hot path") has the measurements.
"""

import hashlib

from creditgate.hotpath import _plan_py
from creditgate.hotpath._plan_py import CHANNEL_NAMES, InvalidArgument
from creditgate.limits import contracts, keys
from creditgate.limits.catalog import CURRENCIES
from creditgate.limits.constants import AMOUNT_MINOR_MAX, ID_LENGTH_MAX, PARTITIONS_MAX
from creditgate.limits.reasons import DeclineReason

cdef tuple _CHANNEL_NAMES = CHANNEL_NAMES
cdef frozenset _CURRENCIES = CURRENCIES
cdef frozenset _ID_CHARACTERS = _plan_py._ID_CHARACTERS
cdef frozenset _DIGITS = _plan_py._DIGITS
cdef object _CHANNEL_NOT_ALLOWED = DeclineReason.CHANNEL_NOT_ALLOWED
cdef object _MCC_NOT_ALLOWED = DeclineReason.MCC_NOT_ALLOWED
cdef object _AMOUNT_BELOW_MINIMUM = DeclineReason.AMOUNT_BELOW_MINIMUM
cdef object _AMOUNT_ABOVE_MAXIMUM = DeclineReason.AMOUNT_ABOVE_MAXIMUM
cdef object _MERCHANT_NOT_ALLOWED = DeclineReason.MERCHANT_NOT_ALLOWED
cdef str _ID_TOO_LONG = f"must be at most {ID_LENGTH_MAX} characters"
cdef str _ID_BAD_CHARACTER = "must be printable ASCII without spaces, '{', '}' or '|'"
cdef str _HOLD_NOT_OURS = "not a hold id issued by this gateway"
cdef object _BLAKE2B_8 = hashlib.blake2b(digest_size=8)  # copied for each digest

# Each partition's keys that depend on the partition only, made by limits.keys.
cdef tuple _BASES = tuple([keys.base(partition) for partition in range(PARTITIONS_MAX)])
cdef tuple _DUE_KEYS = tuple([keys.due(base) for base in _BASES])
cdef tuple _OUTBOX_KEYS = tuple([keys.outbox(base) for base in _BASES])


cdef inline bint _is_id_character(Py_UCS4 character) noexcept:
    return 0x21 <= character <= 0x7A or character == u'~'


# The C test must admit exactly the specification's set (all ASCII; it admits no other).
assert _ID_CHARACTERS == frozenset([chr(c) for c in range(0x80) if _is_id_character(c)])

# The scripts' KEYS and args by name (limits/contracts.py). Each struct is filled from its layout
# at import, which fails if the layout lacks one of these names.
cdef struct _ReserveKeys:
    Py_ssize_t customer, customer_holds, due, outbox, idempotency
cdef struct _ReserveArgs:
    Py_ssize_t base, customer_id, fingerprint, amount_minor, rule_decline, partial_approval
    Py_ssize_t installment_months, merchant_id, mcc, rules
cdef struct _HoldKeys:
    Py_ssize_t hold, idempotency, due, outbox
cdef struct _CaptureArgs:
    Py_ssize_t base, hold_id, fingerprint, amount_minor, final
cdef struct _VoidArgs:
    Py_ssize_t base, hold_id, fingerprint


def _indices(layout):
    return {name: index for index, name in enumerate(layout.names)}


cdef _ReserveKeys RESERVE_KEYS = _indices(contracts.RESERVE.keys)
cdef _ReserveArgs RESERVE_ARGS = _indices(contracts.RESERVE.args)
cdef _HoldKeys CAPTURE_KEYS = _indices(contracts.CAPTURE.keys)
cdef _CaptureArgs CAPTURE_ARGS = _indices(contracts.CAPTURE.args)
cdef _HoldKeys VOID_KEYS = _indices(contracts.VOID.keys)
cdef _VoidArgs VOID_ARGS = _indices(contracts.VOID.args)
cdef Py_ssize_t _RESERVE_KEY_COUNT = len(contracts.RESERVE.keys)
cdef Py_ssize_t _RESERVE_ARG_COUNT = len(contracts.RESERVE.args)
cdef Py_ssize_t _CAPTURE_KEY_COUNT = len(contracts.CAPTURE.keys)
cdef Py_ssize_t _CAPTURE_ARG_COUNT = len(contracts.CAPTURE.args)
cdef Py_ssize_t _VOID_KEY_COUNT = len(contracts.VOID.keys)
cdef Py_ssize_t _VOID_ARG_COUNT = len(contracts.VOID.args)


cdef class ProductRules:
    """One catalog product, prepared once at start-up for the per-request checks: the
    specification's ProductRules, held in typed fields."""

    cdef public str product_id, currency, installment_terms
    cdef public object amount_min_minor, amount_max_minor
    cdef public frozenset channels, mcc_allow, mcc_deny, merchants_allow, merchants_deny
    cdef public tuple installment_months, merchant_allow_prefixes, merchant_deny_prefixes
    cdef public dict nodes_by_channel, rules_by_channel, bounds_by_channel
    cdef public bint partial_approval, merchant_lists, merchant_allow_listed
    cdef object _product
    cdef str _catalog_version

    def __init__(self, product, catalog_version=_plan_py.contracts.CATALOG_VERSION_NONE):
        self._product = product
        self._catalog_version = catalog_version
        self._copy(_plan_py.ProductRules(product, catalog_version))

    cdef _copy(self, rules):
        for name, value in vars(rules).items():
            setattr(self, name, value)

    def __reduce__(self):
        return ProductRules, (self._product, self._catalog_version)


cdef ProductRules _rules(rules):
    """Rules as this twin's class (the specification's are copied, for callers that mix them)."""
    cdef ProductRules made
    if type(rules) is ProductRules:
        return <ProductRules>rules
    made = ProductRules.__new__(ProductRules)
    made._copy(rules)
    return made


def compile_products(products, catalog_version=_plan_py.contracts.CATALOG_VERSION_NONE):
    return {product_id: ProductRules(product, catalog_version)
            for product_id, product in products.items()}


cdef int _check_id(str field, value) except -1:
    cdef Py_UCS4 character
    if not value:
        raise InvalidArgument(field, "required")
    if len(value) > ID_LENGTH_MAX:
        raise InvalidArgument(field, _ID_TOO_LONG)
    if type(value) is str:
        for character in <str>value:
            if not _is_id_character(character):
                raise InvalidArgument(field, _ID_BAD_CHARACTER)
    else:
        for character_object in value:
            if character_object not in _ID_CHARACTERS:
                raise InvalidArgument(field, _ID_BAD_CHARACTER)
    return 0


def check_id(field, value):
    _check_id(field, value)


cdef int _check_amount(str field, amount_minor) except -1:
    if amount_minor <= 0:
        raise InvalidArgument(field, "must be greater than 0 (integer minor units)")
    if amount_minor > AMOUNT_MINOR_MAX:
        raise InvalidArgument(field, f"must be at most {AMOUNT_MINOR_MAX}")
    return 0


def check_amount(field, amount_minor):
    _check_amount(field, amount_minor)


cdef bint _is_mcc(mcc) except -1:
    cdef Py_UCS4 character
    if len(mcc) != 4:
        return False
    if type(mcc) is not str:
        return _DIGITS.issuperset(mcc)
    for character in <str>mcc:
        if not u'0' <= character <= u'9':
            return False
    return True


cdef object _decline(ProductRules rules, channel, mcc, amount_minor, merchant_id):
    if channel not in rules.channels:
        return _CHANNEL_NOT_ALLOWED
    if mcc in rules.mcc_deny or (rules.mcc_allow and mcc not in rules.mcc_allow):
        return _MCC_NOT_ALLOWED
    if rules.merchant_lists and (
        merchant_id in rules.merchants_deny
        or merchant_id.startswith(rules.merchant_deny_prefixes)
        or (rules.merchant_allow_listed
            and merchant_id not in rules.merchants_allow
            and not merchant_id.startswith(rules.merchant_allow_prefixes))
    ):
        return _MERCHANT_NOT_ALLOWED
    low, high = rules.amount_min_minor, rules.amount_max_minor
    if rules.bounds_by_channel and channel in rules.bounds_by_channel:
        low, high = rules.bounds_by_channel[channel]
    if amount_minor < low:
        return _AMOUNT_BELOW_MINIMUM
    if amount_minor > high:
        return _AMOUNT_ABOVE_MAXIMUM
    return 0


def product_decline(rules, channel, mcc, amount_minor, merchant_id):
    """The first product rule the purchase breaks, in the documented order, or 0. The amount
    bounds are the channel's where it has its own."""
    return _decline(_rules(rules), channel, mcc, amount_minor, merchant_id)


cdef str _digest(str text):
    digest = _BLAKE2B_8.copy()
    digest.update(text.encode())
    return digest.hexdigest()


cdef str _VOID_FINGERPRINT = _digest("void")  # fingerprint("void"): a void has no payload


def fingerprint(*parts):
    """A short digest of a request's payload, stored with its idempotency record."""
    return _digest("|".join(parts))


cdef Py_ssize_t _partition(partition) except -1:
    """The partition as an index of the tables above; keys.base raises for any other one, as
    it does in the specification."""
    if type(partition) is int and 0 <= partition < PARTITIONS_MAX:
        return partition
    keys.base(partition)
    raise AssertionError(partition)


cpdef str authorize_fingerprint(str product_id, str channel, str merchant_id, str mcc,
                                str amount, str currency, str partial_asked, str months):
    """An Authorize's fingerprint (the specification's authorize_fingerprint)."""
    return _digest("|".join((
        product_id, channel, merchant_id, mcc, amount, currency, partial_asked, months)))


def plan_authorize(request, rules_by_product, partitions):
    """Validate an AuthorizeRequest and build the reserve script's (keys, args).

    Raises InvalidArgument for bad input, checking fields in the order of the proto. An
    approval's hold id is not planned: reserve.lua derives it from the idempotency record's
    key (limits/keys.derived_hold_id).
    """
    cdef ProductRules rules
    cdef Py_ssize_t partition
    cdef list keys_, args
    idempotency_key = request.idempotency_key
    customer_id = request.customer_id
    product_id = request.product_id
    merchant_id = request.merchant_id
    mcc = request.mcc
    amount_minor = request.amount_minor
    currency = request.currency
    allow_partial = request.allow_partial
    installment_months = request.installment_months
    _check_id("idempotency_key", idempotency_key)
    _check_id("customer_id", customer_id)
    _check_id("product_id", product_id)
    rules_object = rules_by_product.get(product_id)
    if rules_object is None:
        raise InvalidArgument("product_id", f"unknown product {product_id!r}")
    rules = _rules(rules_object)
    channel = _channel(request.channel)
    _check_id("merchant_id", merchant_id)
    if not _is_mcc(mcc):
        raise InvalidArgument("mcc", "must be four digits (ISO 18245)")
    _check_amount("amount_minor", amount_minor)
    _check_terms(rules, product_id, currency, installment_months)

    partition = _partition(keys.partition_of(customer_id, partitions))
    base = _BASES[partition]
    amount = str(amount_minor)
    partial_asked = "1" if allow_partial else "0"
    months = str(installment_months)
    keys_ = _reserve_keys(partition, customer_id, idempotency_key)
    args = [""] * _RESERVE_ARG_COUNT
    args[RESERVE_ARGS.base] = base
    args[RESERVE_ARGS.customer_id] = customer_id
    args[RESERVE_ARGS.fingerprint] = authorize_fingerprint(
        product_id, channel, merchant_id, mcc, amount, currency, partial_asked, months)
    args[RESERVE_ARGS.amount_minor] = amount
    args[RESERVE_ARGS.rule_decline] = str(_decline(rules, channel, mcc, amount_minor,
                                                        merchant_id))
    args[RESERVE_ARGS.partial_approval] = "1" if rules.partial_approval and allow_partial else "0"
    args[RESERVE_ARGS.installment_months] = months
    args[RESERVE_ARGS.merchant_id] = merchant_id
    args[RESERVE_ARGS.mcc] = mcc
    args[RESERVE_ARGS.rules] = rules.rules_by_channel[channel]
    return keys_, args


cdef object _channel(channel_number):
    if channel_number == 0:
        raise InvalidArgument("channel", "required")
    if not 0 < channel_number < len(_CHANNEL_NAMES):
        raise InvalidArgument("channel", f"unknown channel {channel_number}")
    return _CHANNEL_NAMES[channel_number]


cdef int _check_terms(ProductRules rules, product_id, currency,
                      installment_months) except -1:
    if not currency:
        raise InvalidArgument("currency", "required")
    if currency not in _CURRENCIES:
        raise InvalidArgument("currency", "unknown currency (ISO 4217 code expected)")
    if currency != rules.currency:
        raise InvalidArgument("currency", f"product {product_id!r} is in {rules.currency}")
    # 0 pays in full; a product offers terms of 2 months and more, so a negative one is refused.
    if installment_months != 0 and installment_months not in rules.installment_months:
        raise InvalidArgument("installment_months", rules.installment_terms)
    return 0


cdef list _reserve_keys(Py_ssize_t partition, customer_id, idempotency_key):
    cdef list keys_ = [""] * _RESERVE_KEY_COUNT
    base = _BASES[partition]
    keys_[RESERVE_KEYS.customer] = keys.customer(base, customer_id)
    keys_[RESERVE_KEYS.customer_holds] = keys.customer_holds(base, customer_id)
    keys_[RESERVE_KEYS.due] = _DUE_KEYS[partition]
    keys_[RESERVE_KEYS.outbox] = _OUTBOX_KEYS[partition]
    keys_[RESERVE_KEYS.idempotency] = keys.idempotency_authorize(base, customer_id,
                                                                 idempotency_key)
    return keys_


def plan_capture(request, partitions):
    """Validate a CaptureRequest and build the capture script's (keys, args)."""
    cdef Py_ssize_t partition
    cdef list keys_, args
    _check_id("idempotency_key", request.idempotency_key)
    hold_id = request.hold_id
    partition = _hold_partition(hold_id, partitions)
    base = _BASES[partition]
    _check_amount("amount_minor", request.amount_minor)
    amount = str(request.amount_minor)
    final = "1" if request.final else "0"
    keys_ = [""] * _CAPTURE_KEY_COUNT
    keys_[CAPTURE_KEYS.hold] = keys.hold(base, hold_id)
    keys_[CAPTURE_KEYS.idempotency] = keys.idempotency_capture(base, hold_id,
                                                               request.idempotency_key)
    keys_[CAPTURE_KEYS.due] = _DUE_KEYS[partition]
    keys_[CAPTURE_KEYS.outbox] = _OUTBOX_KEYS[partition]
    args = [""] * _CAPTURE_ARG_COUNT
    args[CAPTURE_ARGS.base] = base
    args[CAPTURE_ARGS.hold_id] = hold_id
    args[CAPTURE_ARGS.fingerprint] = _digest("|".join(("capture", amount, final)))
    args[CAPTURE_ARGS.amount_minor] = amount
    args[CAPTURE_ARGS.final] = final
    return keys_, args


def plan_void(request, partitions):
    """Validate a VoidRequest and build the void script's (keys, args)."""
    cdef Py_ssize_t partition
    cdef list keys_, args
    _check_id("idempotency_key", request.idempotency_key)
    hold_id = request.hold_id
    partition = _hold_partition(hold_id, partitions)
    base = _BASES[partition]
    keys_ = [""] * _VOID_KEY_COUNT
    keys_[VOID_KEYS.hold] = keys.hold(base, hold_id)
    keys_[VOID_KEYS.idempotency] = keys.idempotency_void(base, hold_id, request.idempotency_key)
    keys_[VOID_KEYS.due] = _DUE_KEYS[partition]
    keys_[VOID_KEYS.outbox] = _OUTBOX_KEYS[partition]
    args = [""] * _VOID_ARG_COUNT
    args[VOID_ARGS.base] = base
    args[VOID_ARGS.hold_id] = hold_id
    args[VOID_ARGS.fingerprint] = _VOID_FINGERPRINT
    return keys_, args


cdef Py_ssize_t _hold_partition(hold_id, partitions) except -1:
    _check_id("hold_id", hold_id)
    partition = keys.partition_of_hold(hold_id, partitions)
    if partition is None:
        raise InvalidArgument("hold_id", _HOLD_NOT_OURS)
    return _partition(partition)
