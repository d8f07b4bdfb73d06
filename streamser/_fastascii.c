/* Number runs of Torch7's ascii format in C: an accelerator for streamser.codecs.ascii.

Torch7 prints a storage as one line of numbers: integers with %d / %ld, Float and Half elements
with %.9g, Double elements with %.17g, a NaN as "nan" or "-nan" by its sign bit. Formatting and
parsing a million such numbers through Python objects costs far more than the disk, so the
codec hands whole runs to the two functions here.

format_numbers(array) -> bytes
    The elements of a 1-d contiguous native-endian array, separated by single spaces, each
    exactly as Python's "%d" / "%.9g" / "%.17g" prints it (and so as C's printf does). Doubles
    are rounded to 9 or 17 significant digits with 128-bit powers of ten (_pow10.h); the rare
    value whose rounding that cannot decide (a tie, or within 2^-64 of one) is printed by
    PyOS_double_to_string, the function behind Python's own "%" operator.

parse_numbers(buffer, pos, out) -> int
    Parse out.size white-space separated numbers from buffer[pos:] into out, returning the
    position after the last one; or -1 when anything is unusual (a token that is not a plain
    decimal number, an out-of-range integer, the input ending early). The Python decoder then
    reads the run itself, and it alone defines the errors and their offsets. Decimal tokens
    become doubles exactly as Python's float() makes them: Clinger's exact fast path, then the
    Eisel-Lemire algorithm, then (for the few inputs neither decides) PyOS_string_to_double,
    the function behind float(). Floats and halves are narrowed from that double, as the
    Python decoder narrows them (a NaN half becomes 0x7fff, Torch7's NaN).
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <numpy/arrayobject.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "_pow10.h"

#if !defined(__SIZEOF_INT128__)
#error "streamser._fastascii needs a compiler with 128-bit integers"
#endif
typedef unsigned __int128 u128;

static const uint64_t POW10_U64[20] = {
    1ull, 10ull, 100ull, 1000ull, 10000ull, 100000ull, 1000000ull, 10000000ull, 100000000ull,
    1000000000ull, 10000000000ull, 100000000000ull, 1000000000000ull, 10000000000000ull,
    100000000000000ull, 1000000000000000ull, 10000000000000000ull, 100000000000000000ull,
    1000000000000000000ull, 10000000000000000000ull};

static const double EXACT_POW10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                       1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                       1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

static const char DIGIT_PAIRS[201] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

/* The element types of the runs, by numpy type number. */
enum kind { K_I16, K_I32, K_I64, K_F16, K_F32, K_F64, K_NONE };

static enum kind kind_of(PyArrayObject *array) {
    PyArray_Descr *descr = PyArray_DESCR(array);
    if (!PyArray_ISNBO(descr->byteorder)) return K_NONE;
    int size = (int)PyArray_ITEMSIZE(array);
    if (descr->kind == 'i') return size == 2 ? K_I16 : size == 4 ? K_I32 : size == 8 ? K_I64 : K_NONE;
    if (descr->kind == 'f') return size == 2 ? K_F16 : size == 4 ? K_F32 : size == 8 ? K_F64 : K_NONE;
    return K_NONE;
}

/* --- halves ---------------------------------------------------------------------------------- */

static double half_to_double(uint16_t h) {
    int exponent = (h >> 10) & 0x1f;
    double magnitude;
    if (exponent == 0) magnitude = ldexp((double)(h & 0x3ff), -24);
    else if (exponent == 31) magnitude = (h & 0x3ff) ? NAN : INFINITY;
    else magnitude = ldexp((double)((h & 0x3ff) | 0x400), exponent - 25);
    return (h & 0x8000) ? -magnitude : magnitude;
}

/* Round to the nearest half, ties to even, as numpy's float64 -> float16 cast does; every NaN
   becomes 0x7fff as in the Python decoder. */
static uint16_t double_to_half(double value) {
    if (isnan(value)) return 0x7fff;
    uint16_t sign = signbit(value) ? 0x8000 : 0;
    double magnitude = fabs(value);
    if (magnitude >= 65520.0) return sign | 0x7c00; /* halfway above 65504 rounds to even: inf */
    if (magnitude < 0x1p-14) return sign | (uint16_t)nearbyint(magnitude * 0x1p24);
    int exponent;
    frexp(magnitude, &exponent); /* magnitude in [2^(exponent-1), 2^exponent) */
    double scaled = nearbyint(ldexp(magnitude, 11 - exponent)); /* in [1024, 2048] */
    int biased = exponent - 1 + 15;
    if (scaled >= 2048.0) {
        scaled = 1024.0;
        biased += 1;
    }
    return sign | (uint16_t)(biased << 10) | (uint16_t)((uint64_t)scaled - 1024);
}

/* --- formatting ---------------------------------------------------------------------------- */

/* |value| (finite, non-zero) rounded to `precision` significant digits: the digits as an
   integer of exactly `precision` digits and the decimal exponent of the first one. Returns 0
   when 128 bits of the power of ten cannot decide the rounding. */
static int round_to_digits(double value, int precision, uint64_t *digits, int *exponent10) {
    uint64_t bits;
    memcpy(&bits, &value, sizeof bits);
    int biased = (int)((bits >> 52) & 0x7ff);
    uint64_t mantissa = bits & ((1ull << 52) - 1);
    int exponent2 = biased ? biased - 1075 : -1074;
    if (biased) mantissa |= 1ull << 52;
    int shift = __builtin_clzll(mantissa);
    mantissa <<= shift; /* value = mantissa * 2^exponent2, mantissa in [2^63, 2^64) */
    exponent2 -= shift;
    int x = ((exponent2 + 63) * 78913) >> 18; /* floor(log10(2^floor(log2 value))): X or X - 1 */
    for (int attempt = 0; attempt < 2; attempt++, x++) {
        int k = precision - 1 - x; /* the scale that leaves `precision` digits before the point */
        if (k < POW10_MIN || k > POW10_MAX) return 0;
        uint64_t high = POW10[k - POW10_MIN].hi, low = POW10[k - POW10_MIN].lo;
        int shift_right = 127 - exponent2 - POW10[k - POW10_MIN].exp;
        if (shift_right <= 128 || shift_right >= 192) return 0;
        u128 a = (u128)mantissa * high, b = (u128)mantissa * low;
        u128 middle = (b >> 64) + (uint64_t)a;
        uint64_t w0 = (uint64_t)b, w1 = (uint64_t)middle;
        uint64_t w2 = (uint64_t)(a >> 64) + (uint64_t)(middle >> 64);
        int r = shift_right - 128; /* the scaled value is w2:w1:w0 / 2^(128 + r) */
        uint64_t n = w2 >> r;
        if (n >= POW10_U64[precision]) continue; /* the estimate of X was one low */
        uint64_t fraction = w2 & ((1ull << r) - 1), half = 1ull << (r - 1);
        int exact = k >= 0 && k <= 55; /* the table's mantissa is 10^k itself */
        int up;
        if (fraction > half) up = 1;
        else if (fraction < half) {
            /* a truncated power of ten errs low by less than 2^64 units of w0 */
            if (!exact && fraction == half - 1 && w1 == UINT64_MAX) return 0;
            up = 0;
        } else if (w1 | w0) up = 1;
        else up = exact ? (int)(n & 1) : 1; /* an exact tie goes to the even neighbour */
        n += (uint64_t)up;
        if (n == POW10_U64[precision]) {
            n = POW10_U64[precision - 1];
            x++;
        }
        *digits = n;
        *exponent10 = x;
        return 1;
    }
    return 0;
}

static char *write_digits(char *out, uint64_t n, int count) {
    char *p = out + count;
    while (count >= 2) {
        unsigned pair = (unsigned)(n % 100);
        n /= 100;
        p -= 2;
        memcpy(p, DIGIT_PAIRS + 2 * pair, 2);
        count -= 2;
    }
    if (count) *--p = (char)('0' + n % 10);
    return out;
}

/* C's %g layout for digits d1 d2 ... (exactly `precision` of them) times 10^x. */
static char *emit_g(char *p, uint64_t n, int x, int precision) {
    char digits[20];
    write_digits(digits, n, precision);
    int kept = precision;
    while (kept > 1 && digits[kept - 1] == '0') kept--;
    if (x < -4 || x >= precision) {
        *p++ = digits[0];
        if (kept > 1) {
            *p++ = '.';
            memcpy(p, digits + 1, (size_t)kept - 1);
            p += kept - 1;
        }
        *p++ = 'e';
        *p++ = x < 0 ? '-' : '+';
        int magnitude = x < 0 ? -x : x;
        if (magnitude >= 100) {
            *p++ = (char)('0' + magnitude / 100);
            magnitude %= 100;
        }
        memcpy(p, DIGIT_PAIRS + 2 * magnitude, 2);
        return p + 2;
    }
    if (x >= 0) {
        memcpy(p, digits, (size_t)x + 1);
        p += x + 1;
        if (kept > x + 1) {
            *p++ = '.';
            memcpy(p, digits + x + 1, (size_t)(kept - x - 1));
            p += kept - x - 1;
        }
        return p;
    }
    *p++ = '0';
    *p++ = '.';
    memset(p, '0', (size_t)(-x - 1));
    p += -x - 1;
    memcpy(p, digits, (size_t)kept);
    return p + kept;
}

/* One double as Python's "%.<precision>g" prints it, NaN as "nan" / "-nan" by sign. */
static char *format_double(char *p, double value, int precision) {
    if (signbit(value)) *p++ = '-';
    if (isnan(value) || isinf(value)) {
        memcpy(p, isnan(value) ? "nan" : "inf", 3);
        return p + 3;
    }
    if (value == 0.0) {
        *p = '0';
        return p + 1;
    }
    uint64_t digits;
    int x;
    if (round_to_digits(fabs(value), precision, &digits, &x)) return emit_g(p, digits, x, precision);
    char *text = PyOS_double_to_string(fabs(value), 'g', precision, 0, NULL);
    if (text == NULL) return NULL;
    size_t length = strlen(text);
    memcpy(p, text, length);
    PyMem_Free(text);
    return p + length;
}

static char *format_integer(char *p, int64_t value) {
    uint64_t magnitude = (uint64_t)value;
    if (value < 0) {
        *p++ = '-';
        magnitude = 0 - magnitude;
    }
    int count = 1;
    while (count < 20 && magnitude >= POW10_U64[count]) count++;
    write_digits(p, magnitude, count);
    return p + count;
}

#define MAX_NUMBER_TEXT 26 /* "-2.2250738585072014e-308" and a space, with room to spare */

static PyObject *format_numbers(PyObject *module, PyObject *arg) {
    if (!PyArray_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "format_numbers expects a numpy array");
        return NULL;
    }
    PyArrayObject *array = (PyArrayObject *)arg;
    enum kind kind = kind_of(array);
    if (kind == K_NONE || PyArray_NDIM(array) != 1 || !PyArray_IS_C_CONTIGUOUS(array)) {
        PyErr_SetString(PyExc_TypeError,
                        "format_numbers expects a 1-d contiguous native int16/32/64 or "
                        "float16/32/64 array");
        return NULL;
    }
    Py_ssize_t count = PyArray_DIM(array, 0);
    if (count > PY_SSIZE_T_MAX / MAX_NUMBER_TEXT) return PyErr_NoMemory();
    PyObject *result = PyBytes_FromStringAndSize(NULL, count * MAX_NUMBER_TEXT);
    if (result == NULL) return NULL;
    char *start = PyBytes_AS_STRING(result), *p = start;
    const char *data = PyArray_BYTES(array);
    for (Py_ssize_t i = 0; i < count && p != NULL; i++) {
        if (i) *p++ = ' ';
        switch (kind) {
            case K_I16: p = format_integer(p, ((const int16_t *)data)[i]); break;
            case K_I32: p = format_integer(p, ((const int32_t *)data)[i]); break;
            case K_I64: p = format_integer(p, ((const int64_t *)data)[i]); break;
            case K_F16: p = format_double(p, half_to_double(((const uint16_t *)data)[i]), 9); break;
            case K_F32: p = format_double(p, (double)((const float *)data)[i], 9); break;
            case K_F64: p = format_double(p, ((const double *)data)[i], 17); break;
            case K_NONE: break;
        }
    }
    if (p == NULL || _PyBytes_Resize(&result, p - start) < 0) {
        Py_XDECREF(result);
        return NULL;
    }
    return result;
}

/* --- parsing ------------------------------------------------------------------------------- */

static inline int is_space(char c) {
    return c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* w * 10^q by Eisel-Lemire (w > 0); 0 when it cannot decide or the result is not normal. */
static int eisel_lemire(uint64_t w, int q, double *out) {
    if (q < POW10_MIN || q > POW10_MAX) return 0;
    int shift = __builtin_clzll(w);
    w <<= shift;
    uint64_t high = POW10[q - POW10_MIN].hi, low = POW10[q - POW10_MIN].lo;
    u128 product = (u128)w * high;
    uint64_t upper = (uint64_t)(product >> 64), lower = (uint64_t)product;
    if ((upper & 0x1ff) == 0x1ff && lower + w < lower) {
        /* the bits kept might change by what the low word of the power adds: include it */
        u128 more = (u128)w * low;
        uint64_t more_upper = (uint64_t)(more >> 64);
        uint64_t merged = lower + more_upper;
        if (merged < lower) upper++;
        if ((upper & 0x1ff) == 0x1ff && merged == UINT64_MAX && (uint64_t)more + w < w) return 0;
        lower = merged;
    }
    /* value ~ upper * 2^(exp + 1 - shift), upper in [2^62, 2^64): keep 54 bits */
    int top = (int)(upper >> 63);
    uint64_t mantissa = upper >> (top + 9);
    int exponent = POW10[q - POW10_MIN].exp + 1 - shift + top + 9;
    if (lower == 0 && (upper & 0x1ff) == 0 && (mantissa & 3) == 1) return 0; /* maybe a tie */
    mantissa = (mantissa + (mantissa & 1)) >> 1; /* 54 -> 53 bits */
    exponent += 1;
    if (mantissa >> 53) {
        mantissa >>= 1;
        exponent += 1;
    }
    int biased = exponent + 52 + 1023; /* value = mantissa * 2^exponent, mantissa in [2^52, 2^53) */
    if (biased < 1 || biased > 2046) return 0;
    uint64_t bits = ((uint64_t)biased << 52) | (mantissa & ((1ull << 52) - 1));
    memcpy(out, &bits, sizeof bits);
    return 1;
}

#define MAX_TOKEN 400 /* longer decimal tokens go to the Python decoder */

/* The token [start, end) by the function behind float(); 0 if it does not take all of it. */
static int parse_slowly(const char *start, const char *end, double *out) {
    char text[MAX_TOKEN + 1];
    size_t length = (size_t)(end - start);
    if (length > MAX_TOKEN) return 0;
    memcpy(text, start, length);
    text[length] = '\0';
    char *stop = NULL;
    double value = PyOS_string_to_double(text, &stop, NULL);
    if (value == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    if (stop != text + length) return 0;
    *out = value;
    return 1;
}

/* A decimal number, "nan" or "inf" with an optional sign, ending at white space or `end`.
   Returns the end of the token, or NULL for anything else. */
static const char *parse_double(const char *p, const char *end, double *out) {
    const char *start = p;
    int negative = 0;
    if (*p == '-' || *p == '+') negative = *p++ == '-';
    if (p + 3 <= end && (p[0] == 'n' || p[0] == 'i')) {
        double special;
        if (memcmp(p, "nan", 3) == 0) special = NAN;
        else if (memcmp(p, "inf", 3) == 0) special = INFINITY;
        else return NULL;
        p += 3;
        if (p < end && !is_space(*p)) return NULL;
        *out = negative ? -special : special;
        if (isnan(special)) *out = copysign(NAN, negative ? -1.0 : 1.0);
        return p;
    }
    /* The value is w * 10^scale, w holding the first 19 significant digits; `dropped` says
       whether a non-zero digit came after them (then only the exact slow path will do). */
    uint64_t w = 0;
    int significant = 0, dropped = 0, digits = 0, scale = 0, fraction = 0;
    for (; p < end; p++) {
        if (*p == '.' && !fraction) {
            fraction = 1;
            continue;
        }
        if (*p < '0' || *p > '9') break;
        digits++;
        if (w == 0 && *p == '0') {
            scale -= fraction; /* a leading zero: only its place counts */
        } else if (significant < 19) {
            w = w * 10 + (uint64_t)(*p - '0');
            significant++;
            scale -= fraction;
        } else {
            dropped |= *p != '0';
            scale += !fraction;
        }
    }
    if (!digits) return NULL;
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        int exponent_negative = 0, exponent = 0, exponent_digits = 0;
        if (p < end && (*p == '-' || *p == '+')) exponent_negative = *p++ == '-';
        while (p < end && *p >= '0' && *p <= '9') {
            if (exponent < 100000) exponent = exponent * 10 + (*p - '0');
            exponent_digits++;
            p++;
        }
        if (!exponent_digits) return NULL;
        scale += exponent_negative ? -exponent : exponent;
    }
    if (p < end && !is_space(*p)) return NULL;
    double value;
    if (w == 0) value = 0.0;
    else if (!dropped && w <= (1ull << 53) && scale >= -22 && scale <= 22) {
        value = (double)w; /* both exact: one correctly rounded operation */
        value = scale < 0 ? value / EXACT_POW10[-scale] : value * EXACT_POW10[scale];
    } else if (dropped || !eisel_lemire(w, scale, &value)) {
        if (!parse_slowly(start, p, out)) return NULL;
        return p;
    }
    *out = negative ? -value : value;
    return p;
}

/* An integer with an optional sign, within int64, ending at white space or `end`. */
static const char *parse_integer(const char *p, const char *end, int64_t *out) {
    int negative = 0;
    if (*p == '-' || *p == '+') negative = *p++ == '-';
    const char *first = p;
    uint64_t magnitude = 0;
    while (p < end && *p >= '0' && *p <= '9') {
        unsigned digit = (unsigned)(*p++ - '0');
        if (magnitude > (UINT64_MAX - digit) / 10) return NULL;
        magnitude = magnitude * 10 + digit;
    }
    if (p == first || (p < end && !is_space(*p))) return NULL;
    if (magnitude > (negative ? (1ull << 63) : (1ull << 63) - 1)) return NULL;
    *out = negative ? (int64_t)(0 - magnitude) : (int64_t)magnitude;
    return p;
}

static int store(enum kind kind, char *data, Py_ssize_t i, const char **p, const char *end) {
    int64_t integer;
    double real;
    switch (kind) {
        case K_I16:
            if (!(*p = parse_integer(*p, end, &integer)) || integer != (int16_t)integer) return 0;
            ((int16_t *)data)[i] = (int16_t)integer;
            return 1;
        case K_I32:
            if (!(*p = parse_integer(*p, end, &integer)) || integer != (int32_t)integer) return 0;
            ((int32_t *)data)[i] = (int32_t)integer;
            return 1;
        case K_I64:
            if (!(*p = parse_integer(*p, end, &integer))) return 0;
            ((int64_t *)data)[i] = integer;
            return 1;
        case K_F16:
            if (!(*p = parse_double(*p, end, &real))) return 0;
            ((uint16_t *)data)[i] = double_to_half(real);
            return 1;
        case K_F32:
            if (!(*p = parse_double(*p, end, &real))) return 0;
            ((float *)data)[i] = (float)real; /* overflow to inf, as the Python decoder */
            return 1;
        case K_F64:
            if (!(*p = parse_double(*p, end, &real))) return 0;
            ((double *)data)[i] = real;
            return 1;
        default:
            return 0;
    }
}

static PyObject *parse_numbers(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyArray_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "parse_numbers(buffer, pos, out_array)");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred()) return NULL;
    PyArrayObject *out = (PyArrayObject *)args[2];
    enum kind kind = kind_of(out);
    if (kind == K_NONE || PyArray_NDIM(out) != 1 || !PyArray_IS_C_CONTIGUOUS(out) ||
        !PyArray_ISWRITEABLE(out)) {
        PyErr_SetString(PyExc_TypeError, "parse_numbers needs a writable 1-d native array");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) return NULL;
    Py_ssize_t result = -1;
    if (pos >= 0 && pos <= view.len) {
        const char *begin = view.buf, *end = begin + view.len, *p = begin + pos;
        char *data = PyArray_BYTES(out);
        Py_ssize_t count = PyArray_DIM(out, 0), i = 0;
        for (; i < count; i++) {
            while (p < end && is_space(*p)) p++;
            if (p == end || !store(kind, data, i, &p, end)) break;
        }
        if (i == count) result = p - begin;
    }
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(result);
}

static PyMethodDef methods[] = {
    {"format_numbers", format_numbers, METH_O,
     "format_numbers(array) -> bytes: the elements as Torch7's ascii mode prints them."},
    {"parse_numbers", (PyCFunction)(void (*)(void))parse_numbers, METH_FASTCALL,
     "parse_numbers(buffer, pos, out) -> int: the end of out.size numbers, or -1."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "streamser._fastascii",
    .m_doc = "Number runs of Torch7's ascii format in C (see streamser.codecs.ascii).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__fastascii(void) {
    import_array();
    return PyModule_Create(&module_def);
}
