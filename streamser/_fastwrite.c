/* The binary graph writer's record loop in C: an accelerator for streamser.graph.writer.

It runs GraphWriter's stack loop for the values whose records it can write exactly as the
Python writer does: None, bool, int (within 2**53), float, str, bytes, bytearray, dict, list,
tuple, LuaTable, TorchObject, and small numpy arrays that own their C-contiguous memory and have
a Torch element type in native byte order. Every other value (and every value that would be an
error) is handed, before a single byte of it is written, to the state's write_nested, which
writes it and all it holds in Python, or raises with the value's path.

State is the Python writer's, handed over explicitly (graph.writer.CompiledState; setup() gets
values.lua.NativeLayout and graph.writer.WriterHooks): its index counter, its IdentityMemo
dicts (entries ``id(obj) -> (holder, index)``, the holder a weak reference where Python allows
one), its ``active`` set (cycle detection without references) and its ``stack``, which holds one
placeholder frame per C frame whenever Python code runs, so that error paths name the value.
No attribute is looked up by name.

Records are gathered in a private buffer and moved to the sink's bytearray before any Python
code runs and whenever the sink must drain (at the same points where the Python loop settles).
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#ifndef Py_T_OBJECT_EX
#define Py_T_OBJECT_EX T_OBJECT_EX
#endif
#include <numpy/arrayobject.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#if PY_BIG_ENDIAN
#error "streamser._fastwrite writes little-endian records by copying native values"
#endif

#define TAG_NIL 0
#define TAG_NUMBER 1
#define TAG_STRING 2
#define TAG_TABLE 3
#define TAG_TORCH 4
#define TAG_BOOLEAN 5
#define INT32_MAX_ 2147483647LL
#define MAX_EXACT_INT (1LL << 53)
#define N_ELEMENTS 8 /* order of the header tables: u1 i1 i2 i4 i8 f2 f4 f8 */

/* Set once by setup(). */
static PyObject *g_frame_type;  /* graph.writer._Frame */
static PyObject *g_frame_label; /* its member descriptor _Frame.label */
static PyObject *g_key;         /* graph.writer._KEY, the label of a key being written */
static PyObject *g_forget;      /* graph.memo.forget(memo_ref, key) */
static PyTypeObject *g_lua_table;
static PyTypeObject *g_torch_object;
static PyObject *g_class_of_root; /* values.lua._CLASS_OF_ROOT: roots with a CUDA class */
static PyObject *g_empty_iter;    /* children of placeholder frames (never iterated) */
static Py_ssize_t g_off_entries, g_off_typename, g_off_version, g_off_fields;

/* --- Remover: the weak reference callback that drops a dead object's memo entries ---------- */

/* It holds the memos weakly (IdentityMemo has __weakref__), so nothing here makes a cycle: a
   dropped memo frees its entries, their weak references and these callbacks by reference
   counting alone, and none of them is ever seen by the cyclic collector. */
typedef struct {
    PyObject_HEAD
    PyObject *memos[2]; /* weak references to IdentityMemo objects (or NULL) */
    PyObject *key;      /* id() of the object, the memos' key */
} Remover;

static void remover_dealloc(Remover *self) {
    Py_XDECREF(self->memos[0]);
    Py_XDECREF(self->memos[1]);
    Py_XDECREF(self->key);
    PyObject_Free(self);
}

/* memo.forget(memo_ref, key) for each memo, as IdentityMemo.put's callback does. */
static PyObject *remover_call(Remover *self, PyObject *args, PyObject *kwargs) {
    for (int i = 0; i < 2; i++) {
        if (self->memos[i] == NULL) continue;
        PyObject *done = PyObject_CallFunctionObjArgs(g_forget, self->memos[i], self->key, NULL);
        if (done == NULL) return NULL;
        Py_DECREF(done);
    }
    Py_RETURN_NONE;
}

static PyTypeObject RemoverType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "streamser._fastwrite.Remover",
    .tp_basicsize = sizeof(Remover),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor)remover_dealloc,
    .tp_call = (ternaryfunc)remover_call,
};

/* --- the writer's state for one write_graph call -------------------------------------------- */

enum { K_DICT, K_LUA, K_LIST, K_SINGLE };

typedef struct {
    int kind;
    int at_value;        /* the next child is the value of the key just written */
    PyObject *container; /* dict (a LuaTable's entries), list, tuple, or the single child */
    PyObject *owner;     /* the value whose children these are */
    PyObject *owner_id;  /* id(owner), when it is in the writer's _active set */
    Py_ssize_t pos;      /* PyDict_Next position or list index */
    Py_ssize_t size;     /* dict size when iteration began (-1 before) */
    PyObject *key;       /* the key just written (dicts) */
    PyObject *value;     /* the value that follows it */
} Frame;

typedef struct {
    PyObject *buffer, *drain, *memo, *storages, *stack, *active; /* memo, storages: entries */
    PyObject *write_nested, *set_count, *class_header;
    PyObject *memo_ref, *storages_ref; /* weak references to the two IdentityMemo objects */
    PyObject *theader[N_ELEMENTS], *sheader[N_ELEMENTS]; /* borrowed from config */
    Py_ssize_t target, threshold;
    int referenced, long_size;
    long long count;
    char *buf;
    Py_ssize_t len, cap;
    Frame *frames;
    Py_ssize_t depth, nframes, mirrored;
    unsigned ticks;
} W;

/* --- records ---------------------------------------------------------------------------------- */

static int grow(W *w, Py_ssize_t n) {
    Py_ssize_t cap = w->cap ? w->cap : 4096;
    while (cap < w->len + n) cap *= 2;
    char *buf = PyMem_Realloc(w->buf, (size_t)cap);
    if (buf == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    w->buf = buf;
    w->cap = cap;
    return 0;
}

#define RESERVE(w, n) \
    if ((w)->len + (n) > (w)->cap && grow((w), (n)) < 0) return -1

static inline void put_i32(W *w, int32_t v) {
    memcpy(w->buf + w->len, &v, 4);
    w->len += 4;
}

static inline void put_f64(W *w, double v) {
    memcpy(w->buf + w->len, &v, 8);
    w->len += 8;
}

static inline void put_long(W *w, long long v) {
    if (w->long_size == 8) {
        int64_t x = (int64_t)v;
        memcpy(w->buf + w->len, &x, 8);
    } else {
        int32_t x = (int32_t)v;
        memcpy(w->buf + w->len, &x, 4);
    }
    w->len += w->long_size;
}

static inline void put_raw(W *w, const void *data, Py_ssize_t n) {
    memcpy(w->buf + w->len, data, (size_t)n);
    w->len += n;
}

/* Move the gathered records to the sink's buffer. */
static int flush(W *w) {
    if (w->len == 0) return 0;
    Py_ssize_t old = PyByteArray_GET_SIZE(w->buffer);
    if (PyByteArray_Resize(w->buffer, old + w->len) < 0) return -1;
    memcpy(PyByteArray_AS_STRING(w->buffer) + old, w->buf, (size_t)w->len);
    w->len = 0;
    return 0;
}

/* Sink.settle(): drain once the buffer has reached its target. */
static int settle(W *w) {
    if (PyByteArray_GET_SIZE(w->buffer) + w->len < w->target) return 0;
    if (flush(w) < 0) return -1;
    PyObject *r = PyObject_CallNoArgs(w->drain);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

/* --- the memo (IdentityMemo's entries dict) --------------------------------------------------- */

/* The index stored under key (id(obj)), 0 if none, -1 on error. */
static long long memo_get(PyObject *entries, PyObject *key) {
    PyObject *entry = PyDict_GetItemWithError(entries, key);
    if (entry == NULL) return PyErr_Occurred() ? -1 : 0;
    if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 2) {
        PyErr_SetString(PyExc_TypeError, "unexpected IdentityMemo entry");
        return -1;
    }
    long long index = PyLong_AsLongLong(PyTuple_GET_ITEM(entry, 1));
    if (index == -1 && PyErr_Occurred()) return -1;
    return index;
}

/* A weak reference to obj whose callback drops key from the given memos (IdentityMemo.put).
   (It must stay tracked by the cyclic collector, which moves the references of objects it
   frees from list to list.) */
static PyObject *weak_holder(PyObject *obj, PyObject *key, PyObject *memo, PyObject *other) {
    Remover *remover = PyObject_New(Remover, &RemoverType);
    if (remover == NULL) return NULL;
    remover->memos[0] = Py_XNewRef(memo);
    remover->memos[1] = Py_XNewRef(other);
    remover->key = Py_NewRef(key);
    PyObject *holder = PyWeakref_NewRef(obj, (PyObject *)remover);
    Py_DECREF(remover);
    return holder;
}

/* entries[key] = (holder, index) */
static int memo_put(PyObject *entries, PyObject *key, PyObject *holder, long long index) {
    PyObject *value = PyLong_FromLongLong(index);
    if (value == NULL) return -1;
    PyObject *entry = PyTuple_Pack(2, holder, value);
    Py_DECREF(value);
    if (entry == NULL) return -1;
    /* An entry holding a weak reference (whose callback holds nothing strongly) cannot be in
       a reference cycle: untracked, it costs the cyclic collector nothing. */
    if (PyWeakref_CheckRefExact(holder)) PyObject_GC_UnTrack(entry);
    int rc = PyDict_SetItem(entries, key, entry);
    Py_DECREF(entry);
    return rc;
}

/* --- handing over to Python -------------------------------------------------------------------- */

/* state.set_count(count): the Python writer takes the count. */
static int store_count(W *w) {
    PyObject *count = PyLong_FromLongLong(w->count);
    if (count == NULL) return -1;
    PyObject *r = PyObject_CallOneArg(w->set_count, count);
    Py_DECREF(count);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* The label of the child being written: _KEY while a key is (at_value is then set), else its
key or 1-based list position. */
static PyObject *frame_label(Frame *f) {
    if (f->kind == K_SINGLE) Py_RETURN_NONE;
    if (f->at_value) return Py_NewRef(g_key);
    if (f->kind == K_LIST) return PyLong_FromSsize_t(f->pos);
    return Py_NewRef(f->key != NULL ? f->key : Py_None);
}

/* Give every C frame a placeholder in the Python writer's _stack, labelled as it stands. */
static int mirror(W *w) {
    if (PyList_GET_SIZE(w->stack) != w->mirrored) {
        PyErr_SetString(PyExc_RuntimeError, "the writer's stack changed under the compiled loop");
        return -1;
    }
    for (Py_ssize_t i = w->mirrored; i < w->depth; i++) {
        Frame *f = &w->frames[i];
        PyObject *owner_id = f->owner_id ? Py_NewRef(f->owner_id) : PyLong_FromVoidPtr(f->owner);
        if (owner_id == NULL) return -1;
        PyObject *frame = PyObject_CallFunctionObjArgs(g_frame_type, g_empty_iter, owner_id, NULL);
        Py_DECREF(owner_id);
        if (frame == NULL) return -1;
        int rc = PyList_Append(w->stack, frame);
        Py_DECREF(frame);
        if (rc < 0) return -1;
        w->mirrored = i + 1;
    }
    for (Py_ssize_t i = 0; i < w->depth; i++) {
        PyObject *label = frame_label(&w->frames[i]);
        if (label == NULL) return -1;
        PyObject *frame = PyList_GET_ITEM(w->stack, i);
        int rc = Py_TYPE(g_frame_label)->tp_descr_set(g_frame_label, frame, label);
        Py_DECREF(label);
        if (rc < 0) return -1;
    }
    return 0;
}

/* Let the Python writer write ``value`` and everything it holds (or raise with its path):
   state.write_nested(value, count) -> count. */
static int delegate(W *w, PyObject *value) {
    if (flush(w) < 0 || mirror(w) < 0) return -1;
    PyObject *count = PyLong_FromLongLong(w->count);
    if (count == NULL) return -1;
    PyObject *r = PyObject_CallFunctionObjArgs(w->write_nested, value, count, NULL);
    Py_DECREF(count);
    if (r == NULL) { /* the Python writer's count stands */
        w->count = -1;
        return -1;
    }
    w->count = PyLong_AsLongLong(r);
    Py_DECREF(r);
    return (w->count == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* Leave on a recoverable error (a value Python will reject with a proper message). */
static int delegate_after_error(W *w, PyObject *value) {
    if (!PyErr_ExceptionMatches(PyExc_Exception)) return -1;
    PyErr_Clear();
    return delegate(w, value);
}

/* --- frames ------------------------------------------------------------------------------------- */

static int push(W *w, int kind, PyObject *container, PyObject *owner, PyObject *owner_id) {
    if (w->depth == w->nframes) {
        Py_ssize_t n = w->nframes ? 2 * w->nframes : 32;
        Frame *frames = PyMem_Realloc(w->frames, (size_t)n * sizeof(Frame));
        if (frames == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        w->frames = frames;
        w->nframes = n;
    }
    if (owner_id != NULL && PySet_Add(w->active, owner_id) < 0) return -1;
    Frame *f = &w->frames[w->depth++];
    f->kind = kind;
    f->at_value = 0;
    f->container = Py_NewRef(container);
    f->owner = Py_NewRef(owner);
    f->owner_id = Py_XNewRef(owner_id);
    f->pos = 0;
    f->size = -1;
    f->key = NULL;
    f->value = NULL;
    return 0;
}

static void release(Frame *f) {
    Py_CLEAR(f->container);
    Py_CLEAR(f->owner);
    Py_CLEAR(f->owner_id);
    Py_CLEAR(f->key);
    Py_CLEAR(f->value);
}

static int pop(W *w) {
    Frame *f = &w->frames[--w->depth];
    int rc = 0;
    if (f->owner_id != NULL && PySet_Discard(w->active, f->owner_id) < 0) rc = -1;
    release(f);
    if (rc == 0 && w->depth < w->mirrored) {
        w->mirrored = w->depth;
        rc = PyList_SetSlice(w->stack, w->depth, PY_SSIZE_T_MAX, NULL);
    }
    return rc;
}

enum { C_DONE, C_OBJECT, C_KEY_OBJECT, C_INDEX, C_ERROR };

/* The frame's next child: a new reference in *child, or a list index to write as a number. */
static int next_child(Frame *f, PyObject **child) {
    if (f->kind == K_LIST) {
        if (f->at_value) {
            f->at_value = 0;
            *child = f->value;
            f->value = NULL;
            return C_OBJECT;
        }
        if (f->pos >= Py_SIZE(f->container)) return C_DONE; /* a list is read live, as enumerate */
        PyObject *item = PyList_CheckExact(f->container) ? PyList_GET_ITEM(f->container, f->pos)
                                                         : PyTuple_GET_ITEM(f->container, f->pos);
        f->value = Py_NewRef(item);
        f->pos++;
        f->at_value = 1;
        return C_INDEX;
    }
    if (f->kind == K_SINGLE) {
        if (f->pos) return C_DONE;
        f->pos = 1;
        *child = Py_NewRef(f->container);
        return C_OBJECT;
    }
    if (f->at_value) {
        f->at_value = 0;
        *child = f->value;
        f->value = NULL;
        return C_OBJECT;
    }
    Py_ssize_t size = PyDict_GET_SIZE(f->container);
    if (f->size < 0) {
        f->size = size;
    } else if (size != f->size) {
        PyErr_SetString(PyExc_RuntimeError, "dictionary changed size during iteration");
        return C_ERROR;
    }
    PyObject *key, *value;
    if (!PyDict_Next(f->container, &f->pos, &key, &value)) return C_DONE;
    if (f->kind == K_LUA) {
        if (!PyTuple_CheckExact(value) || PyTuple_GET_SIZE(value) != 2) {
            PyErr_SetString(PyExc_ValueError, "a LuaTable entry is not a (key, value) pair");
            return C_ERROR;
        }
        key = PyTuple_GET_ITEM(value, 0);
        value = PyTuple_GET_ITEM(value, 1);
    }
    Py_XSETREF(f->key, Py_NewRef(key));
    f->value = Py_NewRef(value);
    f->at_value = 1;
    *child = Py_NewRef(key);
    return C_KEY_OBJECT;
}

/* --- one writer per kind of value ----------------------------------------------------------- */

/* A table or object met before is written as its tag and index: 1 when done so, else 0.
   *key is set to id(obj) when the writer is referenced (else NULL), for commit. */
static int back_reference(W *w, int tag, PyObject *obj, PyObject *entries, PyObject **key) {
    *key = NULL;
    if (!w->referenced) return 0;
    *key = PyLong_FromVoidPtr(obj);
    if (*key == NULL) return -1;
    long long index = memo_get(entries, *key);
    if (index <= 0) return (int)index;
    Py_CLEAR(*key);
    RESERVE(w, 8);
    put_i32(w, tag);
    put_i32(w, (int32_t)index);
    return 1;
}

/* A new index for obj, remembered under key (when referenced) held by holder, and its record. */
static int commit(W *w, int tag, PyObject *entries, PyObject *key, PyObject *holder) {
    w->count++;
    if (key != NULL && memo_put(entries, key, holder, w->count) < 0) return -1;
    RESERVE(w, 8);
    put_i32(w, tag);
    put_i32(w, (int32_t)w->count);
    return 0;
}

/* commit() for an object held weakly in the table memo. */
static int commit_weak(W *w, int tag, PyObject *obj, PyObject *key) {
    if (key == NULL) return commit(w, tag, w->memo, NULL, NULL);
    PyObject *holder = weak_holder(obj, key, w->memo_ref, NULL);
    if (holder == NULL) return -1;
    int rc = commit(w, tag, w->memo, key, holder);
    Py_DECREF(holder);
    return rc;
}

/* id(owner) if it must join the _active set (referenced=False); *cycle if it is already in. */
static int active_id(W *w, PyObject *owner, PyObject **owner_id, int *cycle) {
    *owner_id = NULL;
    *cycle = 0;
    if (w->referenced) return 0;
    PyObject *id = PyLong_FromVoidPtr(owner);
    if (id == NULL) return -1;
    int found = PySet_Contains(w->active, id);
    if (found < 0) {
        Py_DECREF(id);
        return -1;
    }
    if (found) {
        Py_DECREF(id);
        *cycle = 1;
        return 0;
    }
    *owner_id = id;
    return 0;
}

static int write_table(W *w, PyObject *value, PyObject *container, int kind, Py_ssize_t n) {
    PyObject *key, *owner_id = NULL;
    int done = back_reference(w, TAG_TABLE, value, w->memo, &key);
    if (done) return done < 0 ? -1 : 0;
    int cycle = 0, rc = 0;
    if (n > INT32_MAX_ || w->count >= INT32_MAX_) {
        cycle = 1; /* Python raises */
    } else if (n > 0) {
        rc = active_id(w, value, &owner_id, &cycle);
    }
    if (rc == 0 && cycle) { /* Python raises, with the path */
        Py_XDECREF(key);
        return delegate(w, value);
    }
    if (rc == 0) {
        rc = kind == K_LUA ? commit_weak(w, TAG_TABLE, value, key)
                           : commit(w, TAG_TABLE, w->memo, key, value); /* held: no weakref */
    }
    if (rc == 0) {
        if (w->len + 4 > w->cap && grow(w, 4) < 0) {
            rc = -1;
        } else {
            put_i32(w, (int32_t)n);
            if (n > 0) rc = push(w, kind, container, value, owner_id);
        }
    }
    Py_XDECREF(key);
    Py_XDECREF(owner_id);
    return rc;
}

static inline PyObject *slot(PyObject *obj, Py_ssize_t offset) {
    return *(PyObject **)((char *)obj + offset);
}

static int write_torch_object(W *w, PyObject *value) {
    PyObject *typename = slot(value, g_off_typename), *version = slot(value, g_off_version);
    PyObject *fields = slot(value, g_off_fields);
    if (typename == NULL || version == NULL || fields == NULL) return delegate(w, value);
    PyTypeObject *kind = Py_TYPE(fields); /* a field table: anything else, Python checks */
    if (kind != g_lua_table && kind != &PyDict_Type && kind != &PyList_Type &&
        kind != &PyTuple_Type)
        return delegate(w, value);
    PyObject *key, *owner_id = NULL;
    int done = back_reference(w, TAG_TORCH, value, w->memo, &key);
    if (done) return done < 0 ? -1 : 0;
    int cycle = w->count >= INT32_MAX_, rc = 0;
    PyObject *header = NULL;
    if (!cycle) {
        header = PyObject_CallFunctionObjArgs(w->class_header, typename, version, NULL);
        if (header == NULL) {
            Py_XDECREF(key);
            return delegate_after_error(w, value);
        }
        cycle = !PyBytes_CheckExact(header);
    }
    if (!cycle) rc = active_id(w, value, &owner_id, &cycle);
    if (rc == 0 && cycle) { /* Python raises, with the path */
        Py_XDECREF(header);
        Py_XDECREF(key);
        return delegate(w, value);
    }
    if (rc == 0) rc = commit_weak(w, TAG_TORCH, value, key);
    if (rc == 0) {
        Py_ssize_t n = PyBytes_GET_SIZE(header);
        if (w->len + n > w->cap && grow(w, n) < 0) {
            rc = -1;
        } else {
            put_raw(w, PyBytes_AS_STRING(header), n);
            rc = push(w, K_SINGLE, fields, value, owner_id);
        }
    }
    Py_XDECREF(header);
    Py_XDECREF(key);
    Py_XDECREF(owner_id);
    return rc;
}

static int write_string(W *w, PyObject *value, const char *data, Py_ssize_t n) {
    if (n >= w->threshold) return delegate(w, value); /* written straight through by Python */
    RESERVE(w, 8 + n);
    put_i32(w, TAG_STRING);
    put_i32(w, (int32_t)n);
    put_raw(w, data, n);
    return 0;
}

static int write_str(W *w, PyObject *value) {
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(value) < 0) return -1;
#endif
    if (PyUnicode_IS_ASCII(value))
        return write_string(w, value, (const char *)PyUnicode_DATA(value),
                            PyUnicode_GET_LENGTH(value));
    PyObject *data = PyUnicode_AsUTF8String(value); /* not AsUTF8: that keeps a copy in the str */
    if (data == NULL) return delegate_after_error(w, value); /* surrogates: Python raises */
    int rc = write_string(w, value, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data));
    Py_DECREF(data);
    return rc;
}

static int write_integer(W *w, PyObject *value) {
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (x == -1 && PyErr_Occurred()) return -1;
    if (overflow || x > MAX_EXACT_INT || x < -MAX_EXACT_INT) return delegate(w, value);
    RESERVE(w, 12);
    put_i32(w, TAG_NUMBER);
    put_f64(w, (double)x);
    return 0;
}

/* Index of the header tables for an array's dtype, or -1 when Python must write it. */
static int element_code(PyArray_Descr *descr) {
    if (!PyArray_ISNBO(descr->byteorder)) return -1;
    switch (descr->type_num) {
        case NPY_UBYTE: return 0;
        case NPY_BYTE: return 1;
        case NPY_HALF: return 5;
        case NPY_FLOAT: return 6;
        case NPY_DOUBLE: return 7;
        case NPY_SHORT:
        case NPY_INT:
        case NPY_LONG:
        case NPY_LONGLONG:
            switch (PyDataType_ELSIZE(descr)) {
                case 2: return 2;
                case 4: return 3;
                case 8: return 4;
                default: return -1;
            }
        default:
            return -1;
    }
}

/* The records of a new tensor and, unless met before, its storage: the array itself. One weak
   reference holds it in both memos. */
static int write_owned_tensor(W *w, PyArrayObject *array, int code, PyObject *key) {
    PyObject *value = (PyObject *)array;
    long long storage = key == NULL ? 0 : memo_get(w->storages, key);
    if (storage < 0) return -1;
    if (w->count + 2 > INT32_MAX_) return delegate(w, value);
    PyObject *holder = NULL;
    if (key != NULL) {
        holder = weak_holder(value, key, w->memo_ref, storage ? NULL : w->storages_ref);
        if (holder == NULL) return -1;
    }
    int rc = commit(w, TAG_TORCH, w->memo, key, holder);
    int ndim = PyArray_NDIM(array);
    PyObject *theader = w->theader[code], *sheader = w->sheader[code];
    Py_ssize_t size = PyArray_SIZE(array), nbytes = PyArray_NBYTES(array);
    Py_ssize_t need = PyBytes_GET_SIZE(theader) + (2 * ndim + 2) * 8 + 8 +
                      PyBytes_GET_SIZE(sheader) + 8 + nbytes;
    if (rc < 0 || (w->len + need > w->cap && grow(w, need) < 0)) {
        Py_XDECREF(holder);
        return -1;
    }
    put_raw(w, PyBytes_AS_STRING(theader), PyBytes_GET_SIZE(theader));
    if (size == 0) { /* Torch's empty tensor: no dimensions, no storage */
        put_i32(w, 0);
        put_long(w, 1);
        put_i32(w, TAG_NIL);
        Py_XDECREF(holder);
        return 0;
    }
    npy_intp *shape = PyArray_DIMS(array);
    put_i32(w, ndim);
    for (int i = 0; i < ndim; i++) put_long(w, shape[i]);
    long long stride[NPY_MAXDIMS];
    long long step = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        stride[i] = step;
        step *= shape[i];
    }
    for (int i = 0; i < ndim; i++) put_long(w, stride[i]);
    put_long(w, 1); /* storageOffset + 1 */
    if (storage > 0) {
        put_i32(w, TAG_TORCH);
        put_i32(w, (int32_t)storage);
        Py_XDECREF(holder);
        return 0;
    }
    rc = commit(w, TAG_TORCH, w->storages, key, holder);
    Py_XDECREF(holder);
    if (rc < 0) return -1;
    put_raw(w, PyBytes_AS_STRING(sheader), PyBytes_GET_SIZE(sheader));
    put_long(w, size);
    put_raw(w, PyArray_DATA(array), nbytes);
    return 0;
}

/* An array that owns its C-contiguous memory is its own storage (tensors.layout_of). */
static int write_tensor(W *w, PyObject *value) {
    PyArrayObject *array = (PyArrayObject *)value;
    int ndim = PyArray_NDIM(array);
    if (PyArray_BASE(array) != NULL || ndim == 0 || !PyArray_IS_C_CONTIGUOUS(array))
        return delegate(w, value);
    npy_intp step = PyArray_ITEMSIZE(array); /* strides as written: C order, size-1 dims too */
    for (int i = ndim - 1; i >= 0; i--) {
        if (PyArray_STRIDE(array, i) != step) return delegate(w, value);
        step *= PyArray_DIM(array, i);
    }
    int code = element_code(PyArray_DESCR(array));
    if (code < 0 || w->theader[code] == NULL) return delegate(w, value);
    Py_ssize_t nbytes = PyArray_NBYTES(array);
    if (nbytes >= w->threshold) return delegate(w, value);
    if (PyDict_GET_SIZE(g_class_of_root) > 0) { /* a CUDA class remembered for this root */
        PyObject *id = PyLong_FromVoidPtr(value);
        if (id == NULL) return -1;
        int found = PyDict_Contains(g_class_of_root, id);
        Py_DECREF(id);
        if (found < 0) return -1;
        if (found) return delegate(w, value);
    }
    PyObject *key;
    int done = back_reference(w, TAG_TORCH, value, w->memo, &key);
    if (done) return done < 0 ? -1 : 0;
    int rc = write_owned_tensor(w, array, code, key);
    Py_XDECREF(key);
    return rc;
}

static int write_value(W *w, PyObject *value) {
    PyTypeObject *type = Py_TYPE(value);
    if (value == Py_None) {
        RESERVE(w, 4);
        put_i32(w, TAG_NIL);
        return 0;
    }
    if (type == &PyUnicode_Type) return write_str(w, value);
    if (type == &PyArray_Type) return write_tensor(w, value);
    if (type == &PyDict_Type) return write_table(w, value, value, K_DICT, PyDict_GET_SIZE(value));
    if (type == &PyLong_Type) return write_integer(w, value);
    if (type == &PyFloat_Type) {
        RESERVE(w, 12);
        put_i32(w, TAG_NUMBER);
        put_f64(w, PyFloat_AS_DOUBLE(value));
        return 0;
    }
    if (type == &PyBool_Type) {
        RESERVE(w, 8);
        put_i32(w, TAG_BOOLEAN);
        put_i32(w, value == Py_True);
        return 0;
    }
    if (type == &PyList_Type || type == &PyTuple_Type)
        return write_table(w, value, value, K_LIST, Py_SIZE(value));
    if (type == g_lua_table) {
        PyObject *entries = slot(value, g_off_entries);
        if (entries == NULL || !PyDict_CheckExact(entries)) return delegate(w, value);
        return write_table(w, value, entries, K_LUA, PyDict_GET_SIZE(entries));
    }
    if (type == g_torch_object) return write_torch_object(w, value);
    if (type == &PyBytes_Type)
        return write_string(w, value, PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value));
    if (type == &PyByteArray_Type)
        return write_string(w, value, PyByteArray_AS_STRING(value), PyByteArray_GET_SIZE(value));
    return delegate(w, value);
}

static int invalid_key(PyObject *key) {
    return key == Py_None || (PyFloat_Check(key) && isnan(PyFloat_AS_DOUBLE(key)));
}

/* GraphWriter._write_graph's loop. */
static int run(W *w, PyObject *root) {
    if (write_value(w, root) < 0) return -1;
    while (w->depth > 0) {
        if (settle(w) < 0) return -1;
        if ((++w->ticks & 0xfff) == 0 && PyErr_CheckSignals() < 0) return -1;
        Frame *f = &w->frames[w->depth - 1];
        PyObject *child = NULL;
        int kind = next_child(f, &child);
        if (kind == C_ERROR) return -1;
        if (kind == C_DONE) {
            if (pop(w) < 0) return -1;
            continue;
        }
        if (kind == C_INDEX) { /* a list's key: its 1-based position */
            RESERVE(w, 12);
            put_i32(w, TAG_NUMBER);
            put_f64(w, (double)f->pos);
            continue;
        }
        int rc = (kind == C_KEY_OBJECT && invalid_key(child)) ? delegate(w, child)
                                                              : write_value(w, child);
        Py_DECREF(child);
        if (rc < 0) return -1;
    }
    return 0;
}

/* write_graph(value, state): write ``value`` as GraphWriter._write_graph would.

state: graph.writer.CompiledState; each headers tuple has one bytes object (or None: Python
writes those) per element type in the order u1 i1 i2 i4 i8 f2 f4 f8.
*/
static PyObject *write_graph(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyTuple_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "write_graph(value, state)");
        return NULL;
    }
    if (g_frame_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "streamser._fastwrite.setup() was not called");
        return NULL;
    }
    W w;
    memset(&w, 0, sizeof(w));
    PyObject *memo, *storages, *theaders, *sheaders, *referenced;
    long long count;
    if (!PyArg_ParseTuple(args[1], "O!OnOLOO!OO!O!O!OOOO!O!in:write_graph", &PyByteArray_Type,
                          &w.buffer, &w.drain, &w.target, &referenced, &count, &memo,
                          &PyDict_Type, &w.memo, &storages, &PyDict_Type, &w.storages,
                          &PyList_Type, &w.stack, &PySet_Type, &w.active, &w.write_nested,
                          &w.set_count, &w.class_header, &PyTuple_Type, &theaders,
                          &PyTuple_Type, &sheaders, &w.long_size, &w.threshold))
        return NULL;
    if (PyTuple_GET_SIZE(theaders) != N_ELEMENTS || PyTuple_GET_SIZE(sheaders) != N_ELEMENTS) {
        PyErr_SetString(PyExc_TypeError, "write_graph: bad header tables");
        return NULL;
    }
    for (int i = 0; i < N_ELEMENTS; i++) {
        PyObject *tensor = PyTuple_GET_ITEM(theaders, i), *storage = PyTuple_GET_ITEM(sheaders, i);
        if (PyBytes_CheckExact(tensor) && PyBytes_CheckExact(storage)) {
            w.theader[i] = tensor;
            w.sheader[i] = storage;
        }
    }
    w.count = count;
    w.referenced = PyObject_IsTrue(referenced);
    if (w.referenced < 0) return NULL;
    if (w.long_size != 4 && w.long_size != 8) {
        PyErr_SetString(PyExc_ValueError, "write_graph: long size must be 4 or 8");
        return NULL;
    }
    if ((w.memo_ref = PyWeakref_NewRef(memo, NULL)) == NULL) return NULL;
    int ok = 0;
    if ((w.storages_ref = PyWeakref_NewRef(storages, NULL)) == NULL) goto done;
    if (PyList_SetSlice(w.stack, 0, PY_SSIZE_T_MAX, NULL) < 0 || PySet_Clear(w.active) < 0)
        goto done;
    ok = run(&w, args[0]) == 0;
    if (ok && flush(&w) < 0) ok = 0;
    if (w.count >= 0) { /* keep what was written and counted, as the Python writer would */
        PyObject *type, *error, *tb;
        PyErr_Fetch(&type, &error, &tb);
        if ((flush(&w) < 0 || store_count(&w) < 0) && ok) ok = 0;
        if (type != NULL) PyErr_Restore(type, error, tb);
    }
done:
    while (w.depth > 0) release(&w.frames[--w.depth]);
    PyMem_Free(w.frames);
    PyMem_Free(w.buf);
    Py_XDECREF(w.memo_ref);
    Py_XDECREF(w.storages_ref);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

/* The offset of an object slot, from its member descriptor (values.lua.NativeLayout). */
static Py_ssize_t slot_offset(PyObject *descr) {
    if (Py_TYPE(descr) != &PyMemberDescr_Type) {
        PyErr_Format(PyExc_TypeError, "%R is not a __slots__ member", descr);
        return -1;
    }
    PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
    if (member->type != Py_T_OBJECT_EX) {
        PyErr_Format(PyExc_TypeError, "%R is not an object slot", descr);
        return -1;
    }
    return member->offset;
}

/* setup(layout, hooks): values.lua.NativeLayout, graph.writer.WriterHooks. */
static PyObject *setup(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    PyObject *lua, *entries, *torch, *typename, *version, *fields, *storage, *array;
    PyObject *storage_typename, *hash_key, *remember, *class_of_root, *frame, *label, *key;
    PyObject *forget;
    if (nargs != 2 || !PyTuple_Check(args[0]) || !PyTuple_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "setup(layout, hooks)");
        return NULL;
    }
    if (!PyArg_ParseTuple(args[0], "O!OO!OOOOOOOOO!:setup", &PyType_Type, &lua, &entries,
                          &PyType_Type, &torch, &typename, &version, &fields, &storage, &array,
                          &storage_typename, &hash_key, &remember, &PyDict_Type,
                          &class_of_root) ||
        !PyArg_ParseTuple(args[1], "OOOO:setup", &frame, &label, &key, &forget))
        return NULL;
    if (slot_offset(label) < 0) return NULL;
    Py_ssize_t off_entries = slot_offset(entries), off_typename = slot_offset(typename);
    Py_ssize_t off_version = slot_offset(version), off_fields = slot_offset(fields);
    if (off_entries < 0 || off_typename < 0 || off_version < 0 || off_fields < 0) return NULL;
    PyObject *empty = PyTuple_New(0);
    PyObject *iter = empty == NULL ? NULL : PyObject_GetIter(empty);
    Py_XDECREF(empty);
    if (iter == NULL) return NULL;
    Py_XSETREF(g_empty_iter, iter);
    Py_XSETREF(g_frame_type, Py_NewRef(frame));
    Py_XSETREF(g_frame_label, Py_NewRef(label));
    Py_XSETREF(g_key, Py_NewRef(key));
    Py_XSETREF(g_forget, Py_NewRef(forget));
    Py_XSETREF(g_lua_table, (PyTypeObject *)Py_NewRef(lua));
    Py_XSETREF(g_torch_object, (PyTypeObject *)Py_NewRef(torch));
    Py_XSETREF(g_class_of_root, Py_NewRef(class_of_root));
    g_off_entries = off_entries;
    g_off_typename = off_typename;
    g_off_version = off_version;
    g_off_fields = off_fields;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"setup", (PyCFunction)(void (*)(void))setup, METH_FASTCALL,
     "setup(layout, hooks): values.lua.NativeLayout and graph.writer.WriterHooks"},
    {"write_graph", (PyCFunction)(void (*)(void))write_graph, METH_FASTCALL,
     "write_graph(value, state): GraphWriter._write_graph for binary streams"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_fastwrite",
    .m_doc = "The binary graph writer's record loop in C (see streamser.graph.writer).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__fastwrite(void) {
    import_array();
    if (PyType_Ready(&RemoverType) < 0) return NULL;
    return PyModule_Create(&module_def);
}
