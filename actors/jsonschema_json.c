/* JSON helpers of the schema validator: numbers, equality, hashing, dumps. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actors/jsonschema_int.h"

/* Deeper values than this compare unequal rather than recurse further. */
#define JS_EQ_MAX_DEPTH 4096

size_t js_utf8_len(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (((unsigned char)s[i] & 0xC0) != 0x80) {
            n++;
        }
    }
    return n;
}

bool js_is_integral(const json_t *v)
{
    if (json_is_integer(v)) {
        return true;
    }
    if (!json_is_real(v)) {
        return false;
    }
    double d = json_real_value(v);
    return isfinite(d) && floor(d) == d;
}

/* 2^63 as a double: reals at or past it are outside json_int_t. */
#define JS_TWO_63 9223372036854775808.0

static int cmp_int_real(json_int_t a, double b)
{
    if (b >= JS_TWO_63) {
        return -1;
    }
    if (b < -JS_TWO_63) {
        return 1;
    }
    double fl = floor(b);
    json_int_t bi = (json_int_t)fl;
    if (a < bi) {
        return -1;
    }
    if (a > bi) {
        return 1;
    }
    return b > fl ? -1 : 0;
}

int js_num_cmp(const json_t *a, const json_t *b)
{
    if (json_is_integer(a) && json_is_integer(b)) {
        json_int_t x = json_integer_value(a), y = json_integer_value(b);
        return (x > y) - (x < y);
    }
    if (json_is_integer(a)) {
        return cmp_int_real(json_integer_value(a), json_real_value(b));
    }
    if (json_is_integer(b)) {
        return -cmp_int_real(json_integer_value(b), json_real_value(a));
    }
    double x = json_real_value(a), y = json_real_value(b);
    return (x > y) - (x < y);
}

static bool equal_at(const json_t *a, const json_t *b, int depth)
{
    if (depth > JS_EQ_MAX_DEPTH) {
        return false;
    }
    if (json_is_number(a) && json_is_number(b)) {
        return js_num_cmp(a, b) == 0;
    }
    if (json_typeof(a) != json_typeof(b)) {
        return false;
    }
    switch (json_typeof(a)) {
    case JSON_STRING:
        return json_string_length(a) == json_string_length(b) &&
               memcmp(json_string_value(a), json_string_value(b), json_string_length(a)) == 0;
    case JSON_ARRAY: {
        size_t n = json_array_size(a);
        if (n != json_array_size(b)) {
            return false;
        }
        for (size_t i = 0; i < n; i++) {
            if (!equal_at(json_array_get(a, i), json_array_get(b, i), depth + 1)) {
                return false;
            }
        }
        return true;
    }
    case JSON_OBJECT: {
        if (json_object_size(a) != json_object_size(b)) {
            return false;
        }
        for (void *it = json_object_iter((json_t *)a); it; it = json_object_iter_next((json_t *)a, it)) {
            const json_t *other = json_object_getn(b, json_object_iter_key(it), json_object_iter_key_len(it));
            if (!other || !equal_at(json_object_iter_value(it), other, depth + 1)) {
                return false;
            }
        }
        return true;
    }
    default: /* true, false, null: same type is equal */
        return true;
    }
}

bool js_equal(const json_t *a, const json_t *b)
{
    return equal_at(a, b, 0);
}

static uint64_t mix(uint64_t h, uint64_t x)
{
    h ^= x + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    h *= 0xff51afd7ed558ccdull;
    return h ^ (h >> 33);
}

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    }
    return h;
}

static uint64_t hash_at(const json_t *v, int depth)
{
    if (depth > JS_EQ_MAX_DEPTH) {
        return 0;
    }
    switch (json_typeof(v)) {
    case JSON_INTEGER:
        return mix(1, (uint64_t)json_integer_value(v));
    case JSON_REAL: {
        double d = json_real_value(v);
        if (js_is_integral(v) && d < JS_TWO_63 && d >= -JS_TWO_63) {
            return mix(1, (uint64_t)(json_int_t)d);
        }
        uint64_t bits;
        memcpy(&bits, &d, sizeof bits);
        return mix(2, bits);
    }
    case JSON_STRING:
        return mix(3, hash_bytes(json_string_value(v), json_string_length(v)));
    case JSON_ARRAY: {
        uint64_t h = 4;
        for (size_t i = 0; i < json_array_size(v); i++) {
            h = mix(h, hash_at(json_array_get(v, i), depth + 1));
        }
        return h;
    }
    case JSON_OBJECT: {
        uint64_t sum = 0; /* order-independent */
        for (void *it = json_object_iter((json_t *)v); it; it = json_object_iter_next((json_t *)v, it)) {
            uint64_t kh = hash_bytes(json_object_iter_key(it), json_object_iter_key_len(it));
            sum += mix(kh, hash_at(json_object_iter_value(it), depth + 1));
        }
        return mix(5, sum);
    }
    case JSON_TRUE:
        return 6;
    case JSON_FALSE:
        return 7;
    default:
        return 8;
    }
}

uint64_t js_hash(const json_t *v)
{
    return hash_at(v, 0);
}

struct dump_buf {
    char *buf;
    size_t cap, len;
    bool full;
};

static int dump_cb(const char *data, size_t size, void *ud)
{
    struct dump_buf *d = ud;
    size_t room = d->cap - 1 - d->len;
    if (size > room) {
        memcpy(d->buf + d->len, data, room);
        d->len += room;
        d->full = true;
        return -1; /* stop: we have what fits */
    }
    memcpy(d->buf + d->len, data, size);
    d->len += size;
    return 0;
}

void js_dump_short(const json_t *v, char *buf, size_t cap)
{
    if (cap == 0) {
        return;
    }
    if (json_is_number(v)) {
        js_num_str(v, buf, cap);
        return;
    }
    struct dump_buf d = {buf, cap, 0, false};
    if (cap < 8) {
        buf[0] = '\0';
        return;
    }
    json_dump_callback(v, dump_cb, &d, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(15));
    if (d.full) {
        /* cut at a UTF-8 boundary and mark the cut */
        size_t n = d.len > 3 ? d.len - 3 : 0;
        while (n > 0 && ((unsigned char)buf[n] & 0xC0) == 0x80) {
            n--;
        }
        memcpy(buf + n, "...", 3);
        d.len = n + 3;
    }
    buf[d.len] = '\0';
}

void js_num_str(const json_t *v, char *buf, size_t cap)
{
    if (json_is_integer(v)) {
        snprintf(buf, cap, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return;
    }
    double d = json_real_value(v);
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, cap, "%.*g", prec, d);
        if (strtod(buf, NULL) == d) {
            return;
        }
    }
}

void js_bufcat(char *buf, size_t cap, size_t *len, const char *fmt, ...)
{
    if (*len + 1 >= cap) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *len, cap - *len, fmt, ap);
    va_end(ap);
    if (n < 0) {
        return;
    }
    if ((size_t)n >= cap - *len) {
        *len = cap - 1;
        if (cap >= 4) {
            size_t k = cap - 4;
            while (k > 0 && ((unsigned char)buf[k] & 0xC0) == 0x80) {
                k--;
            }
            memcpy(buf + k, "...", 4);
        }
        return; /* *len stays at cap - 1: later appends are dropped */
    }
    *len += (size_t)n;
}

