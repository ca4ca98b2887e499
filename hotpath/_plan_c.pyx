# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
# cython: infer_types=False, embedsignature=True, cdivision=True
# distutils: libraries = z
"""The compiled twin of hotpath/_plan_py.py, which is the specification: same names, signatures,
results (byte for byte) and errors (the one InvalidArgument class of _plan_py).

The fast paths take what the gateway passes: protobuf messages, whose string fields are exact
`str` and whose integer fields are exact `int`, rules made by this module's compile_products and
a partition count within 1..PARTITIONS_MAX. Any other input is handed to the Python twin, so the
two cannot disagree on odd input.

plan_authorize has two fast paths. The first reads a creditgate.v1.AuthorizeRequest from its own
serialization (one call into the protobuf runtime instead of ten attribute reads, each of which
makes a new object) and plans from the bytes; it gives up, without raising, on anything that is
not a request passing every check. The second reads the attributes, checks them in the proto's
order and raises the specification's errors. Both end in one assembly of keys and args, whose
strings are written with memcpy, and whose fingerprint is BLAKE2b computed here over a stack
buffer (the same digest as hashlib.blake2b(..., digest_size=8), which the Python twin calls).
docs/benchmarks.md ("Hot path") has the measurements behind these choices.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_Next
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.long cimport PyLong_AsLongAndOverflow, PyLong_AsLongLongAndOverflow
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF
from cpython.unicode cimport PyUnicode_AsUTF8String
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.string cimport memcmp, memcpy, memset

from creditgate.hotpath import _plan_py
from creditgate.hotpath._plan_py import _ID_CHARACTERS, CHANNEL_NAMES, InvalidArgument
from creditgate.limits import keys
from creditgate.limits.catalog import CURRENCIES
from creditgate.limits.constants import (
    AMOUNT_MINOR_MAX,
    HOLD_TOKEN_LENGTH,
    ID_LENGTH_MAX,
    INSTALLMENT_MONTHS_MAX,
    PARTITIONS_MAX,
)
from creditgate.limits.reasons import DeclineReason


cdef extern from "zlib.h":
    # libz's CRC-32 is the one zlib.crc32 computes; running it over the str's own ASCII buffer
    # spares the bytes copy that customer_id.encode() would make.
    unsigned long crc32(unsigned long crc, const unsigned char *buf, unsigned int length) nogil


cdef extern from "Python.h":
    # A str made by PyUnicode_New(n, 127) is compact ASCII: PyUnicode_DATA is its n bytes.
    str PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    void *PyUnicode_DATA(object text)
    Py_ssize_t PyUnicode_GET_LENGTH(object text)
    bint PyUnicode_IS_ASCII(object text)


cdef extern from *:
    """
    /* Strings are always ready from Python 3.12 on, which deprecates the call. */
    static inline int cg_unicode_ready(PyObject *text) {
    #if PY_VERSION_HEX < 0x030C0000
        return PyUnicode_READY(text);
    #else
        (void)text;
        return 0;
    #endif
    }
    """
    int PyUnicode_READY "cg_unicode_ready" (object text) except -1


cdef extern from *:
    """
    /* BLAKE2b (RFC 7693) without a key and with an 8-byte digest, as
       hashlib.blake2b(data, digest_size=8).hexdigest() computes it. */
    #include <stdint.h>
    #include <string.h>

    static const uint64_t cg_blake2b_iv[8] = {
        0x6A09E667F3BCC908ULL, 0xBB67AE8584CAA73BULL, 0x3C6EF372FE94F82BULL,
        0xA54FF53A5F1D36F1ULL, 0x510E527FADE682D1ULL, 0x9B05688C2B3E6C1FULL,
        0x1F83D9ABFB41BD6BULL, 0x5BE0CD19137E2179ULL,
    };

    static const uint8_t cg_blake2b_sigma[12][16] = {
        {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
        {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
        {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
        {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
        {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
        {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
        {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
        {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
        {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
        {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
        {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
        {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    };

    #define CG_ROTR64(x, n) (((x) >> (n)) | ((x) << (64 - (n))))
    #define CG_G(a, b, c, d, x, y) do {                                      \\
        v[a] = v[a] + v[b] + (x); v[d] = CG_ROTR64(v[d] ^ v[a], 32);        \\
        v[c] = v[c] + v[d];       v[b] = CG_ROTR64(v[b] ^ v[c], 24);        \\
        v[a] = v[a] + v[b] + (y); v[d] = CG_ROTR64(v[d] ^ v[a], 16);        \\
        v[c] = v[c] + v[d];       v[b] = CG_ROTR64(v[b] ^ v[c], 63);        \\
    } while (0)

    /* A round with its permutation as constants, so that each m[...] is a fixed slot. */
    #define CG_ROUND(r) do {                                                                 \
        CG_G(0, 4, 8, 12, m[cg_blake2b_sigma[r][0]], m[cg_blake2b_sigma[r][1]]);            \
        CG_G(1, 5, 9, 13, m[cg_blake2b_sigma[r][2]], m[cg_blake2b_sigma[r][3]]);            \
        CG_G(2, 6, 10, 14, m[cg_blake2b_sigma[r][4]], m[cg_blake2b_sigma[r][5]]);           \
        CG_G(3, 7, 11, 15, m[cg_blake2b_sigma[r][6]], m[cg_blake2b_sigma[r][7]]);           \
        CG_G(0, 5, 10, 15, m[cg_blake2b_sigma[r][8]], m[cg_blake2b_sigma[r][9]]);           \
        CG_G(1, 6, 11, 12, m[cg_blake2b_sigma[r][10]], m[cg_blake2b_sigma[r][11]]);         \
        CG_G(2, 7, 8, 13, m[cg_blake2b_sigma[r][12]], m[cg_blake2b_sigma[r][13]]);          \
        CG_G(3, 4, 9, 14, m[cg_blake2b_sigma[r][14]], m[cg_blake2b_sigma[r][15]]);          \
    } while (0)

    static inline uint64_t cg_load64_le(const uint8_t *p) {
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        uint64_t word;
        memcpy(&word, p, sizeof word);
        return word;
    #else
        return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16
            | (uint64_t)p[3] << 24 | (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40
            | (uint64_t)p[6] << 48 | (uint64_t)p[7] << 56;
    #endif
    }

    /* m: the block's sixteen words. */
    static void cg_blake2b_compress(uint64_t *restrict h, const uint64_t *restrict m,
                                    uint64_t counter,
                                    int last) {
        uint64_t v[16];
        int i;
        for (i = 0; i < 8; i++) {
            v[i] = h[i];
            v[i + 8] = cg_blake2b_iv[i];
        }
        v[12] ^= counter;  /* the counter's high word stays 0: inputs are far below 2^64 bytes */
        if (last) {
            v[14] = ~v[14];
        }
        CG_ROUND(0); CG_ROUND(1); CG_ROUND(2); CG_ROUND(3); CG_ROUND(4); CG_ROUND(5);
        CG_ROUND(6); CG_ROUND(7); CG_ROUND(8); CG_ROUND(9); CG_ROUND(10); CG_ROUND(11);
        for (i = 0; i < 8; i++) {
            h[i] ^= v[i] ^ v[i + 8];
        }
    }

    /* Writes the digest's 16 lower-case hex digits to hex (not NUL-terminated). */
    static void cg_blake2b_8_hex(const uint8_t *data, size_t length, char *hex) {
        static const char digits[] = "0123456789abcdef";
        uint64_t h[8], m[16];
        uint64_t counter = 0;
        int i;
        memcpy(h, cg_blake2b_iv, sizeof h);
        h[0] ^= 0x01010000ULL ^ 8;  /* depth 1, fanout 1, no key, an 8-byte digest */
        while (length > 128) {  /* every full block but the last */
            for (i = 0; i < 16; i++) {
                m[i] = cg_load64_le(data + 8 * i);
            }
            counter += 128;
            cg_blake2b_compress(h, m, counter, 0);
            data += 128;
            length -= 128;
        }
        /* The last block, padded with zeros. */
        for (i = 0; i < 16; i++) {
            m[i] = 0;
        }
        memcpy(m, data, length);
    #if !(defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__)
        for (i = 0; i < 16; i++) {
            m[i] = cg_load64_le((const uint8_t *)&m[i]);
        }
    #endif
        counter += length;
        cg_blake2b_compress(h, m, counter, 1);
        for (i = 0; i < 8; i++) {
            uint8_t byte = (uint8_t)(h[0] >> (8 * i));
            hex[2 * i] = digits[byte >> 4];
            hex[2 * i + 1] = digits[byte & 15];
        }
    }
    """
    void cg_blake2b_8_hex(const unsigned char *data, size_t length, char *hex) nogil


cdef enum:
    _MCC_BITMAP_BYTES = 1250  # an MCC is four decimal digits: one bit for each of 10000
    _DIGEST_HEX_LENGTH = 16
    _AMOUNT_DIGITS_MAX = 20  # an int64's decimal digits, and a sign
    # The fingerprint text: product, channel, merchant and idempotency-id bounds, four-digit MCC,
    # amount, currency (asserted below), the 0/1 flag and the months, seven separators.
    _CURRENCY_LENGTH_MAX = 8
    # A catalog this small is searched by comparing bytes with each product id, which spares
    # making and hashing a str; a larger one is looked up in the dict.
    _PRODUCT_SCAN_MAX = 16
    _FINGERPRINT_TEXT_MAX = 3 * 64 + 4 + _AMOUNT_DIGITS_MAX + _CURRENCY_LENGTH_MAX + 1 + 2 + 7


cdef Py_ssize_t _ID_LENGTH_MAX = ID_LENGTH_MAX
cdef long long _AMOUNT_MINOR_MAX = AMOUNT_MINOR_MAX
cdef long long _PARTITIONS_MAX = PARTITIONS_MAX
cdef Py_ssize_t _HOLD_TOKEN_LENGTH = HOLD_TOKEN_LENGTH
cdef tuple _CHANNEL_NAMES = CHANNEL_NAMES
cdef Py_ssize_t _CHANNEL_COUNT = len(CHANNEL_NAMES)
cdef frozenset _CURRENCIES = CURRENCIES
assert ID_LENGTH_MAX <= 64 and AMOUNT_MINOR_MAX < 10**19
assert max([len(name) for name in CHANNEL_NAMES]) <= ID_LENGTH_MAX
assert all([currency.isascii() and len(currency) <= _CURRENCY_LENGTH_MAX
            for currency in CURRENCIES])
# A term's months are a bit of a 64-bit set.
assert INSTALLMENT_MONTHS_MAX < 64

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
assert all([text.isascii() for text in (
    _K_CUSTOMER, _K_CUSTOMER_HOLDS, _K_HOLD, _K_IDEMPOTENCY_AUTHORIZE, _SCOPE_SEPARATOR
)])

# Every partition's base, hold-id prefix, due key and outbox key, made once at import by
# limits.keys itself, so a request only indexes a tuple and the formats cannot drift.
cdef tuple _BASES = tuple([keys.base(partition) for partition in range(PARTITIONS_MAX)])
cdef tuple _HOLD_PREFIXES = tuple([
    keys.hold_id(partition, "0" * HOLD_TOKEN_LENGTH).removesuffix("0" * HOLD_TOKEN_LENGTH)
    for partition in range(PARTITIONS_MAX)
])
cdef tuple _DUE_KEYS = tuple([keys.due(base) for base in _BASES])
cdef tuple _OUTBOX_KEYS = tuple([keys.outbox(base) for base in _BASES])
assert all([base.isascii() for base in _BASES])
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
# str(months) for every term a product may offer, and 0.
cdef tuple _MONTH_TEXTS = tuple([str(months) for months in range(64)])
# The str of each four-digit MCC, made on first use: MCCs are few and repeat.
cdef list _MCC_TEXTS = [None] * 10000
cdef str _ZERO = "0"
cdef str _ONE = "1"

cdef str _REQUIRED = "required"
cdef str _ID_TOO_LONG = f"must be at most {ID_LENGTH_MAX} characters"
cdef str _ID_BAD_CHARACTER = "must be printable ASCII without spaces, '{', '}' or '|'"
cdef str _MCC_NOT_FOUR_DIGITS = "must be four digits (ISO 18245)"
cdef str _CURRENCY_UNKNOWN = "unknown currency (ISO 4217 code expected)"
cdef str _HOLD_NOT_OURS = "not a hold id issued by this gateway"


cdef inline bint _is_id_character(Py_UCS4 character) noexcept nogil:
    # 0x21..0x7A and '~': printable ASCII without space, '{', '|', '}' (or DEL).
    return 0x21 <= character <= 0x7A or character == 0x7E


# The C rule must admit exactly the specification's set, which is all ASCII.
assert _ID_CHARACTERS == frozenset([chr(c) for c in range(0x80) if _is_id_character(c)])


# Text as C sees it: ASCII bytes that some live object (a str or the request's bytes) owns.
cdef struct _Text:
    const char *data
    Py_ssize_t length


cdef inline _Text _text(str ascii) noexcept:
    """The bytes of a str known to be ASCII (a compact ASCII str is its own byte buffer)."""
    cdef _Text text
    text.data = <const char *>PyUnicode_DATA(ascii)
    text.length = PyUnicode_GET_LENGTH(ascii)
    return text


cdef inline str _str(_Text text):
    cdef str made = PyUnicode_New(text.length, 127)
    memcpy(PyUnicode_DATA(made), text.data, text.length)
    return made


cdef inline char *_put(char *out, _Text text) noexcept nogil:
    memcpy(out, text.data, text.length)
    return out + text.length


cdef inline str _concat2(_Text a, _Text b):
    cdef str made = PyUnicode_New(a.length + b.length, 127)
    _put(_put(<char *>PyUnicode_DATA(made), a), b)
    return made


cdef inline str _concat3(_Text a, _Text b, _Text c):
    cdef str made = PyUnicode_New(a.length + b.length + c.length, 127)
    _put(_put(_put(<char *>PyUnicode_DATA(made), a), b), c)
    return made


cdef inline str _concat5(_Text a, _Text b, _Text c, _Text d, _Text e):
    cdef str made = PyUnicode_New(a.length + b.length + c.length + d.length + e.length, 127)
    _put(_put(_put(_put(_put(<char *>PyUnicode_DATA(made), a), b), c), d), e)
    return made


cdef inline void _set(list items, Py_ssize_t index, object item) noexcept:
    """Fill a slot of a list just made by PyList_New (which steals a reference)."""
    Py_INCREF(item)
    PyList_SET_ITEM(items, index, item)


cdef inline bint _is_id_word(uint64_t word) noexcept nogil:
    """Whether 8 bytes are all within 0x21..0x7A, eight at a time: a byte below 0x21 borrows
    into its top bit when 0x21 is subtracted, one above 0x7A carries into it when 0x05 is added
    (bytes of 0x80 and more have it already). A word with '~' (0x7E) fails here too and is
    looked at byte by byte."""
    cdef uint64_t high = 0x8080808080808080ULL
    return ((word - 0x2121212121212121ULL) | (word + 0x0505050505050505ULL) | word) & high == 0


cdef inline bint _is_id(_Text text) noexcept nogil:
    """check_id would pass (an id is ASCII, so bytes and characters count alike)."""
    cdef Py_ssize_t index = 0, byte_index
    cdef uint64_t word
    if not 0 < text.length <= _ID_LENGTH_MAX:
        return False
    while index < text.length:
        if index + 8 <= text.length:
            memcpy(&word, text.data + index, 8)
            if _is_id_word(word):
                index += 8
                continue
        for byte_index in range(index, min(index + 8, text.length)):
            if not _is_id_character(<unsigned char>text.data[byte_index]):
                return False
        index += 8
    return True


cdef inline int _mcc_code_of_text(_Text mcc) noexcept nogil:
    """The value of four ASCII digits, or -1."""
    cdef int index, code = 0
    cdef char character
    if mcc.length != 4:
        return -1
    for index in range(4):
        character = mcc.data[index]
        if not c'0' <= character <= c'9':
            return -1
        code = code * 10 + (character - c'0')
    return code


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
    cdef readonly tuple amount_bound_args
    cdef readonly bint partial_approval
    cdef readonly str capture_tolerance_bps
    cdef readonly str incremental_flag
    cdef readonly tuple installment_months
    cdef readonly str installment_fee_bps
    cdef readonly str installment_terms
    # The same rules indexed by channel number, MCC value and months, so a request hashes nothing.
    cdef unsigned int _channel_bits
    cdef tuple _nodes_by_number  # the channel's nodes, by channel number
    cdef unsigned long long _month_bits  # bit m: the product offers a term of m months
    cdef bint _currency_known  # the product's currency is one of CURRENCIES
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
        self.amount_bound_args = (str(product.amount_min_minor), str(product.amount_max_minor))
        self.partial_approval = bool(product.partial_approval)
        self.capture_tolerance_bps = str(product.capture_tolerance_bps)
        self.incremental_flag = "1" if product.incremental else "0"
        self.installment_months = tuple(product.installments.months)
        self.installment_fee_bps = str(product.installments.monthly_fee_bps)
        self.installment_terms = _plan_py._terms_text(product.id, self.installment_months)
        self._currency_known = type(self.currency) is str and self.currency in _CURRENCIES
        # A term outside 1..63 (the catalog allows 2..60) is never offered on the fast paths;
        # a request for it goes to the Python twin, which looks in the tuple.
        self._month_bits = 0
        for months in self.installment_months:
            if type(months) is int and 0 < months < 64:
                self._month_bits |= (<unsigned long long>1) << <int>months
        self._channel_bits = 0
        nodes = [()]
        for number in range(1, _CHANNEL_COUNT):
            channel = _CHANNEL_NAMES[number]
            if channel in self.channels:
                self._channel_bits |= (<unsigned int>1) << number
            nodes.append(tuple(self.nodes_by_channel[channel]))
        self._nodes_by_number = tuple(nodes)
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

    cdef inline bint _offers(self, long long months) noexcept:
        """installment_months passes: 0 (pay in full) or a term the product offers."""
        return months == 0 or (0 < months < 64 and (self._month_bits >> months) & 1)


def compile_products(products):
    return {product_id: ProductRules(product) for product_id, product in products.items()}


cdef int _check_id(field, str value) except -1:
    cdef Py_ssize_t index, length
    cdef const unsigned char *data
    PyUnicode_READY(value)
    length = PyUnicode_GET_LENGTH(value)
    if length == 0:
        raise InvalidArgument(field, _REQUIRED)
    if length > _ID_LENGTH_MAX:
        raise InvalidArgument(field, _ID_TOO_LONG)
    if not PyUnicode_IS_ASCII(value):  # some character is beyond ASCII, so not an id's
        raise InvalidArgument(field, _ID_BAD_CHARACTER)
    data = <const unsigned char *>PyUnicode_DATA(value)
    for index in range(length):
        if not _is_id_character(data[index]):
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


cdef inline str _digest_of(const char *data, Py_ssize_t length):
    cdef char hex[_DIGEST_HEX_LENGTH]
    cdef _Text text
    cg_blake2b_8_hex(<const unsigned char *>data, <size_t>length, hex)
    text.data = hex
    text.length = _DIGEST_HEX_LENGTH
    return _str(text)


cdef str _digest(str text):
    # Encoding raises for a lone surrogate as text.encode() does in the Python twin.
    cdef bytes encoded = PyUnicode_AsUTF8String(text)
    return _digest_of(PyBytes_AS_STRING(encoded), PyBytes_GET_SIZE(encoded))


def fingerprint(*parts):
    """A short digest of a request's payload, stored with its idempotency record."""
    return _digest("|".join(parts))


# plan_authorize


# An AuthorizeRequest's fields as plain C values; the texts point into the request's
# serialization or into its str fields, which outlive the plan's assembly.
cdef struct _Authorize:
    _Text idempotency_key
    _Text customer_id
    _Text product_id
    _Text merchant_id
    _Text mcc
    _Text currency
    long long channel
    long long amount_minor
    long long installment_months
    bint allow_partial


cdef inline char *_put_decimal(char *out, long long value) noexcept nogil:
    """Writes value (>= 0) in decimal, as str() does."""
    cdef char digits[_AMOUNT_DIGITS_MAX]
    cdef int count = 0
    while True:
        digits[count] = <char>(c'0' + value % 10)
        count += 1
        value //= 10
        if value == 0:
            break
    while count:
        count -= 1
        out[0] = digits[count]
        out += 1
    return out


cdef tuple _assemble(ProductRules rules, const _Authorize *request, int mcc_code,
                     str product_id, str customer_id, str merchant_id, str mcc, str currency,
                     long long partition_count):
    """The reserve script's (keys, args) of a request that passed every check (see _plan_py)."""
    cdef long long partition
    cdef str base, channel, amount, months
    cdef _Text base_text, separator, partial_asked
    cdef char amount_digits[_AMOUNT_DIGITS_MAX]
    cdef char fingerprint_text[_FINGERPRINT_TEXT_MAX]
    cdef char *out
    cdef _Text amount_text
    cdef list keys_, args
    cdef tuple nodes
    cdef Py_ssize_t index, node_count

    partition = <long long>crc32(
        0, <const unsigned char *>request.customer_id.data, <unsigned int>request.customer_id.length
    ) % partition_count
    base = <str>_BASES[partition]
    base_text = _text(base)
    amount_text.data = amount_digits
    amount_text.length = _put_decimal(amount_digits, request.amount_minor) - amount_digits
    amount = _str(amount_text)
    months = <str>_MONTH_TEXTS[request.installment_months]
    channel = <str>_CHANNEL_NAMES[request.channel]
    separator = _text(_SCOPE_SEPARATOR)
    partial_asked = _text(_ONE if request.allow_partial else _ZERO)

    # fingerprint(product_id, channel, merchant_id, mcc, amount, currency, allow_partial as
    # asked, months): every part is ASCII and bounded, so the text fits the stack buffer.
    out = _put(fingerprint_text, request.product_id)
    out[0] = c'|'
    out = _put(out + 1, _text(channel))
    out[0] = c'|'
    out = _put(out + 1, request.merchant_id)
    out[0] = c'|'
    out = _put(out + 1, request.mcc)
    out[0] = c'|'
    out = _put(out + 1, amount_text)
    out[0] = c'|'
    out = _put(out + 1, request.currency)
    out[0] = c'|'
    out = _put(out + 1, partial_asked)
    out[0] = c'|'
    out = _put(out + 1, _text(months))

    keys_ = PyList_New(5)
    _set(keys_, 0, _concat3(base_text, _text(_K_CUSTOMER), request.customer_id))
    _set(keys_, 1, _concat3(base_text, _text(_K_CUSTOMER_HOLDS), request.customer_id))
    _set(keys_, 2, _DUE_KEYS[partition])
    _set(keys_, 3, _OUTBOX_KEYS[partition])
    _set(keys_, 4, _concat5(base_text, _text(_K_IDEMPOTENCY_AUTHORIZE), request.customer_id,
                            separator, request.idempotency_key))

    nodes = <tuple>rules._nodes_by_number[request.channel]
    node_count = len(nodes)
    args = PyList_New(22 + node_count)
    _set(args, 0, base)
    _set(args, 1, customer_id)
    _set(args, 2, _digest_of(fingerprint_text, out - fingerprint_text))
    _set(args, 3, product_id)
    _set(args, 4, amount)
    _set(args, 5, rules.hold_ttl_ms)
    _set(args, 6, _REASON_TEXTS[rules._decline(
        (rules._channel_bits >> request.channel) & 1, mcc_code, request.amount_minor
    )])
    _set(args, 7, merchant_id)
    _set(args, 8, mcc)
    _set(args, 9, channel)
    _set(args, 10, currency)
    for index in range(4):
        _set(args, 11 + index, rules.velocity_args[index])
    _set(args, 15, rules.amount_bound_args[0])
    _set(args, 16, rules.amount_bound_args[1])
    _set(args, 17, _ONE if rules.partial_approval and request.allow_partial else _ZERO)
    _set(args, 18, rules.capture_tolerance_bps)
    _set(args, 19, rules.incremental_flag)
    _set(args, 20, months)
    _set(args, 21, rules.installment_fee_bps)
    for index in range(node_count):
        _set(args, 22 + index, nodes[index])
    return keys_, args


# The wire path reads AuthorizeRequest's serialization: these must be its fields, as
# (name, number, FieldDescriptor type: 9 string, 14 enum, 3 int64, 8 bool, 5 int32).
_WIRE_MESSAGE = "creditgate.v1.AuthorizeRequest"
_WIRE_FIELDS = [
    ("idempotency_key", 1, 9),
    ("customer_id", 2, 9),
    ("product_id", 3, 9),
    ("channel", 4, 14),
    ("merchant_id", 5, 9),
    ("mcc", 6, 9),
    ("amount_minor", 7, 3),
    ("currency", 8, 9),
    ("allow_partial", 9, 8),
    ("installment_months", 10, 5),
]
cdef object _wire_type = None  # the message class whose instances take the wire path
cdef object _wire_serialize = None  # its SerializeToString, unbound


def _wire_type_usable(message_type):
    """Whether instances of message_type are AuthorizeRequests this module can read from their
    serialization (and if so, remember the class)."""
    global _wire_type, _wire_serialize
    try:
        descriptor = message_type.DESCRIPTOR
        full_name = descriptor.full_name
        fields = [(field.name, field.number, field.type) for field in descriptor.fields]
        serialize = message_type.SerializeToString
    except Exception:  # not a protobuf message class
        return False
    if full_name != _WIRE_MESSAGE or fields != _WIRE_FIELDS or not callable(serialize):
        return False
    _wire_type, _wire_serialize = message_type, serialize
    return True


cdef inline bint _read_varint(const unsigned char **position, const unsigned char *end,
                              uint64_t *value) noexcept nogil:
    cdef const unsigned char *p = position[0]
    cdef uint64_t result = 0
    cdef int shift = 0
    cdef unsigned char byte
    while p < end and shift < 64:
        byte = p[0]
        p += 1
        result |= (<uint64_t>(byte & 0x7F)) << shift
        if not byte & 0x80:
            position[0] = p
            value[0] = result
            return True
        shift += 7
    return False


cdef bint _parse_authorize(bytes wire, _Authorize *request) noexcept:
    """Reads a serialized AuthorizeRequest into *request; False on anything unexpected (an
    unknown or repeated field, a wrong wire type, a truncation): the caller then reads the
    attributes instead. Absent fields keep proto3's defaults ("" and 0)."""
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(wire)
    cdef const unsigned char *end = p + PyBytes_GET_SIZE(wire)
    cdef unsigned char tag
    cdef unsigned int field, wire_type, seen = 0
    cdef uint64_t value
    cdef _Text *text
    cdef _Text empty
    empty.data = <const char *>p
    empty.length = 0
    request.idempotency_key = request.customer_id = request.product_id = empty
    request.merchant_id = request.mcc = request.currency = empty
    request.channel = request.amount_minor = request.installment_months = 0
    request.allow_partial = False
    while p < end:
        tag = p[0]  # fields 1..15 have one-byte tags
        p += 1
        field = tag >> 3
        wire_type = tag & 7
        if tag & 0x80 or seen & (1u << field):
            return False
        seen |= 1u << field
        if wire_type == 2:
            if field == 1:
                text = &request.idempotency_key
            elif field == 2:
                text = &request.customer_id
            elif field == 3:
                text = &request.product_id
            elif field == 5:
                text = &request.merchant_id
            elif field == 6:
                text = &request.mcc
            elif field == 8:
                text = &request.currency
            else:
                return False
            if not _read_varint(&p, end, &value) or value > <uint64_t>(end - p):
                return False
            text.data = <const char *>p
            text.length = <Py_ssize_t>value
            p += value
        elif wire_type == 0:
            if not _read_varint(&p, end, &value):
                return False
            if field == 4:  # an enum is an int32 on the wire, sign-extended to 64 bits
                request.channel = <int32_t>value
            elif field == 7:
                request.amount_minor = <int64_t>value
            elif field == 9:
                request.allow_partial = value != 0
            elif field == 10:
                request.installment_months = <int32_t>value
            else:
                return False
        else:
            return False
    return True


cdef PyObject *_find_product(dict rules_by_product, _Text product_id,
                             PyObject **found_key) noexcept:
    """The rules of the key equal to product_id (borrowed, the key in *found_key), or NULL.
    With only exact str keys, byte equality is str equality (ids are ASCII), so this finds what
    dict.get would; a dict with a key of another type answers NULL, and the attribute path asks
    the dict itself."""
    cdef Py_ssize_t position = 0
    cdef PyObject *key
    cdef PyObject *value
    while PyDict_Next(rules_by_product, &position, &key, &value):
        if type(<object>key) is not str:
            return NULL
        if (PyUnicode_GET_LENGTH(<object>key) == product_id.length
                and PyUnicode_IS_ASCII(<object>key)
                and memcmp(PyUnicode_DATA(<object>key), product_id.data, product_id.length) == 0):
            found_key[0] = key
            return value
    return NULL


cdef object _plan_wire(bytes wire, dict rules_by_product, long long partition_count):
    """The plan of a serialized request that passes every check, or None (nothing raised)."""
    cdef _Authorize request
    cdef int mcc_code
    cdef ProductRules rules
    cdef PyObject *found_key = NULL
    cdef PyObject *found_rules
    if not _parse_authorize(wire, &request):
        return None
    mcc_code = _mcc_code_of_text(request.mcc)
    if not (
        _is_id(request.idempotency_key) and _is_id(request.customer_id)
        and _is_id(request.product_id) and 0 < request.channel < _CHANNEL_COUNT
        and _is_id(request.merchant_id) and mcc_code >= 0
        and 0 < request.amount_minor <= _AMOUNT_MINOR_MAX
    ):
        return None
    if len(rules_by_product) > _PRODUCT_SCAN_MAX:
        product_id = _str(request.product_id)
        rules_object = rules_by_product.get(product_id)
    else:
        found_rules = _find_product(rules_by_product, request.product_id, &found_key)
        if found_rules == NULL:
            return None
        product_id = <object>found_key  # strong references from here on
        rules_object = <object>found_rules
    if type(rules_object) is not ProductRules:
        return None
    rules = <ProductRules>rules_object
    if not (
        rules._currency_known and request.currency.length == len(rules.currency)
        and memcmp(request.currency.data, PyUnicode_DATA(rules.currency),
                   request.currency.length) == 0
        and rules._offers(request.installment_months)
    ):
        return None
    mcc = _MCC_TEXTS[mcc_code]
    if mcc is None:
        mcc = _MCC_TEXTS[mcc_code] = _str(request.mcc)
    return _assemble(
        rules, &request, mcc_code, product_id, _str(request.customer_id),
        _str(request.merchant_id), <str>mcc, rules.currency, partition_count,
    )


cdef object _plan_attributes(request, dict rules_by_product, long long partition_count):
    """Reads the request's attributes and checks them in the proto's order, raising the
    specification's InvalidArgument; odd types go to the Python twin."""
    cdef str idempotency_key, customer_id, product_id, merchant_id, mcc, currency
    cdef ProductRules rules
    cdef _Authorize fields
    cdef long long amount_minor
    cdef long channel_number, months
    cdef int mcc_code, overflow = 0
    idempotency_key_object = request.idempotency_key
    customer_id_object = request.customer_id
    product_id_object = request.product_id
    merchant_id_object = request.merchant_id
    mcc_object = request.mcc
    amount_minor_object = request.amount_minor
    currency_object = request.currency
    allow_partial_object = request.allow_partial
    installment_months_object = request.installment_months
    if not (
        type(idempotency_key_object) is str and type(customer_id_object) is str
        and type(product_id_object) is str and type(merchant_id_object) is str
        and type(mcc_object) is str and type(amount_minor_object) is int
        and type(currency_object) is str and type(allow_partial_object) is bool
        and type(installment_months_object) is int
    ):
        return _plan_py.plan_authorize(request, rules_by_product, partition_count)
    idempotency_key = <str>idempotency_key_object
    customer_id = <str>customer_id_object
    product_id = <str>product_id_object
    merchant_id = <str>merchant_id_object
    mcc = <str>mcc_object
    currency = <str>currency_object

    _check_id("idempotency_key", idempotency_key)
    _check_id("customer_id", customer_id)
    _check_id("product_id", product_id)
    rules_object = rules_by_product.get(product_id)
    if rules_object is None:
        raise InvalidArgument("product_id", f"unknown product {product_id!r}")
    channel_object = request.channel
    if not isinstance(rules_object, ProductRules) or type(channel_object) is not int:
        return _plan_py.plan_authorize(request, rules_by_product, partition_count)
    rules = <ProductRules>rules_object
    channel_number = PyLong_AsLongAndOverflow(channel_object, &overflow)
    if channel_number == 0 and not overflow:
        raise InvalidArgument("channel", _REQUIRED)
    if overflow or not 0 < channel_number < _CHANNEL_COUNT:
        raise InvalidArgument("channel", f"unknown channel {channel_object}")
    _check_id("merchant_id", merchant_id)
    mcc_code = _mcc_code(mcc)
    if mcc_code < 0:
        raise InvalidArgument("mcc", _MCC_NOT_FOUR_DIGITS)
    if not _exact_amount(amount_minor_object, &amount_minor):
        # An int out of bounds: the Python twin raises, with the same message.
        _plan_py.check_amount("amount_minor", amount_minor_object)
        return _plan_py.plan_authorize(request, rules_by_product, partition_count)
    if not currency:
        raise InvalidArgument("currency", _REQUIRED)
    if currency not in _CURRENCIES:
        raise InvalidArgument("currency", _CURRENCY_UNKNOWN)
    if currency != rules.currency:
        raise InvalidArgument("currency", f"product {product_id!r} is in {rules.currency}")
    months = PyLong_AsLongAndOverflow(installment_months_object, &overflow)
    if overflow or not rules._offers(months):
        if overflow or months not in rules.installment_months:
            raise InvalidArgument("installment_months", rules.installment_terms)
        # A term the C set cannot hold (a product made outside the catalog's bounds).
        return _plan_py.plan_authorize(request, rules_by_product, partition_count)

    # Everything is checked, and every text is ASCII (ids, four digits, a known currency).
    fields.idempotency_key = _text(idempotency_key)
    fields.customer_id = _text(customer_id)
    fields.product_id = _text(product_id)
    fields.merchant_id = _text(merchant_id)
    fields.mcc = _text(mcc)
    fields.currency = _text(currency)
    fields.channel = channel_number
    fields.amount_minor = amount_minor
    fields.installment_months = months
    fields.allow_partial = allow_partial_object is True
    return _assemble(
        rules, &fields, mcc_code, product_id, customer_id, merchant_id, mcc, currency,
        partition_count,
    )


def plan_authorize(request, rules_by_product, partitions):
    """Validate an AuthorizeRequest and build the reserve script's (keys, args).

    Raises InvalidArgument for bad input, checking fields in the order of the proto. An
    approval's hold id is not planned: reserve.lua derives it from the idempotency record's
    key (limits/keys.derived_hold_id).
    """
    cdef long long partition_count
    cdef int overflow = 0
    if type(rules_by_product) is dict and type(partitions) is int:
        partition_count = PyLong_AsLongLongAndOverflow(partitions, &overflow)
        if not overflow and 0 < partition_count <= _PARTITIONS_MAX:
            message_type = type(request)
            if message_type is _wire_type or _wire_type_usable(message_type):
                wire = _wire_serialize(request)
                if type(wire) is bytes:
                    plan = _plan_wire(<bytes>wire, <dict>rules_by_product, partition_count)
                    if plan is not None:
                        return plan
            return _plan_attributes(request, <dict>rules_by_product, partition_count)
    return _plan_py.plan_authorize(request, rules_by_product, partitions)


# plan_capture and plan_void


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
