/*
 * _plainc: the worker's C accelerator for plain CALLs (docs/decisions.md, "Worker C accelerator").
 *
 * call(body, request_id, contexts, max_frame) does for the common plain CALL what Ops.handle
 * does in Python, without a Python frame:
 *
 *   1. decode  the body with a decoder for the plain subset of MessagePack, which gives exactly
 *              what msgpack.unpackb(body, raw=False, ext_hook=<raises>) gives, and check its
 *              fields as plain.plain_call does (decode_value, parse_call);
 *   2. resolve module.function from sys.modules (resolve);
 *   3. call    the function (invoke);
 *   4. encode  a scalar result as value.encode_scalar does (scalar_form);
 *   5. frame   it as FrameWriter.send frames an OK reply (build_frame).
 *
 * It answers one of:
 *
 *   None                     nothing ran (no user code either): the caller takes the Python
 *                            paths, which decide everything this module declines;
 *   bytes                    the complete OK reply frame, length prefix included;
 *   (True, result, session)  a result that is not a scalar, or does not fit max_frame:
 *                            Ops._encode encodes it;
 *   (False, exc, session)    the call or the attribute lookup raised exc (never
 *                            KeyboardInterrupt, which propagates as in the Python path).
 *
 * split(payload) splits a frame's envelope as protocol.split_envelope does, for the host's own
 * shape of envelope (None for anything else: split_envelope decides), and decode(body) is the
 * decoder alone, for tests.
 *
 * Reference counting: functions returning PyObject * return a NEW reference unless their comment
 * says "borrowed". Every Py_DECREF is next to the reason the reference is no longer needed.
 *
 * Compiles against the CPython 3.9 - 3.12 C API; the few version differences are guarded with
 * PY_VERSION_HEX.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* protocol.OK: the op of a reply frame. pyvisor_worker.accel checks it against protocol.py. */
#define OP_OK 2

/* Containers nested deeper than this go to the Python path (msgpack itself allows 1024); it
 * bounds this decoder's C recursion. */
#define MAX_DEPTH 64

/* Set once by the module init; strong references kept for the life of the process. */
static PyObject *sys_dict;       /* sys.__dict__, where calls.resolve finds sys.modules */
static PyObject *calls_resolve;  /* pyvisor_worker.calls.resolve: lookups that may run user code */
static PyObject *str_modules;    /* interned "modules" */
static PyObject *str_module;     /* interned field names of the map form of a CALL body */
static PyObject *str_function;
static PyObject *str_args;
static PyObject *str_kwargs;
static PyObject *str_session;

/* ------------------------------------------------------------------------------------------ */
/* Step 1a: decoding. Every decode_* returns a new reference, or NULL when the input is not   */
/* plain or not valid (an error may or may not be set: the caller clears it and declines).    */

typedef struct {
    const unsigned char *pos;  /* the next byte to read */
    const unsigned char *end;  /* one past the last byte */
} Reader;

static inline Py_ssize_t remaining(const Reader *r) { return (Py_ssize_t)(r->end - r->pos); }

static inline uint16_t load16(const unsigned char *p) {
    return (uint16_t)(((uint16_t)p[0] << 8) | p[1]);
}

static inline uint32_t load32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline uint64_t load64(const unsigned char *p) {
    return ((uint64_t)load32(p) << 32) | load32(p + 4);
}

/* The big-endian length of `width` bytes at the reader (a str/bin/array/map header), or -1. */
static Py_ssize_t read_length(Reader *r, int width) {
    uint32_t n;
    if (remaining(r) < width)
        return -1;
    if (width == 1)
        n = r->pos[0];
    else if (width == 2)
        n = load16(r->pos);
    else
        n = load32(r->pos);
    r->pos += width;
#if SIZEOF_SIZE_T < 8
    if (n > (uint32_t)PY_SSIZE_T_MAX)  /* a 32-bit build: no object is that large */
        return -1;
#endif
    return (Py_ssize_t)n;
}

static PyObject *decode_value(Reader *r, int depth);

/* str of n bytes: strict UTF-8, as msgpack decodes with raw=False. */
static PyObject *decode_str(Reader *r, Py_ssize_t n) {
    PyObject *s;
    if (n < 0 || remaining(r) < n)
        return NULL;
    s = PyUnicode_DecodeUTF8((const char *)r->pos, n, NULL);
    r->pos += n;
    return s;
}

static PyObject *decode_bin(Reader *r, Py_ssize_t n) {
    PyObject *b;
    if (n < 0 || remaining(r) < n)
        return NULL;
    b = PyBytes_FromStringAndSize((const char *)r->pos, n);
    r->pos += n;
    return b;
}

static PyObject *decode_array(Reader *r, Py_ssize_t n, int depth) {
    PyObject *list;
    Py_ssize_t i;
    /* Every item takes at least one byte: a longer count is truncated input (and is never
     * allocated). */
    if (n < 0 || depth >= MAX_DEPTH || n > remaining(r))
        return NULL;
    list = PyList_New(n);
    if (list == NULL)
        return NULL;
    for (i = 0; i < n; i++) {
        PyObject *item = decode_value(r, depth + 1);
        if (item == NULL) {
            Py_DECREF(list);  /* the unset slots are NULL, which list_dealloc skips */
            return NULL;
        }
        PyList_SET_ITEM(list, i, item);  /* steals item */
    }
    return list;
}

/* The field names of a CALL body, interned (the map form's keys, msgpack interns map keys). */
static PyObject **const field_names[] = {
    &str_module, &str_function, &str_args, &str_kwargs, &str_session, NULL,
};

/* A BORROWED reference to the interned field name whose fixstr is at the reader (then read),
 * or NULL. The str msgpack makes of these bytes and interns is this very object, so handing
 * it out saves making and interning a copy (most map keys the worker sees are these). */
static PyObject *field_name_at(Reader *r) {
    Py_ssize_t n, i;
    if (remaining(r) < 1 || (r->pos[0] & 0xe0) != 0xa0)
        return NULL;
    n = r->pos[0] & 0x1f;
    if (remaining(r) < 1 + n)
        return NULL;
    for (i = 0; field_names[i] != NULL; i++) {
        PyObject *name = *field_names[i];
        if (PyUnicode_GET_LENGTH(name) == n && memcmp(PyUnicode_DATA(name), r->pos + 1, (size_t)n) == 0) {
            r->pos += 1 + n;
            return name;
        }
    }
    return NULL;
}

static PyObject *decode_map(Reader *r, Py_ssize_t n, int depth) {
    PyObject *dict;
    Py_ssize_t i;
    /* Every pair takes at least two bytes (msgpack's max_map_len is len(body) // 2). */
    if (n < 0 || depth >= MAX_DEPTH || n > remaining(r) / 2)
        return NULL;
    dict = PyDict_New();
    if (dict == NULL)
        return NULL;
    for (i = 0; i < n; i++) {
        PyObject *key, *value;
        int failed;
        key = field_name_at(r);
        if (key != NULL) {
            Py_INCREF(key);  /* our own reference, like a decoded key's */
        } else if ((key = decode_value(r, depth + 1)) == NULL) {
            Py_DECREF(dict);
            return NULL;
        } else if (PyUnicode_CheckExact(key)) {
            PyUnicode_InternInPlace(&key);  /* as msgpack does; swaps our reference */
        } else if (!PyBytes_CheckExact(key)) {
            /* strict_map_key: msgpack refuses every other key type */
            Py_DECREF(key);
            Py_DECREF(dict);
            return NULL;
        }
        value = decode_value(r, depth + 1);
        if (value == NULL) {
            Py_DECREF(key);
            Py_DECREF(dict);
            return NULL;
        }
        failed = PyDict_SetItem(dict, key, value) < 0;  /* the dict takes its own references */
        Py_DECREF(key);
        Py_DECREF(value);
        if (failed) {
            Py_DECREF(dict);
            return NULL;
        }
    }
    return dict;
}

static PyObject *decode_float(Reader *r, int width) {
    double d;
    if (remaining(r) < width)
        return NULL;
    /* The same conversions msgpack uses, so that every bit pattern (NaNs included) decodes to
     * the same double. */
#if PY_VERSION_HEX >= 0x030B00A7
    d = width == 4 ? PyFloat_Unpack4((const char *)r->pos, 0) : PyFloat_Unpack8((const char *)r->pos, 0);
#else
    d = width == 4 ? _PyFloat_Unpack4(r->pos, 0) : _PyFloat_Unpack8(r->pos, 0);
#endif
    if (d == -1.0 && PyErr_Occurred())
        return NULL;
    r->pos += width;
    return PyFloat_FromDouble(d);
}

/* One MessagePack value without ext types (msgpack's own timestamp, ext -1, is declined too:
 * the Python path decodes it). */
static PyObject *decode_value(Reader *r, int depth) {
    unsigned char m;
    const unsigned char *p;
    if (remaining(r) < 1)
        return NULL;
    m = *r->pos++;
    if (m <= 0x7f)
        return PyLong_FromLong(m);
    if (m >= 0xe0)
        return PyLong_FromLong((long)(int8_t)m);
    if (m <= 0x8f)
        return decode_map(r, m & 0x0f, depth);
    if (m <= 0x9f)
        return decode_array(r, m & 0x0f, depth);
    if (m <= 0xbf)
        return decode_str(r, m & 0x1f);
    p = r->pos;
    switch (m) {
    case 0xc0: Py_INCREF(Py_None); return Py_None;
    case 0xc2: Py_INCREF(Py_False); return Py_False;
    case 0xc3: Py_INCREF(Py_True); return Py_True;
    case 0xc4: return decode_bin(r, read_length(r, 1));
    case 0xc5: return decode_bin(r, read_length(r, 2));
    case 0xc6: return decode_bin(r, read_length(r, 4));
    case 0xca: return decode_float(r, 4);
    case 0xcb: return decode_float(r, 8);
    case 0xcc: if (remaining(r) < 1) return NULL; r->pos += 1; return PyLong_FromLong(p[0]);
    case 0xcd: if (remaining(r) < 2) return NULL; r->pos += 2; return PyLong_FromLong(load16(p));
    case 0xce:
        if (remaining(r) < 4) return NULL;
        r->pos += 4;
        return PyLong_FromUnsignedLongLong(load32(p));
    case 0xcf:
        if (remaining(r) < 8) return NULL;
        r->pos += 8;
        return PyLong_FromUnsignedLongLong(load64(p));
    case 0xd0: if (remaining(r) < 1) return NULL; r->pos += 1; return PyLong_FromLong((int8_t)p[0]);
    case 0xd1:
        if (remaining(r) < 2) return NULL;
        r->pos += 2;
        return PyLong_FromLong((int16_t)load16(p));
    case 0xd2:
        if (remaining(r) < 4) return NULL;
        r->pos += 4;
        return PyLong_FromLongLong((int32_t)load32(p));
    case 0xd3:
        if (remaining(r) < 8) return NULL;
        r->pos += 8;
        return PyLong_FromLongLong((int64_t)load64(p));
    case 0xd9: return decode_str(r, read_length(r, 1));
    case 0xda: return decode_str(r, read_length(r, 2));
    case 0xdb: return decode_str(r, read_length(r, 4));
    case 0xdc: return decode_array(r, read_length(r, 2), depth);
    case 0xdd: return decode_array(r, read_length(r, 4), depth);
    case 0xde: return decode_map(r, read_length(r, 2), depth);
    case 0xdf: return decode_map(r, read_length(r, 4), depth);
    default:   /* 0xc1 (never used) and every ext type (0xc7-0xc9, 0xd4-0xd8) */
        return NULL;
    }
}

/* The whole body as one value, or NULL (no error set) if it is not plain or not exactly one
 * valid value. Accepts bytes and one-byte-item buffers (a memoryview on a large payload). */
static PyObject *decode_body(PyObject *body) {
    Reader r;
    PyObject *value;
    Py_buffer view;
    int has_view = 0;
    if (PyBytes_CheckExact(body)) {
        r.pos = (const unsigned char *)PyBytes_AS_STRING(body);
        r.end = r.pos + PyBytes_GET_SIZE(body);
    } else if (PyMemoryView_Check(body)) {
        if (PyObject_GetBuffer(body, &view, PyBUF_SIMPLE) < 0) {
            PyErr_Clear();
            return NULL;
        }
        has_view = 1;
        if (view.itemsize != 1) {  /* msgpack refuses multi-byte items */
            PyBuffer_Release(&view);
            return NULL;
        }
        r.pos = (const unsigned char *)view.buf;
        r.end = r.pos + view.len;
    } else {
        return NULL;
    }
    value = decode_value(&r, 0);
    if (value != NULL && r.pos != r.end) {  /* extra data after the value */
        Py_DECREF(value);
        value = NULL;
    }
    if (has_view)
        PyBuffer_Release(&view);  /* every decoded object owns a copy of its bytes */
    if (value == NULL)
        PyErr_Clear();
    return value;
}

/* ------------------------------------------------------------------------------------------ */
/* Step 1b: the fields of a plain CALL (plain.plain_call's rules), plus what only this path   */
/* declines. All pointers are BORROWED from the decoded body.                                 */

typedef struct {
    PyObject *module;    /* non-empty str */
    PyObject *function;  /* non-empty str without a dot */
    PyObject *args;      /* list, or NULL for none */
    PyObject *kwargs;    /* dict with str keys, or NULL for none (nil or empty) */
    PyObject *session;   /* str, or Py_None */
} Call;

static int is_name(PyObject *obj) {
    return obj != NULL && PyUnicode_CheckExact(obj) && PyUnicode_GET_LENGTH(obj) > 0;
}

/* A field of the map form, BORROWED; Py_None when absent (plain.py's body.get). */
static PyObject *map_field(PyObject *body, PyObject *name) {
    PyObject *value = PyDict_GetItemWithError(body, name);
    if (value == NULL && !PyErr_Occurred())
        return Py_None;
    return value;  /* NULL: a lookup error (the caller declines) */
}

/* 1 when `body` is a plain CALL this path takes (fills *call), 0 when not (no error set). */
static int parse_call(PyObject *body, PyObject *contexts, Call *call) {
    PyObject *args, *kwargs, *session;
    if (PyList_CheckExact(body)) {
        if (PyList_GET_SIZE(body) != 5)
            return 0;
        call->module = PyList_GET_ITEM(body, 0);
        call->function = PyList_GET_ITEM(body, 1);
        args = PyList_GET_ITEM(body, 2);
        kwargs = PyList_GET_ITEM(body, 3);
        session = PyList_GET_ITEM(body, 4);
    } else if (PyDict_CheckExact(body)) {
        call->module = map_field(body, str_module);
        call->function = map_field(body, str_function);
        args = map_field(body, str_args);
        kwargs = map_field(body, str_kwargs);
        session = map_field(body, str_session);
        if (args == NULL || kwargs == NULL || session == NULL) {
            PyErr_Clear();
            return 0;
        }
    } else {
        return 0;
    }
    if (!is_name(call->module) || !is_name(call->function))
        return 0;
    /* args: an array or nil. */
    if (args == Py_None)
        call->args = NULL;
    else if (PyList_CheckExact(args))
        call->args = args;
    else
        return 0;
    /* kwargs: a map with str keys (bytes keys pass the decoder) or nil. */
    if (kwargs == Py_None) {
        call->kwargs = NULL;
    } else if (PyDict_CheckExact(kwargs)) {
        PyObject *key, *value;
        Py_ssize_t pos = 0;
        while (PyDict_Next(kwargs, &pos, &key, &value)) {
            if (!PyUnicode_CheckExact(key))
                return 0;
        }
        call->kwargs = PyDict_GET_SIZE(kwargs) ? kwargs : NULL;
    } else {
        return 0;
    }
    /* session: a str or nil, and no contexts for it (contexts is Ops.contexts, a dict). */
    if (session != Py_None) {
        if (!PyUnicode_CheckExact(session) || !PyDict_CheckExact(contexts))
            return 0;
        if (PyDict_GET_SIZE(contexts)) {
            int found = PyDict_Contains(contexts, session);
            if (found != 0) {  /* has contexts (1), or an error (-1) */
                PyErr_Clear();
                return 0;
            }
        }
    }
    call->session = session;
    /* Only this path: "builtins" is the policy's special case (eval/exec/compile), and a dotted
     * function name walks attributes; Ops checks and resolves both. */
    if (PyUnicode_CompareWithASCIIString(call->module, "builtins") == 0)
        return 0;
    {
        Py_ssize_t dot = PyUnicode_FindChar(call->function, '.', 0,
                                            PyUnicode_GET_LENGTH(call->function), 1);
        if (dot != -1) {  /* found, or an error (-2) */
            PyErr_Clear();
            return 0;
        }
    }
    return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* Step 2: resolving module.function as calls.resolve does.                                   */

/* 1: *func is a NEW reference to the function; 0: declined, nothing ran and no error is set
 * (the module is not an imported plain module); -1: the lookup raised (user code may have run:
 * a module __getattr__), the error is set as calls.resolve raised it. */
static int resolve(const Call *call, PyObject **func) {
    PyObject *modules, *module;
    *func = NULL;
    modules = PyDict_GetItemWithError(sys_dict, str_modules);  /* borrowed */
    if (modules == NULL || !PyDict_CheckExact(modules)) {
        PyErr_Clear();
        return 0;
    }
    module = PyDict_GetItemWithError(modules, call->module);  /* borrowed */
    if (module == NULL || !PyModule_CheckExact(module)) {
        /* Not imported yet (the Python path imports it), None, an error, or a module object of
         * another type whose attribute lookup may be anything. */
        PyErr_Clear();
        return 0;
    }
    /* The generic lookup is the first half of a module's own getattr, without the fallback to
     * the module's __getattr__: for a plain module it runs no user code. Hold the module while
     * it runs (sys.modules only lends it). */
    Py_INCREF(module);
    *func = PyObject_GenericGetAttr(module, call->function);
    Py_DECREF(module);
    if (*func != NULL)
        return 1;
    /* Missing here: calls.resolve itself decides (module __getattr__, its AttributeError
     * message, and the traceback entry it adds), and its user code runs only there. */
    PyErr_Clear();
    *func = PyObject_CallFunctionObjArgs(calls_resolve, call->module, call->function, NULL);
    return *func != NULL ? 1 : -1;
}

/* ------------------------------------------------------------------------------------------ */
/* Step 3: the call, func(*args, **kwargs). The items of the args list are passed in place    */
/* (vectorcall borrows them; the list is ours and nobody else can change it meanwhile).       */

static PyObject *invoke(PyObject *func, const Call *call) {
    PyObject *const *items = NULL;
    Py_ssize_t nargs = 0;
    if (call->args != NULL) {
        nargs = PyList_GET_SIZE(call->args);
        items = ((PyListObject *)call->args)->ob_item;
    }
    if (call->kwargs == NULL)
        return PyObject_Vectorcall(func, items, (size_t)nargs, NULL);
    return PyObject_VectorcallDict(func, items, (size_t)nargs, call->kwargs);
}

/* ------------------------------------------------------------------------------------------ */
/* Step 4: a scalar result's MessagePack form: `head` (marker and inline value) followed by   */
/* `size` bytes at `data` (the UTF-8 of a str, the bytes of a bytes; NULL otherwise). Exactly */
/* the bytes value.encode_scalar gives: msgpack's Packer(use_bin_type=True) and '>Bd'.        */

typedef struct {
    unsigned char head[9];
    Py_ssize_t head_len;
    const char *data;
    Py_ssize_t size;
} Scalar;

/* The shortest msgpack form of a non-negative integer (also the envelope's request id). */
static Py_ssize_t put_uint(unsigned char *out, unsigned long long u) {
    int width, i;
    if (u < 0x80) {
        out[0] = (unsigned char)u;
        return 1;
    }
    if (u <= 0xFF) {
        out[0] = 0xcc;
        width = 1;
    } else if (u <= 0xFFFF) {
        out[0] = 0xcd;
        width = 2;
    } else if (u <= 0xFFFFFFFFULL) {
        out[0] = 0xce;
        width = 4;
    } else {
        out[0] = 0xcf;
        width = 8;
    }
    for (i = 0; i < width; i++)
        out[1 + i] = (unsigned char)(u >> (8 * (width - 1 - i)));
    return 1 + width;
}

/* The shortest msgpack form of a negative integer (msgpack_pack_real_int64). */
static Py_ssize_t put_negative(unsigned char *out, long long v) {
    unsigned long long bits = (unsigned long long)v;
    int width, i;
    if (v >= -32) {
        out[0] = (unsigned char)(bits & 0xFF);
        return 1;
    }
    if (v >= -128) {
        out[0] = 0xd0;
        width = 1;
    } else if (v >= -32768) {
        out[0] = 0xd1;
        width = 2;
    } else if (v >= -2147483647LL - 1) {
        out[0] = 0xd2;
        width = 4;
    } else {
        out[0] = 0xd3;
        width = 8;
    }
    for (i = 0; i < width; i++)
        out[1 + i] = (unsigned char)(bits >> (8 * (width - 1 - i)));
    return 1 + width;
}

/* A str or bin header: fix (str only), 8-, 16- or 32-bit length. */
static void put_sized(Scalar *s, unsigned char fix, unsigned char m8, unsigned char m16,
                      unsigned char m32, Py_ssize_t n) {
    if (fix && n < 32) {
        s->head[0] = (unsigned char)(fix | n);
        s->head_len = 1;
    } else if (n < 256) {
        s->head[0] = m8;
        s->head[1] = (unsigned char)n;
        s->head_len = 2;
    } else if (n < 65536) {
        s->head[0] = m16;
        s->head[1] = (unsigned char)(n >> 8);
        s->head[2] = (unsigned char)n;
        s->head_len = 3;
    } else {
        s->head[0] = m32;
        s->head[1] = (unsigned char)(n >> 24);
        s->head[2] = (unsigned char)(n >> 16);
        s->head[3] = (unsigned char)(n >> 8);
        s->head[4] = (unsigned char)n;
        s->head_len = 5;
    }
}

#define ITEM_LIMIT 0xFFFFFFFFLL  /* msgpack refuses str and bin of 4 GiB and more */

/* 1 when `obj` (borrowed) is a scalar encode_scalar packs, filling *s (s->data points into obj);
 * 0 otherwise (encode_scalar gives None: Ops._encode decides). Never leaves an error set. */
static int scalar_form(PyObject *obj, Scalar *s) {
    s->data = NULL;
    s->size = 0;
    if (PyFloat_CheckExact(obj)) {
        s->head[0] = 0xcb;
#if PY_VERSION_HEX >= 0x030B00A7
        if (PyFloat_Pack8(PyFloat_AS_DOUBLE(obj), (char *)s->head + 1, 0) < 0) {
#else
        if (_PyFloat_Pack8(PyFloat_AS_DOUBLE(obj), s->head + 1, 0) < 0) {
#endif
            PyErr_Clear();
            return 0;
        }
        s->head_len = 9;
        return 1;
    }
    if (PyLong_CheckExact(obj)) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
        if (overflow < 0)
            return 0;  /* below the int64 range: a BIGINT */
        if (overflow > 0) {
            unsigned long long u = PyLong_AsUnsignedLongLong(obj);
            if (u == (unsigned long long)-1 && PyErr_Occurred()) {
                PyErr_Clear();  /* above the uint64 range: a BIGINT */
                return 0;
            }
            s->head_len = put_uint(s->head, u);
            return 1;
        }
        if (v == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        s->head_len = v >= 0 ? put_uint(s->head, (unsigned long long)v) : put_negative(s->head, v);
        return 1;
    }
    if (PyUnicode_CheckExact(obj)) {
        Py_ssize_t n;
        /* The UTF-8 form msgpack packs (cached in the str, as msgpack's packing caches it). */
        const char *utf8 = PyUnicode_AsUTF8AndSize(obj, &n);
        if (utf8 == NULL) {
            PyErr_Clear();  /* lone surrogates: the encoder decides */
            return 0;
        }
        if (n > ITEM_LIMIT)
            return 0;
        put_sized(s, 0xa0, 0xd9, 0xda, 0xdb, n);
        s->data = utf8;
        s->size = n;
        return 1;
    }
    if (PyBytes_CheckExact(obj)) {
        Py_ssize_t n = PyBytes_GET_SIZE(obj);
        if (n > ITEM_LIMIT)
            return 0;
        put_sized(s, 0, 0xc4, 0xc5, 0xc6, n);
        s->data = PyBytes_AS_STRING(obj);
        s->size = n;
        return 1;
    }
    if (obj == Py_None || obj == Py_True || obj == Py_False) {
        s->head[0] = obj == Py_None ? 0xc0 : obj == Py_True ? 0xc3 : 0xc2;
        s->head_len = 1;
        return 1;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Step 5: the OK frame, [u32 length][0x93, OK, id, body], as FrameWriter.send writes it.      */

/* A new bytes object, or NULL with no error set when the payload is above max_frame (Ops then
 * reports frame_too_large) or memory ran out (the Python path tries again). */
static PyObject *build_frame(unsigned long long request_id, long long max_frame, const Scalar *s) {
    unsigned char envelope[11];
    Py_ssize_t envelope_len;
    long long payload;
    PyObject *frame;
    unsigned char *out;
    envelope[0] = 0x93;  /* fixarray of 3: [op, id, body] */
    envelope[1] = OP_OK;
    envelope_len = 2 + put_uint(envelope + 2, request_id);
    payload = (long long)envelope_len + s->head_len + s->size;
    if (payload > max_frame || payload > 0xFFFFFFFFLL)
        return NULL;
    frame = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(4 + payload));
    if (frame == NULL) {
        PyErr_Clear();
        return NULL;
    }
    out = (unsigned char *)PyBytes_AS_STRING(frame);
    out[0] = (unsigned char)(payload >> 24);
    out[1] = (unsigned char)(payload >> 16);
    out[2] = (unsigned char)(payload >> 8);
    out[3] = (unsigned char)payload;
    out += 4;
    memcpy(out, envelope, (size_t)envelope_len);
    out += envelope_len;
    memcpy(out, s->head, (size_t)s->head_len);
    out += s->head_len;
    if (s->size)
        memcpy(out, s->data, (size_t)s->size);
    return frame;
}

/* ------------------------------------------------------------------------------------------ */
/* The answers.                                                                               */

/* (False, exc, session) for the error set now, which it clears; NULL (the error stays set) for
 * KeyboardInterrupt, which must propagate. The exception carries its traceback, as it does
 * when caught with `except BaseException as exc`. `session` is borrowed. */
static PyObject *failure(PyObject *session) {
    PyObject *exc, *answer;
    if (PyErr_ExceptionMatches(PyExc_KeyboardInterrupt))
        return NULL;
#if PY_VERSION_HEX >= 0x030C0000
    exc = PyErr_GetRaisedException();  /* new reference, normalized, __traceback__ set */
#else
    {
        PyObject *type, *tb;
        PyErr_Fetch(&type, &exc, &tb);  /* three new references (or NULL) */
        PyErr_NormalizeException(&type, &exc, &tb);
        if (exc != NULL && tb != NULL)
            PyException_SetTraceback(exc, tb);  /* takes its own reference to tb */
        Py_XDECREF(type);
        Py_XDECREF(tb);
    }
#endif
    if (exc == NULL) {
        PyErr_SetString(PyExc_SystemError, "_plainc: a failed call set no exception");
        return NULL;
    }
    answer = PyTuple_Pack(3, Py_False, exc, session);  /* the tuple takes its own references */
    Py_DECREF(exc);
    return answer;
}

/* The reply to a result (a NEW reference the caller passes on): its frame, or
 * (True, result, session). `session` is borrowed. */
static PyObject *success(PyObject *result, unsigned long long request_id, long long max_frame,
                         PyObject *session) {
    Scalar s;
    PyObject *answer = NULL;
    if (scalar_form(result, &s))
        answer = build_frame(request_id, max_frame, &s);  /* s.data points into result */
    if (answer == NULL)
        answer = PyTuple_Pack(3, Py_True, result, session);
    Py_DECREF(result);
    return answer;
}

/* Everything that must be settled before user code runs: the request id (a u64) and the frame
 * limit. 1 when usable, 0 when not (no error set). */
static int parse_numbers(PyObject *id_obj, PyObject *limit_obj, unsigned long long *request_id,
                         long long *max_frame) {
    if (!PyLong_CheckExact(id_obj) || !PyLong_CheckExact(limit_obj))
        return 0;
    *request_id = PyLong_AsUnsignedLongLong(id_obj);
    if (*request_id == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();  /* negative or beyond 64 bits */
        return 0;
    }
    *max_frame = PyLong_AsLongLong(limit_obj);
    if (*max_frame == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    return 1;
}

PyDoc_STRVAR(call_doc,
"call(body, request_id, contexts, max_frame)\n"
"--\n\n"
"Run the plain CALL ``body`` (bytes or a memoryview) if this path takes it.\n\n"
"Returns ``None`` (nothing ran: take the Python paths), the complete OK reply frame (bytes),\n"
"``(True, result, session)`` (Ops._encode encodes the result) or ``(False, exc, session)``\n"
"(the call raised ``exc``). KeyboardInterrupt propagates.");

static PyObject *plainc_call(PyObject *self, PyObject *const *argv, Py_ssize_t argc) {
    unsigned long long request_id;
    long long max_frame;
    PyObject *body, *func, *result, *session, *answer;
    Call call;
    int found;
    (void)self;
    if (argc != 4) {
        PyErr_SetString(PyExc_TypeError, "call() takes 4 arguments (body, request_id, contexts, max_frame)");
        return NULL;
    }
    if (!parse_numbers(argv[1], argv[3], &request_id, &max_frame))
        Py_RETURN_NONE;
    body = decode_body(argv[0]);
    if (body == NULL)
        Py_RETURN_NONE;
    if (!parse_call(body, argv[2], &call)) {
        Py_DECREF(body);
        Py_RETURN_NONE;
    }
    /* From here on `call` borrows from `body`, which is therefore kept until the call returns;
     * the session outlives it in the answer. */
    session = call.session;
    Py_INCREF(session);
    found = resolve(&call, &func);
    if (found == 0) {  /* declined before anything ran */
        Py_DECREF(session);
        Py_DECREF(body);
        Py_RETURN_NONE;
    }
    if (found < 0) {
        answer = failure(session);  /* before any decref: the error stays untouched */
        Py_DECREF(session);
        Py_DECREF(body);
        return answer;
    }
    result = invoke(func, &call);
    Py_DECREF(func);
    if (result == NULL) {
        answer = failure(session);
        Py_DECREF(session);
        Py_DECREF(body);
        return answer;
    }
    Py_DECREF(body);  /* the arguments are no longer needed (the Python path drops them too) */
    answer = success(result, request_id, max_frame, session);  /* consumes result */
    Py_DECREF(session);
    return answer;
}

/* ------------------------------------------------------------------------------------------ */
/* The envelope: split(payload), protocol.split_envelope's fast case.                          */

/* Payloads up to this size have their body copied out as bytes (protocol._COPY_BODY); larger
 * ones are declined here: protocol.py hands out a view on them. */
#define COPY_BODY 4096

PyDoc_STRVAR(split_doc,
"split(payload)\n"
"--\n\n"
"``(op, id, body bytes)`` for a payload of at most 4096 bytes in the host's envelope shape (a\n"
"fixarray of 3, a fixint op, a uint id, a non-empty body): exactly what\n"
"``protocol.split_envelope`` gives. ``None`` for anything else: ``split_envelope`` decides.");

static PyObject *plainc_split(PyObject *self, PyObject *payload) {
    const unsigned char *p;
    Py_ssize_t size, pos;
    unsigned long long id;
    PyObject *body, *answer;
    (void)self;
    if (!PyBytes_CheckExact(payload))
        Py_RETURN_NONE;
    p = (const unsigned char *)PyBytes_AS_STRING(payload);
    size = PyBytes_GET_SIZE(payload);
    if (size < 4 || size > COPY_BODY || p[0] != 0x93 || p[1] >= 0x80)
        Py_RETURN_NONE;
    switch (p[2]) {
    case 0xcc: pos = 4; break;
    case 0xcd: pos = 5; break;
    case 0xce: pos = 7; break;
    case 0xcf: pos = 11; break;
    default:
        if (p[2] >= 0x80)
            Py_RETURN_NONE;  /* not a uint: split_envelope raises */
        pos = 3;
    }
    if (pos >= size)  /* truncated id, or no body: split_envelope raises */
        Py_RETURN_NONE;
    if (pos == 3) {
        id = p[2];
    } else {
        Py_ssize_t i;
        id = 0;
        for (i = 3; i < pos; i++)
            id = (id << 8) | p[i];
    }
    answer = PyTuple_New(3);
    if (answer == NULL)
        return NULL;
    /* PyTuple_SET_ITEM steals each new reference; a NULL item fails the whole answer below
     * (tuple_dealloc skips NULL items). */
    PyTuple_SET_ITEM(answer, 0, PyLong_FromLong(p[1]));
    PyTuple_SET_ITEM(answer, 1, PyLong_FromUnsignedLongLong(id));
    body = PyBytes_FromStringAndSize((const char *)p + pos, size - pos);
    PyTuple_SET_ITEM(answer, 2, body);
    if (PyTuple_GET_ITEM(answer, 0) == NULL || PyTuple_GET_ITEM(answer, 1) == NULL || body == NULL) {
        Py_DECREF(answer);
        return NULL;
    }
    return answer;
}

PyDoc_STRVAR(decode_doc,
"decode(body)\n"
"--\n\n"
"For tests: ``(value,)`` for a body this module decodes (exactly what\n"
"``msgpack.unpackb(body, raw=False)`` gives), ``None`` for one it declines.");

static PyObject *plainc_decode(PyObject *self, PyObject *body) {
    PyObject *value, *answer;
    (void)self;
    value = decode_body(body);
    if (value == NULL)
        Py_RETURN_NONE;
    answer = PyTuple_Pack(1, value);
    Py_DECREF(value);
    return answer;
}

static PyMethodDef plainc_methods[] = {
    {"call", (PyCFunction)(void (*)(void))plainc_call, METH_FASTCALL, call_doc},
    {"decode", (PyCFunction)plainc_decode, METH_O, decode_doc},
    {"split", (PyCFunction)plainc_split, METH_O, split_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef plainc_module = {
    PyModuleDef_HEAD_INIT,
    "pyvisor_worker._plainc",
    "The worker's C accelerator for plain CALLs (see the comment at the top of _plainc.c).",
    -1,
    plainc_methods,
    NULL, NULL, NULL, NULL,
};

/* A NEW reference to the attribute `name` of the module `module_name`. */
static PyObject *import_attr(const char *module_name, const char *name) {
    PyObject *module = PyImport_ImportModule(module_name);
    PyObject *attr;
    if (module == NULL)
        return NULL;
    attr = PyObject_GetAttrString(module, name);
    Py_DECREF(module);
    return attr;
}

PyMODINIT_FUNC PyInit__plainc(void) {
    PyObject *module;
    if (sys_dict == NULL) {  /* the references below live as long as the process */
        PyObject *sys = PyImport_ImportModule("sys");
        if (sys == NULL)
            return NULL;
        sys_dict = PyModule_GetDict(sys);  /* borrowed from sys ... */
        Py_XINCREF(sys_dict);              /* ... and kept */
        Py_DECREF(sys);
        if (sys_dict == NULL)
            return NULL;
        calls_resolve = import_attr("pyvisor_worker.calls", "resolve");
        str_modules = PyUnicode_InternFromString("modules");
        str_module = PyUnicode_InternFromString("module");
        str_function = PyUnicode_InternFromString("function");
        str_args = PyUnicode_InternFromString("args");
        str_kwargs = PyUnicode_InternFromString("kwargs");
        str_session = PyUnicode_InternFromString("session");
        if (calls_resolve == NULL || str_modules == NULL || str_module == NULL
                || str_function == NULL || str_args == NULL || str_kwargs == NULL
                || str_session == NULL) {
            Py_CLEAR(sys_dict);  /* so that a second import tries again */
            Py_CLEAR(calls_resolve);
            return NULL;
        }
    }
    module = PyModule_Create(&plainc_module);
    if (module == NULL)
        return NULL;
    if (PyModule_AddIntConstant(module, "OK", OP_OK) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
