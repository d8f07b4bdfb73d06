/* The graph reader's loop for binary streams, in C: an accelerator, not a second definition.

   read() follows GraphReader._read_graph (streamser/graph/reader.py), and through it the record
   grammar of streamser/spec/grammar.py, step by step for the common values: nil, numbers,
   strings, booleans, tables, back-references, tensors and storages of every class in
   format.CLASSES, and other torch classes as TorchObject + field table. It returns None
   ("bail") for anything else: functions, registered classes (values.classes), a class payload
   that is not a field table, an unusual version string, any malformed input, any limit
   reached, any geometry numpy might refuse. The caller then undoes what was registered in
   `objects` and noted for the index (this code only ever adds) and runs the Python loop from
   the same position, which reads the value or raises the exact error. So no error message
   lives here, and every check below only has to be at least as strict as the Python one.

   Everything it touches comes in through configure() (values.lua.NativeLayout, the reader's
   ReaderHooks) and read()'s arguments: no attribute is looked up by name.

   Input is hostile: every length is checked against the bytes that are left before it is used,
   arithmetic on sizes and strides is checked for overflow, the frame stack is bounded by
   max_depth, and nothing is allocated from a count that was not checked against the input. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <numpy/arrayobject.h>

enum { OK = 0, BAIL = 1, FAIL = -1 };  /* FAIL: a Python exception is set */

enum {
    TAG_NIL = 0, TAG_NUMBER = 1, TAG_STRING = 2, TAG_TABLE = 3, TAG_TORCH = 4, TAG_BOOLEAN = 5
};

#define MAX_DIMS 64       /* tensors.MAX_DIMS: numpy's limit */
#define MAX_CLASSES 64
#define MAX_NAME 48
#define MAX_EXACT_INT 9007199254740992.0 /* 2**53 */

typedef struct ClassInfo {
    char name[MAX_NAME];
    Py_ssize_t name_len;
    int is_tensor, is_cuda, is_long, element;
    PyArray_Descr *dtype;       /* element.dtype: storages */
    PyArray_Descr *empty_dtype; /* element.dtype.newbyteorder("="): empty tensors */
    PyObject *typename;         /* str */
    PyObject *torch_class;      /* format.TorchClass, for remember_class */
    PyObject *storage_class;    /* the TorchClass of this class's storage */
} ClassInfo;

/* What configure() was given: values.lua.NativeLayout (the types values are made of, their
   __slots__ members as descriptors, helpers) and graph.reader.ReaderHooks. */
static struct {
    int ready;
    PyTypeObject *table_type, *object_type, *storage_type;
    PyObject *table_entries, *object_typename, *object_version, *object_fields;
    PyObject *storage_array, *storage_typename; /* member descriptors (__slots__) */
    PyObject *hash_key, *remember_class, *class_name, *incomplete, *empty_tuple;
    PyObject *registered;                       /* typename -> codec: Python reads those */
    PyObject *class_of_root;                    /* roots with a CUDA class (the index asks) */
    PyObject *place_root, *place_key, *place_fields; /* graph.index places */
    ClassInfo classes[MAX_CLASSES];
    int n_classes;
} cfg;

typedef struct {
    PyObject *container; /* LuaTable or TorchObject */
    PyObject *entries;   /* the table's dict; NULL for a torch object's field object */
    PyObject *key;       /* NULL while the key is still to come */
    int64_t remaining;
    int64_t count;       /* the entries the table announced */
    Py_ssize_t node;     /* the index node of the container (when notes are taken) */
} Frame;

/* A growing array of int64 (an index column, returned as bytes). */
typedef struct {
    int64_t *data;
    Py_ssize_t len, cap;
} Ints;

static int ints_add(Ints *ints, int64_t value)
{
    if (ints->len == ints->cap) {
        Py_ssize_t cap = ints->cap ? 2 * ints->cap : 1024;
        int64_t *data = PyMem_Realloc(ints->data, (size_t)cap * sizeof(int64_t));
        if (data == NULL) {
            PyErr_NoMemory();
            return FAIL;
        }
        ints->data = data;
        ints->cap = cap;
    }
    ints->data[ints->len++] = value;
    return OK;
}

#define STRINGS 256     /* slots of the cache of short strings (table keys, mostly) */
#define SHORT_STRING 24 /* the longest string cached */

static const char *ints_bytes(const Ints *ints)
{
    return ints->data ? (const char *)ints->data : ""; /* y# makes None of NULL */
}

typedef struct {
    const unsigned char *buf;
    Py_ssize_t size, pos;
    int long_size, writeable, referenced;
    int64_t longs_read, indexed;
    int64_t max_depth, max_string, max_table, max_objects;
    PyObject *objects; /* GraphReader.objects: index -> object */
    PyObject *source;  /* the decoder's memoryview */
    PyObject *base;    /* a memoryview of source, base of every storage array; made lazily */
    Frame *stack;
    Py_ssize_t depth, capacity;
    /* graph.index.IndexRecorder: its list columns and storage ids (or NULL), and the integer
       columns of this read, handed back as bytes */
    PyObject *places, *containers, *spots, *values, *storages;
    Ints parents, owners, storage_of;
    PyObject *full; /* the last tensor or storage read in full (borrowed, for the index) */
    int64_t last_index;     /* the index of the last torch object met where a value stands */
    /* The objects registered by this read, by index (Torch numbers them 1, 2, ...), and their
       order: added to `objects` at the end if the caller keeps them. */
    PyObject **table;
    Py_ssize_t table_cap;
    Ints order;
    int keep_objects;
    const ClassInfo *recent_classes[2]; /* the last storage and tensor classes found */
    PyObject *strings[STRINGS];         /* short ASCII strings met, reused (new references) */
    int64_t tensor_storage; /* the index of the last tensor's storage, -1 for none */
} Reader;

/* --- primitives ----------------------------------------------------------------------------- */

static inline uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline int64_t load_long(const unsigned char *p, int long_size)
{
    if (long_size == 4)
        return (int64_t)(int32_t)le32(p);
    return (int64_t)((uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32);
}

static inline int read_int(Reader *r, int32_t *out)
{
    if (r->size - r->pos < 4)
        return BAIL;
    *out = (int32_t)le32(r->buf + r->pos);
    r->pos += 4;
    return OK;
}

/* An int length and that many bytes (BinaryDecoder.read_string's checks). */
static int read_raw_string(Reader *r, const unsigned char **data, Py_ssize_t *len)
{
    int32_t count;
    if (read_int(r, &count) || count < 0 || count > r->size - r->pos || count > r->max_string)
        return BAIL;
    *data = r->buf + r->pos;
    *len = count;
    r->pos += count;
    return OK;
}

/* grammar.decode_string: str when valid UTF-8, else bytes. */
static PyObject *decode_string(const unsigned char *data, Py_ssize_t len)
{
    PyObject *text = PyUnicode_DecodeUTF8((const char *)data, len, NULL);
    if (text != NULL || !PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
        return text;
    PyErr_Clear();
    return PyBytes_FromStringAndSize((const char *)data, len);
}

/* grammar.number_value: integral doubles within 2**53 are ints, except -0.0. */
static PyObject *number_value(double value)
{
    if (isfinite(value) && value == floor(value) && fabs(value) <= MAX_EXACT_INT &&
        (value != 0.0 || !signbit(value)))
        return PyLong_FromLongLong((long long)value);
    return PyFloat_FromDouble(value);
}

/* decode_string, with short ASCII strings (table keys, mostly) shared while the read lasts: the
   same key is then one str whose hash is computed once. */
static PyObject *short_string(Reader *r, const unsigned char *data, Py_ssize_t len)
{
    if (len > SHORT_STRING)
        return decode_string(data, len);
    size_t hash = (size_t)len;
    for (Py_ssize_t i = 0; i < len; i++) {
        if (data[i] >= 128)
            return decode_string(data, len);
        hash = hash * 31 + data[i];
    }
    PyObject **slot = &r->strings[hash % STRINGS];
    PyObject *known = *slot;
    if (known != NULL && PyUnicode_GET_LENGTH(known) == len &&
        memcmp(PyUnicode_1BYTE_DATA(known), data, (size_t)len) == 0)
        return Py_NewRef(known);
    PyObject *text = PyUnicode_FromStringAndSize((const char *)data, len);
    if (text != NULL)
        Py_XSETREF(*slot, Py_NewRef(text));
    return text;
}

static int set_slot(PyObject *descr, PyObject *obj, PyObject *value)
{
    return Py_TYPE(descr)->tp_descr_set(descr, obj, value);
}

/* --- objects -------------------------------------------------------------------------------- */

static PyObject *new_instance(PyTypeObject *type)
{
    return type->tp_new(type, cfg.empty_tuple, NULL); /* object.__new__(type) */
}

/* A LuaTable and its entry dict (both new references). */
static int new_table(PyObject **table, PyObject **entries)
{
    *table = new_instance(cfg.table_type);
    if (*table == NULL)
        return FAIL;
    *entries = PyDict_New();
    if (*entries == NULL || set_slot(cfg.table_entries, *table, *entries) < 0) {
        Py_CLEAR(*table);
        Py_CLEAR(*entries);
        return FAIL;
    }
    return OK;
}

/* _class_name(name): the class name as text (a new reference). */
static PyObject *class_name(const unsigned char *name, Py_ssize_t len)
{
    PyObject *raw = PyBytes_FromStringAndSize((const char *)name, len);
    if (raw == NULL)
        return NULL;
    PyObject *typename = PyObject_CallOneArg(cfg.class_name, raw);
    Py_DECREF(raw);
    return typename;
}

/* TorchObject(typename, None, version) whose fields come later. */
static PyObject *new_torch_object(PyObject *typename, long version)
{
    PyObject *number = PyLong_FromLong(version);
    PyObject *obj = number ? new_instance(cfg.object_type) : NULL;
    if (obj == NULL || set_slot(cfg.object_typename, obj, typename) < 0 ||
        set_slot(cfg.object_version, obj, number) < 0 ||
        set_slot(cfg.object_fields, obj, Py_None) < 0)
        Py_CLEAR(obj);
    Py_XDECREF(number);
    return obj;
}

/* values.remember_class, which matters for CUDA classes only. */
static int remember_class(PyObject *array, PyObject *torch_class)
{
    PyObject *done = PyObject_CallFunctionObjArgs(cfg.remember_class, array, torch_class, NULL);
    Py_XDECREF(done);
    return done ? OK : FAIL;
}

/* Storage._make(array, cls); steals array. */
static PyObject *new_storage(PyObject *array, const ClassInfo *cls)
{
    PyObject *storage = new_instance(cfg.storage_type);
    if (storage == NULL || set_slot(cfg.storage_array, storage, array) < 0 ||
        set_slot(cfg.storage_typename, storage, cls->typename) < 0 ||
        (cls->is_cuda && remember_class(array, cls->torch_class)))
        Py_CLEAR(storage);
    Py_DECREF(array);
    return storage;
}

/* Objects: `seen` looks an index up (back-references) and counts a new object. --------------- */

/* *found: the registered object (new reference) or NULL when the object must be read in
   full. Objects of this read are in its table, objects of earlier reads in `objects`. */
static int seen(Reader *r, int32_t index, PyObject **found)
{
    *found = NULL;
    if (r->referenced) {
        PyObject *known = NULL;
        if (index > 0 && index < r->table_cap) {
            known = r->table[index];
        }
        if (known == NULL && PyDict_GET_SIZE(r->objects) > 0) {
            PyObject *key = PyLong_FromLong(index);
            if (key == NULL)
                return FAIL;
            known = PyDict_GetItemWithError(r->objects, key);
            Py_DECREF(key);
            if (known == NULL && PyErr_Occurred())
                return FAIL;
        }
        if (known == cfg.incomplete)
            return BAIL; /* referenced from inside its own payload */
        if (known != NULL && known != Py_None) {
            Py_INCREF(known);
            *found = known;
            return OK;
        }
    }
    if (++r->indexed > r->max_objects)
        return BAIL;
    return OK;
}

/* Register `value` under `index`, in this read's table (see fast_read). */
static int remember(Reader *r, int32_t index, PyObject *value)
{
    if (!r->referenced)
        return OK;
    if (index <= 0 || index > 4 * r->indexed + 1024)
        return BAIL; /* not numbered as Torch numbers objects: Python reads it */
    if (index >= r->table_cap) {
        Py_ssize_t cap = r->table_cap ? 2 * r->table_cap : 1024;
        while (cap <= index)
            cap *= 2;
        PyObject **table = PyMem_Realloc(r->table, (size_t)cap * sizeof(PyObject *));
        if (table == NULL) {
            PyErr_NoMemory();
            return FAIL;
        }
        memset(table + r->table_cap, 0, (size_t)(cap - r->table_cap) * sizeof(PyObject *));
        r->table = table;
        r->table_cap = cap;
    }
    if (r->table[index] == NULL && ints_add(&r->order, index) < 0)
        return FAIL;
    Py_XSETREF(r->table[index], Py_NewRef(value));
    return OK;
}

/* read_class_header: "V <digit>" then the class name, or an old file's bare class name. */
static int read_class_header(Reader *r, long *version, const unsigned char **name,
                             Py_ssize_t *len)
{
    const unsigned char *first;
    Py_ssize_t n;
    if (read_raw_string(r, &first, &n))
        return BAIL;
    if (n == 3 && first[0] == 'V' && first[1] == ' ' && first[2] >= '0' && first[2] <= '9') {
        *version = first[2] - '0';
        return read_raw_string(r, name, len);
    }
    if (n >= 2 && first[0] == 'V' && first[1] == ' ')
        return BAIL; /* another version string: Python parses it */
    *version = 0;
    *name = first;
    *len = n;
    return OK;
}

static const ClassInfo *find_class(Reader *r, const unsigned char *name, Py_ssize_t len)
{
    for (int k = 0; k < 2; k++) { /* a tensor and its storage class, usually */
        const ClassInfo *cls = r->recent_classes[k];
        if (cls != NULL && cls->name_len == len && memcmp(cls->name, name, (size_t)len) == 0)
            return cls;
    }
    for (int i = 0; i < cfg.n_classes; i++) {
        const ClassInfo *cls = &cfg.classes[i];
        if (cls->name_len == len && memcmp(cls->name, name, (size_t)len) == 0) {
            r->recent_classes[cls->is_tensor] = cls;
            return cls;
        }
    }
    return NULL;
}

/* --- storages and tensors ------------------------------------------------------------------- */

/* np.frombuffer(buffer, dtype, count, offset=pos), with one memoryview of the decoder's buffer
   as the base of all arrays of this read (never an ndarray: each storage is its own root). */
static PyObject *buffer_array(Reader *r, PyArray_Descr *dtype, npy_intp count, Py_ssize_t pos)
{
    if (r->base == NULL) {
        r->base = PyMemoryView_FromObject(r->source);
        if (r->base == NULL)
            return NULL;
    }
    Py_INCREF(dtype);
    PyObject *array = PyArray_NewFromDescr(&PyArray_Type, dtype, 1, &count, NULL,
                                           (void *)(r->buf + pos),
                                           r->writeable ? NPY_ARRAY_WRITEABLE : 0, NULL);
    if (array == NULL)
        return NULL;
    Py_INCREF(r->base);
    if (PyArray_SetBaseObject((PyArrayObject *)array, r->base) < 0) {
        Py_DECREF(array);
        return NULL;
    }
    return array;
}

/* _read_storage after the class header: long count, then count elements. *array (optional)
   is the storage's array, borrowed from *out. */
static int read_storage(Reader *r, const ClassInfo *cls, PyObject **out, PyObject **array_out)
{
    if (r->size - r->pos < r->long_size)
        return BAIL;
    int64_t count = load_long(r->buf + r->pos, r->long_size);
    r->pos += r->long_size;
    r->longs_read += 1 + cls->is_long;
    if (count < 0)
        return BAIL;
    int widen = cls->is_long && r->long_size == 4; /* b32 Longs: int32 in the file */
    Py_ssize_t itemsize = widen ? 4 : PyDataType_ELSIZE(cls->dtype);
    PyObject *array;
    if (count == 0) {
        npy_intp zero = 0;
        Py_INCREF(cls->dtype);
        array = PyArray_Empty(1, &zero, cls->dtype, 0);
    } else {
        if (count > (r->size - r->pos) / itemsize)
            return BAIL;
        npy_intp n = (npy_intp)count;
        if (widen) {
            Py_INCREF(cls->dtype);
            array = PyArray_Empty(1, &n, cls->dtype, 0);
            if (array != NULL) {
                int64_t *to = (int64_t *)PyArray_DATA((PyArrayObject *)array);
                const unsigned char *from = r->buf + r->pos;
                for (npy_intp i = 0; i < n; i++)
                    to[i] = (int32_t)le32(from + 4 * i);
            }
        } else {
            array = buffer_array(r, cls->dtype, n, r->pos);
        }
        r->pos += (Py_ssize_t)count * itemsize;
    }
    if (array == NULL)
        return FAIL;
    if (array_out != NULL)
        *array_out = array;
    *out = new_storage(array, cls);
    return *out ? OK : FAIL;
}

/* tensors.tensor_view for the shapes it views without numpy's help; BAIL for the rest. */
static int tensor_view(PyArrayObject *storage, int ndim, const int64_t *sizes,
                       const int64_t *strides, int64_t offset_plus_one, PyObject **out)
{
    if (PyArray_NDIM(storage) != 1 || !PyArray_IS_C_CONTIGUOUS(storage))
        return BAIL;
    int64_t n = PyArray_DIM(storage, 0), itemsize = PyArray_ITEMSIZE(storage);
    if (offset_plus_one < 1 || offset_plus_one - 1 > n || itemsize <= 0)
        return BAIL;
    int64_t offset = offset_plus_one - 1, last = offset, expected = 1, step;
    int contiguous = 1;
    npy_intp dims[MAX_DIMS], byte_strides[MAX_DIMS];
    for (int i = ndim - 1; i >= 0; i--) {
        int64_t size = sizes[i], stride = strides[i];
        if (size <= 0 || stride < 0) /* size 0: numpy decides; Python's path takes it */
            return BAIL;
        if (__builtin_mul_overflow(size - 1, stride, &step) ||
            __builtin_add_overflow(last, step, &last) ||
            __builtin_mul_overflow(stride, itemsize, &step) || step > NPY_MAX_INTP)
            return BAIL;
        if (stride != expected) /* a size-1 dimension keeps its stride too: exact geometry */
            contiguous = 0;
        if (__builtin_mul_overflow(expected, size, &expected) || size > NPY_MAX_INTP)
            return BAIL;
        dims[i] = (npy_intp)size;
        byte_strides[i] = (npy_intp)step;
    }
    if (__builtin_mul_overflow(expected, itemsize, &step) || step > NPY_MAX_INTP)
        return BAIL;
    if (ndim == 0) {
        dims[0] = 0; /* Torch's 0-d tensor with a storage: a size-0 view at its offset */
        ndim = 1;
        contiguous = 1;
    } else if (last >= n) {
        return BAIL;
    }
    PyArray_Descr *dtype = PyArray_DESCR(storage);
    Py_INCREF(dtype);
    PyObject *view = PyArray_NewFromDescr(
        &PyArray_Type, dtype, ndim, dims, contiguous ? NULL : byte_strides,
        PyArray_BYTES(storage) + offset * itemsize,
        PyArray_ISWRITEABLE(storage) ? NPY_ARRAY_WRITEABLE : 0, NULL);
    if (view == NULL)
        return FAIL;
    Py_INCREF(storage);
    if (PyArray_SetBaseObject((PyArrayObject *)view, (PyObject *)storage) < 0) {
        Py_DECREF(view);
        return FAIL;
    }
    *out = view;
    return OK;
}

/* A storage object met before, as a tensor of `tensor_class` may use it: its array. */
static int known_storage_array(PyObject *storage, const ClassInfo *tensor_class, PyObject **out)
{
    if (!PyObject_TypeCheck(storage, cfg.storage_type))
        return BAIL;
    PyObject *typename = PyObject_GetAttrString(storage, "typename");
    if (typename == NULL)
        return FAIL;
    int compatible = 0;
    for (int i = 0; PyUnicode_CheckExact(typename) && i < cfg.n_classes; i++) {
        const ClassInfo *cls = &cfg.classes[i];
        if (!cls->is_tensor && PyUnicode_Compare(typename, cls->typename) == 0) {
            compatible = cls->element == tensor_class->element;
            break;
        }
    }
    Py_DECREF(typename);
    if (PyErr_Occurred())
        return FAIL;
    if (!compatible)
        return BAIL;
    *out = PyObject_GetAttrString(storage, "array");
    if (*out == NULL)
        return FAIL;
    if (!PyArray_CheckExact(*out)) {
        Py_CLEAR(*out);
        return BAIL;
    }
    return OK;
}

/* _read_tensor_storage: a tensor's storage object (new or a back-reference), as its array. */
static int read_tensor_storage(Reader *r, const ClassInfo *tensor_class, PyObject **array)
{
    int32_t index;
    PyObject *found, *storage = NULL;
    if (read_int(r, &index))
        return BAIL;
    r->tensor_storage = index;
    int status = seen(r, index, &found);
    if (status == OK && found != NULL) {
        status = known_storage_array(found, tensor_class, array);
        Py_DECREF(found);
        return status;
    }
    long version;
    const unsigned char *name;
    Py_ssize_t len;
    const ClassInfo *cls = NULL;
    if (status == OK && read_class_header(r, &version, &name, &len) == OK)
        cls = find_class(r, name, len);
    if (status == OK && (cls == NULL || cls->is_tensor || cls->element != tensor_class->element))
        status = BAIL;
    /* (a storage's payload holds no objects: unlike Python, no placeholder is registered
       first, and the dict's order comes out the same) */
    PyObject *data = NULL; /* borrowed from storage */
    if (status == OK)
        status = read_storage(r, cls, &storage, &data);
    if (status == OK)
        status = remember(r, index, storage);
    if (status == OK)
        *array = Py_NewRef(data);
    Py_XDECREF(storage);
    return status;
}

/* _read_tensor after the class header: geometry, then a storage or nil. */
static int read_tensor(Reader *r, const ClassInfo *cls, PyObject **out)
{
    int32_t ndim, tag;
    if (read_int(r, &ndim) || ndim < 0 || ndim > MAX_DIMS)
        return BAIL;
    Py_ssize_t need = (2 * (Py_ssize_t)ndim + 1) * r->long_size;
    if (need > r->size - r->pos)
        return BAIL;
    int64_t sizes[MAX_DIMS], strides[MAX_DIMS];
    const unsigned char *p = r->buf + r->pos;
    int all_sizes = ndim > 0;
    for (int i = 0; i < ndim; i++) {
        sizes[i] = load_long(p + (Py_ssize_t)i * r->long_size, r->long_size);
        strides[i] = load_long(p + (Py_ssize_t)(ndim + i) * r->long_size, r->long_size);
        all_sizes = all_sizes && sizes[i] != 0;
    }
    int64_t offset_plus_one = load_long(p + (Py_ssize_t)2 * ndim * r->long_size, r->long_size);
    r->pos += need;
    r->longs_read += 2 * (int64_t)ndim + 1;
    if (read_int(r, &tag))
        return BAIL;
    if (tag == TAG_NIL) {
        r->tensor_storage = -1;
        if (all_sizes)
            return BAIL; /* a tensor with elements and no storage */
        npy_intp zero = 0;
        Py_INCREF(cls->empty_dtype);
        *out = PyArray_Empty(1, &zero, cls->empty_dtype, 0);
        if (*out == NULL)
            return FAIL;
        if (cls->is_cuda && remember_class(*out, cls->storage_class)) {
            Py_CLEAR(*out);
            return FAIL;
        }
        return OK;
    }
    if (tag != TAG_TORCH)
        return BAIL;
    PyObject *array = NULL;
    int status = read_tensor_storage(r, cls, &array);
    if (status == OK)
        status = tensor_view((PyArrayObject *)array, ndim, sizes, strides, offset_plus_one, out);
    Py_XDECREF(array);
    return status;
}

/* --- notes for the index (graph.index.IndexRecorder) ---------------------------------------- */

/* Where the next value sits: the innermost frame's node and the key it is read under (a new
   reference), as GraphReader._place gives them. */
static PyObject *place_of_next(Reader *r, Py_ssize_t *node)
{
    if (r->depth == 0) {
        *node = -1;
        return Py_NewRef(cfg.place_root);
    }
    Frame *frame = &r->stack[r->depth - 1];
    *node = frame->node;
    if (frame->entries == NULL)
        return Py_NewRef(cfg.place_fields);
    return Py_NewRef(frame->key == NULL ? cfg.place_key : frame->key);
}

/* Note where the value about to be read sits: its node in `nodes`, its place in `places`,
   the value in `items`. */
static int note(Reader *r, Ints *nodes, PyObject *places, PyObject *items, PyObject *item)
{
    Py_ssize_t node;
    PyObject *place = place_of_next(r, &node);
    int failed = ints_add(nodes, node) < 0 || PyList_Append(places, place) < 0 ||
                 PyList_Append(items, item) < 0;
    Py_DECREF(place);
    return failed ? FAIL : OK;
}

/* IndexRecorder.entry: a tensor read in full, or a storage the first time it is a value;
   with the index of its storage in the file. */
static int note_entry(Reader *r, PyObject *value)
{
    int is_storage = Py_TYPE(value) == cfg.storage_type;
    int64_t storage = is_storage ? r->last_index : r->tensor_storage;
    if (is_storage) {
        PyObject *id = PyLong_FromVoidPtr(value);
        if (id == NULL)
            return FAIL;
        int known = PySet_Contains(r->storages, id);
        if (known == 0)
            known = PySet_Add(r->storages, id) < 0 ? -1 : 0;
        Py_DECREF(id);
        if (known != 0)
            return known < 0 ? FAIL : OK;
    }
    if (ints_add(&r->storage_of, storage) < 0)
        return FAIL;
    return note(r, &r->owners, r->spots, r->values, value);
}

/* --- the machine ---------------------------------------------------------------------------- */

/* Push a frame; steals container and entries. */
static int push(Reader *r, PyObject *container, PyObject *entries, int64_t remaining)
{
    if (r->depth >= r->max_depth) {
        Py_DECREF(container);
        Py_XDECREF(entries);
        return BAIL;
    }
    Py_ssize_t node = -1;
    if (r->places != NULL) {
        node = PyList_GET_SIZE(r->places);
        if (note(r, &r->parents, r->places, r->containers, container) < 0) {
            Py_DECREF(container);
            Py_XDECREF(entries);
            return FAIL;
        }
    }
    if (r->depth == r->capacity) {
        Py_ssize_t capacity = r->capacity ? 2 * r->capacity : 32;
        Frame *stack = PyMem_Realloc(r->stack, (size_t)capacity * sizeof(Frame));
        if (stack == NULL) {
            Py_DECREF(container);
            Py_XDECREF(entries);
            PyErr_NoMemory();
            return FAIL;
        }
        r->stack = stack;
        r->capacity = capacity;
    }
    Frame *frame = &r->stack[r->depth++];
    frame->container = container;
    frame->entries = entries;
    frame->key = NULL;
    frame->remaining = remaining;
    frame->count = remaining;
    frame->node = node;
    return OK;
}

static int read_table(Reader *r, PyObject **out)
{
    int32_t index, count;
    PyObject *table, *entries;
    if (read_int(r, &index))
        return BAIL;
    int status = seen(r, index, out);
    if (status != OK || *out != NULL)
        return status;
    if (read_int(r, &count) || count < 0 || 8 * (int64_t)count > r->size - r->pos ||
        count > r->max_table)
        return BAIL;
    status = new_table(&table, &entries);
    if (status == OK && (status = remember(r, index, table)) != OK) {
        Py_CLEAR(table);
        Py_CLEAR(entries);
    }
    if (status != OK)
        return status;
    if (count == 0) {
        Py_DECREF(entries);
        *out = table;
        return OK;
    }
    return push(r, table, entries, count); /* *out stays NULL: the table comes when done */
}

static int read_torch(Reader *r, PyObject **out)
{
    int32_t index;
    if (read_int(r, &index))
        return BAIL;
    r->last_index = index;
    int status = seen(r, index, out);
    if (status != OK || *out != NULL)
        return status;
    long version;
    const unsigned char *name;
    Py_ssize_t len;
    if (read_class_header(r, &version, &name, &len))
        return BAIL;
    const ClassInfo *cls = find_class(r, name, len);
    if (cls == NULL) {
        /* A registered class, or a payload that is not a field table: Python reads it. */
        if (r->size - r->pos < 4 || (int32_t)le32(r->buf + r->pos) != TAG_TABLE)
            return BAIL;
        PyObject *typename = class_name(name, len);
        int registered = typename == NULL ? -1 : PyDict_Contains(cfg.registered, typename);
        PyObject *obj = registered == 0 ? new_torch_object(typename, version) : NULL;
        Py_XDECREF(typename);
        if (registered > 0)
            return BAIL;
        status = obj == NULL ? FAIL : remember(r, index, obj);
        if (status != OK) {
            Py_XDECREF(obj);
            return status;
        }
        return push(r, obj, NULL, 1);
    }
    PyObject *value = NULL;
    if (cls->is_tensor) /* its storage may not refer to it: a placeholder until it is read */
        status = remember(r, index, cfg.incomplete);
    if (status == OK)
        status = cls->is_tensor ? read_tensor(r, cls, &value) : read_storage(r, cls, &value, NULL);
    if (status == OK)
        status = remember(r, index, value);
    if (status != OK) {
        Py_XDECREF(value);
        return status;
    }
    *out = value;
    r->full = value;
    return OK;
}

/* One value: *out is a new reference, or NULL when a frame was pushed. */
static int read_value(Reader *r, PyObject **out)
{
    int32_t tag, flag;
    *out = NULL;
    if (read_int(r, &tag))
        return BAIL;
    switch (tag) {
    case TAG_NIL:
        Py_INCREF(Py_None);
        *out = Py_None;
        return OK;
    case TAG_NUMBER: {
        if (r->size - r->pos < 8)
            return BAIL;
        double number = PyFloat_Unpack8((const char *)(r->buf + r->pos), 1);
        if (number == -1.0 && PyErr_Occurred())
            return FAIL;
        r->pos += 8;
        *out = number_value(number);
        return *out ? OK : FAIL;
    }
    case TAG_STRING: {
        const unsigned char *data;
        Py_ssize_t len;
        if (read_raw_string(r, &data, &len))
            return BAIL;
        *out = short_string(r, data, len);
        return *out ? OK : FAIL;
    }
    case TAG_TABLE:
        return read_table(r, out);
    case TAG_TORCH: {
        int status = read_torch(r, out);
        if (status == OK && r->values != NULL && *out != NULL &&
            (*out == r->full || Py_TYPE(*out) == cfg.storage_type) && note_entry(r, *out) < 0) {
            Py_CLEAR(*out);
            status = FAIL;
        }
        r->full = NULL;
        return status;
    }
    case TAG_BOOLEAN:
        if (read_int(r, &flag))
            return BAIL;
        *out = PyBool_FromLong(flag == 1);
        return OK;
    default:
        return BAIL; /* functions and unknown tags */
    }
}

/* _TableFrame.store: entries[_hash_key(key)] = (key, value). */
static int store(Frame *frame, PyObject *key, PyObject *value)
{
    PyObject *hashed;
    if (PyUnicode_CheckExact(key) || PyLong_CheckExact(key) ||
        (PyFloat_CheckExact(key) && !isnan(PyFloat_AS_DOUBLE(key)))) {
        Py_INCREF(key);
        hashed = key;
    } else {
        hashed = PyObject_CallOneArg(cfg.hash_key, key);
        if (hashed == NULL) {
            PyErr_Clear(); /* a NaN key: Python raises the FormatError */
            return BAIL;
        }
    }
    PyObject *pair = PyTuple_Pack(2, key, value);
    /* A pair of values that cannot be in a cycle (strings, numbers, arrays) needs no watching
       by the cyclic collector, whose first pass after a read would otherwise visit them all;
       the table's dict then stays untracked too. (Python untracks such tuples itself, at
       that first pass.) */
    if (pair != NULL && !PyObject_GC_IsTracked(key) && !PyObject_GC_IsTracked(value))
        PyObject_GC_UnTrack(pair);
    int status = pair == NULL || PyDict_SetItem(frame->entries, hashed, pair) < 0 ? FAIL : OK;
    Py_XDECREF(pair);
    Py_DECREF(hashed);
    return status;
}

/* Give `value` (stolen) to the innermost frame; *out is the finished container or NULL. */
static int deliver(Reader *r, PyObject *value, PyObject **out)
{
    Frame *frame = &r->stack[r->depth - 1];
    *out = NULL;
    if (frame->entries == NULL) { /* a torch object's fields */
        int failed = set_slot(cfg.object_fields, frame->container, value) < 0;
        Py_DECREF(value);
        if (failed)
            return FAIL;
    } else if (frame->key == NULL) {
        if (value == Py_None) {
            Py_DECREF(value);
            return BAIL; /* a nil key */
        }
        frame->key = value;
        return OK;
    } else {
        PyObject *key = frame->key;
        frame->key = NULL;
        int status = store(frame, key, value);
        Py_DECREF(key);
        Py_DECREF(value);
        if (status != OK || --frame->remaining > 0)
            return status;
        if (PyDict_GET_SIZE(frame->entries) < frame->count)
            return BAIL; /* a key came twice: Python keeps the index right for that */
        Py_CLEAR(frame->entries);
    }
    *out = frame->container;
    frame->container = NULL;
    r->depth--;
    return OK;
}

static int run(Reader *r, PyObject **result)
{
    for (;;) {
        PyObject *value;
        int status = read_value(r, &value);
        while (status == OK && value != NULL) {
            if (r->depth == 0) {
                *result = value;
                return OK;
            }
            status = deliver(r, value, &value);
        }
        if (status != OK)
            return status;
    }
}

/* The objects this read registered, into `objects`, in the order they were registered. */
static int keep_objects(Reader *r)
{
    for (Py_ssize_t i = 0; i < r->order.len; i++) {
        int64_t index = r->order.data[i];
        PyObject *key = PyLong_FromLongLong(index);
        int failed = key == NULL || PyDict_SetItem(r->objects, key, r->table[index]) < 0;
        Py_XDECREF(key);
        if (failed)
            return FAIL;
    }
    return OK;
}

static int64_t clamped(PyObject *number, int *failed)
{
    int overflow;
    long long value = PyLong_AsLongLongAndOverflow(number, &overflow);
    if (value == -1 && PyErr_Occurred())
        *failed = 1;
    if (overflow)
        return overflow > 0 ? INT64_MAX : INT64_MIN;
    return value;
}

PyDoc_STRVAR(read_doc,
"read(buffer, pos, long_size, longs_read, indexed, objects, referenced, max_depth, max_string,\n"
"     max_table, max_objects, notes, keep_objects)\n"
"--\n\n"
"One value from ``buffer`` (a 1-D byte memoryview) at ``pos``, as GraphReader reads it:\n"
"(value, pos, longs_read, indexed) after it, or None to let the Python reader do it. The\n"
"indexed objects it reads are added to ``objects`` at the end when ``keep_objects`` (a\n"
"stream of several values refers back to them; a single value needs none); ``notes`` (None, or an IndexRecorder's places,\n"
"containers, spots and values lists and its storage ids) gets the index notes, and the\n"
"result three more items: the parents, owners and storage_of columns of this read, as bytes\n"
"of int64. After None, the caller removes what was added.");

static PyObject *fast_read(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 13) {
        PyErr_Format(PyExc_TypeError, "read() takes 13 arguments (%zd given)", nargs);
        return NULL;
    }
    if (!cfg.ready) {
        PyErr_SetString(PyExc_RuntimeError, "streamser._fastread.configure() was not called");
        return NULL;
    }
    if (!PyDict_CheckExact(args[5])) {
        PyErr_SetString(PyExc_TypeError, "objects must be a dict");
        return NULL;
    }
    Reader r = {0};
    if (args[11] != Py_None &&
        !PyArg_ParseTuple(args[11], "O!O!O!O!O!", &PyList_Type, &r.places, &PyList_Type,
                          &r.containers, &PyList_Type, &r.spots, &PyList_Type, &r.values,
                          &PySet_Type, &r.storages))
        return NULL;
    int failed = 0;
    int64_t pos = clamped(args[1], &failed);
    int64_t long_size = clamped(args[2], &failed);
    r.longs_read = clamped(args[3], &failed);
    r.indexed = clamped(args[4], &failed);
    r.objects = args[5];
    r.referenced = PyObject_IsTrue(args[6]);
    r.max_depth = clamped(args[7], &failed);
    r.max_string = clamped(args[8], &failed);
    r.max_table = clamped(args[9], &failed);
    r.max_objects = clamped(args[10], &failed);
    r.keep_objects = PyObject_IsTrue(args[12]);
    if (failed || r.referenced < 0 || r.keep_objects < 0)
        return NULL;
    if ((long_size != 4 && long_size != 8) || r.longs_read < 0 || r.longs_read > INT64_MAX / 2 ||
        r.indexed < 0 || r.indexed == INT64_MAX)
        Py_RETURN_NONE;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (pos < 0 || pos > view.len) {
        PyBuffer_Release(&view);
        Py_RETURN_NONE;
    }
    r.buf = view.buf;
    r.size = view.len;
    r.pos = (Py_ssize_t)pos;
    r.long_size = (int)long_size;
    r.writeable = !view.readonly;
    r.source = args[0];

    PyObject *value = NULL, *result = NULL;
    int status = run(&r, &value);
    if (status == OK && r.keep_objects && keep_objects(&r) < 0) {
        Py_CLEAR(value);
        status = FAIL;
    }
    for (Py_ssize_t i = 0; i < r.order.len; i++)
        Py_XDECREF(r.table[r.order.data[i]]);
    PyMem_Free(r.table);
    PyMem_Free(r.order.data);
    for (Py_ssize_t i = 0; i < r.depth; i++) {
        Py_XDECREF(r.stack[i].container);
        Py_XDECREF(r.stack[i].entries);
        Py_XDECREF(r.stack[i].key);
    }
    PyMem_Free(r.stack);
    for (int k = 0; k < STRINGS; k++)
        Py_XDECREF(r.strings[k]);
    Py_XDECREF(r.base);
    PyBuffer_Release(&view);
    if (status == OK && r.places == NULL)
        result = Py_BuildValue("(NnLL)", value, r.pos, (long long)r.longs_read,
                               (long long)r.indexed);
    else if (status == OK)
        result = Py_BuildValue("(NnLLy#y#y#)", value, r.pos, (long long)r.longs_read,
                               (long long)r.indexed, ints_bytes(&r.parents), r.parents.len * 8,
                               ints_bytes(&r.owners), r.owners.len * 8,
                               ints_bytes(&r.storage_of), r.storage_of.len * 8);
    else if (status == BAIL)
        result = Py_NewRef(Py_None);
    PyMem_Free(r.parents.data);
    PyMem_Free(r.owners.data);
    PyMem_Free(r.storage_of.data);
    return result;
}

/* --- the index's rows (graph.index.tensor_infos) ---------------------------------------------- */

#define SHAPES 8 /* recent shape and stride tuples, shared between rows */

typedef struct {
    Py_ssize_t start, len;
} Span;

/* A plain path part as ASCII text: sep + data + tail (".weight", "[3]", "weight"). */
typedef struct {
    const char *sep, *data, *tail;
    Py_ssize_t len;
    char digits[24];
} Part;

typedef struct {
    const int64_t *parents; /* the index's columns (graph.index.IndexColumns) */
    PyObject *places, *containers;
    PyObject *join, *row_of, *row_type;
    PyObject *recent[SHAPES]; /* tuples of ints, reused while rows repeat them */
    int next_recent;
    /* Each node's path, built once: ASCII text in `pool` (most paths), or a str in `texts`. */
    PyObject **texts;
    Span *spans; /* into the pool; len -1: in texts; -2: not built yet */
    char *pool;
    Py_ssize_t pool_len, pool_cap;
    Py_ssize_t n_nodes;
    char *base;         /* the file's mapping, or NULL */
    Py_ssize_t size;
} Rows;

/* `place` as plain ASCII text: 1 (in *part), 0 for a transparent place (a torch object's
   fields, the root), -1 when it is not plain (Python or the general path builds it). */
static int plain_part(PyObject *place, int first, Part *part)
{
    if (place == cfg.place_fields || place == cfg.place_root)
        return 0;
    part->tail = "";
    if (PyUnicode_CheckExact(place) && PyUnicode_IS_ASCII(place) &&
        PyUnicode_IsIdentifier(place) == 1) {
        part->sep = first ? "" : ".";
        part->data = (const char *)PyUnicode_1BYTE_DATA(place);
        part->len = PyUnicode_GET_LENGTH(place);
        return 1;
    }
    if (!PyLong_CheckExact(place))
        return -1;
    int overflow;
    long long number = PyLong_AsLongLongAndOverflow(place, &overflow);
    if (overflow || (number == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return -1;
    }
    char reversed[24];
    int n = 0;
    unsigned long long magnitude = number < 0 ? 0ULL - (unsigned long long)number
                                              : (unsigned long long)number;
    do {
        reversed[n++] = (char)('0' + magnitude % 10);
        magnitude /= 10;
    } while (magnitude);
    int length = 0;
    if (number < 0)
        part->digits[length++] = '-';
    while (n)
        part->digits[length++] = reversed[--n];
    part->sep = "[";
    part->data = part->digits;
    part->len = length;
    part->tail = "]";
    return 1;
}

/* Append prefix (a pool span) + part to the pool: the new span. */
static int pool_add(Rows *rows, Span prefix, const Part *part, Span *out)
{
    Py_ssize_t s = (Py_ssize_t)strlen(part->sep), e = (Py_ssize_t)strlen(part->tail);
    Py_ssize_t need = prefix.len + s + part->len + e;
    if (rows->pool_len + need > rows->pool_cap) {
        Py_ssize_t cap = rows->pool_cap ? 2 * rows->pool_cap : 1 << 16;
        while (cap < rows->pool_len + need)
            cap *= 2;
        char *pool = PyMem_Realloc(rows->pool, (size_t)cap);
        if (pool == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        rows->pool = pool;
        rows->pool_cap = cap;
    }
    char *to = rows->pool + rows->pool_len;
    memmove(to, rows->pool + prefix.start, (size_t)prefix.len);
    memcpy(to + prefix.len, part->sep, (size_t)s);
    memcpy(to + prefix.len + s, part->data, (size_t)part->len);
    memcpy(to + prefix.len + s + part->len, part->tail, (size_t)e);
    out->start = rows->pool_len;
    out->len = need;
    rows->pool_len += need;
    return 0;
}

/* A str of prefix (a pool span) + part. */
static PyObject *span_string(Rows *rows, Span prefix, const Part *part)
{
    Py_ssize_t s = part ? (Py_ssize_t)strlen(part->sep) : 0;
    Py_ssize_t e = part ? (Py_ssize_t)strlen(part->tail) : 0, n = part ? part->len : 0;
    PyObject *out = PyUnicode_New(prefix.len + s + n + e, 127);
    if (out == NULL)
        return NULL;
    char *to = (char *)PyUnicode_1BYTE_DATA(out);
    memcpy(to, rows->pool + prefix.start, (size_t)prefix.len);
    if (part != NULL) {
        memcpy(to + prefix.len, part->sep, (size_t)s);
        memcpy(to + prefix.len + s, part->data, (size_t)n);
        memcpy(to + prefix.len + s + n, part->tail, (size_t)e);
    }
    return out;
}

/* prefix + separator + text, as one new str (any characters). */
static PyObject *concat(PyObject *prefix, const char *sep, PyObject *text, const char *tail)
{
    Py_ssize_t a = PyUnicode_GET_LENGTH(prefix), b = PyUnicode_GET_LENGTH(text);
    Py_ssize_t s = (Py_ssize_t)strlen(sep), e = (Py_ssize_t)strlen(tail);
    Py_UCS4 max = PyUnicode_MAX_CHAR_VALUE(prefix);
    if (PyUnicode_MAX_CHAR_VALUE(text) > max)
        max = PyUnicode_MAX_CHAR_VALUE(text);
    PyObject *out = PyUnicode_New(a + s + b + e, max < 127 ? 127 : max);
    if (out == NULL)
        return NULL;
    int kind = PyUnicode_KIND(out);
    void *data = PyUnicode_DATA(out);
    if (PyUnicode_CopyCharacters(out, 0, prefix, 0, a) < 0 ||
        PyUnicode_CopyCharacters(out, a + s, text, 0, b) < 0) {
        Py_DECREF(out);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < s; i++)
        PyUnicode_WRITE(kind, data, a + i, (Py_UCS4)sep[i]);
    for (Py_ssize_t i = 0; i < e; i++)
        PyUnicode_WRITE(kind, data, a + s + b + i, (Py_UCS4)tail[i]);
    return out;
}

static int node_ready(Rows *rows, Py_ssize_t node);

/* Node `node`'s path as a str (a new reference); "" for -1. */
static PyObject *node_string(Rows *rows, Py_ssize_t node)
{
    if (node < 0)
        return PyUnicode_New(0, 0);
    if (node_ready(rows, node) < 0)
        return NULL;
    if (rows->spans[node].len >= 0) { /* made a str once asked for as one */
        PyObject *text = span_string(rows, rows->spans[node], NULL);
        if (text == NULL)
            return NULL;
        rows->texts[node] = Py_NewRef(text);
        rows->spans[node].len = -1;
        return text;
    }
    return Py_NewRef(rows->texts[node]);
}

/* The path of `child` at `place` in node `node`, as a str: from the pool when it is ASCII
   and plain, else joined here or (identity keys, markers) by Python's Paths.join. */
static PyObject *join_path(Rows *rows, Py_ssize_t node, PyObject *place, PyObject *child)
{
    if (node >= 0 && node_ready(rows, node) < 0)
        return NULL;
    Span prefix = {0, 0};
    if (node < 0 || rows->spans[node].len >= 0) {
        if (node >= 0)
            prefix = rows->spans[node];
        Part part;
        int plain = plain_part(place, prefix.len == 0, &part);
        if (plain >= 0)
            return span_string(rows, prefix, plain ? &part : NULL);
    }
    PyObject *text = node_string(rows, node), *out = NULL;
    if (text == NULL)
        return NULL;
    int first = PyUnicode_GET_LENGTH(text) == 0;
    if (place == cfg.place_fields || place == cfg.place_root)
        out = Py_NewRef(text);
    else if (PyUnicode_CheckExact(place) && PyUnicode_IsIdentifier(place) == 1)
        out = first ? Py_NewRef(place) : concat(text, ".", place, "");
    else
        out = PyObject_CallFunction(rows->join, "nOO", node, place, child);
    Py_DECREF(text);
    return out;
}

/* Build node `node`'s path (and its parents' first), without recursion. */
static int node_ready(Rows *rows, Py_ssize_t node)
{
    if (node >= rows->n_nodes) {
        PyErr_SetString(PyExc_IndexError, "index entry names an unknown node");
        return -1;
    }
    while (rows->spans[node].len == -2) {
        /* the deepest ancestor still without a path: build it, then come back down */
        Py_ssize_t at = node, parent;
        for (;;) {
            parent = (Py_ssize_t)rows->parents[at];
            if (parent < 0 || rows->spans[parent].len != -2)
                break;
            if (parent >= at) {
                PyErr_SetString(PyExc_ValueError, "index nodes out of order");
                return -1;
            }
            at = parent;
        }
        parent = parent < 0 ? -1 : parent;
        PyObject *place = PyList_GET_ITEM(rows->places, at);
        if (parent < 0 || rows->spans[parent].len >= 0) {
            Span prefix = parent < 0 ? (Span){0, 0} : rows->spans[parent];
            Part part;
            int plain = plain_part(place, prefix.len == 0, &part);
            if (plain == 0) {
                rows->spans[at] = prefix;
                continue;
            }
            if (plain == 1) {
                if (pool_add(rows, prefix, &part, &rows->spans[at]) < 0)
                    return -1;
                continue;
            }
        }
        PyObject *text = join_path(rows, parent, place, PyList_GET_ITEM(rows->containers, at));
        if (text == NULL)
            return -1;
        rows->texts[at] = text;
        rows->spans[at].len = -1;
    }
    return 0;
}

static PyObject *offset_in(Rows *rows, const char *data)
{
    if (rows->base == NULL || data < rows->base || data - rows->base >= rows->size)
        Py_RETURN_NONE;
    return PyLong_FromSsize_t(data - rows->base);
}

/* The CPU tensor typename of a dtype (the reader's classes), or NULL: Python decides. */
static PyObject *typename_of(PyArray_Descr *dtype)
{
    static const ClassInfo *last = NULL;
    if (last != NULL && (last->dtype == dtype || PyArray_EquivTypes(last->dtype, dtype)))
        return last->typename;
    for (int i = 0; i < cfg.n_classes; i++) {
        const ClassInfo *cls = &cfg.classes[i];
        if (cls->is_tensor && !cls->is_cuda && PyArray_EquivTypes(cls->dtype, dtype)) {
            last = cls;
            return cls->typename;
        }
    }
    return NULL;
}

/* A tuple of `n` ints `values[i] / divisor`: a recent equal one, or a new one. */
static PyObject *int_tuple(Rows *rows, int n, const npy_intp *values, npy_intp divisor)
{
    for (int k = 0; k < SHAPES; k++) {
        PyObject *known = rows->recent[k];
        if (known == NULL || PyTuple_GET_SIZE(known) != n)
            continue;
        int same = 1;
        for (int i = 0; same && i < n; i++)
            same = PyLong_AsSsize_t(PyTuple_GET_ITEM(known, i)) == values[i] / divisor;
        if (same)
            return Py_NewRef(known);
    }
    PyObject *tuple = PyTuple_New(n);
    for (int i = 0; tuple != NULL && i < n; i++) {
        PyObject *item = PyLong_FromSsize_t(values[i] / divisor);
        if (item == NULL)
            Py_CLEAR(tuple);
        else
            PyTuple_SET_ITEM(tuple, i, item);
    }
    if (tuple != NULL) {
        PyObject_GC_UnTrack(tuple); /* ints only: never in a cycle */
        Py_XSETREF(rows->recent[rows->next_recent], Py_NewRef(tuple));
        rows->next_recent = (rows->next_recent + 1) % SHAPES;
    }
    return tuple;
}

/* A TensorInfo for an ndarray read from the file; NULL without an error: Python makes it. */
static PyObject *array_row(Rows *rows, PyObject *path, PyArrayObject *array, PyObject *storage)
{
    PyArrayObject *root = array;
    while (PyArray_BASE(root) != NULL && PyArray_CheckExact(PyArray_BASE(root)))
        root = (PyArrayObject *)PyArray_BASE(root);
    PyObject *typename = typename_of(PyArray_DESCR(array));
    if (typename == NULL || PyDict_GET_SIZE(cfg.class_of_root) > 0)
        return NULL; /* an unusual dtype, or maybe a CUDA class remembered for the root */
    int ndim = PyArray_NDIM(array);
    npy_intp itemsize = PyArray_ITEMSIZE(array), size = PyArray_SIZE(array);
    PyObject *shape = int_tuple(rows, ndim, PyArray_DIMS(array), 1);
    PyObject *strides = shape ? int_tuple(rows, ndim, PyArray_STRIDES(array), itemsize) : NULL;
    PyTypeObject *row_type = (PyTypeObject *)rows->row_type;
    PyObject *row = strides ? row_type->tp_alloc(row_type, 10) : NULL;
    if (shape == NULL || strides == NULL || row == NULL)
        goto failed;
    int placed = rows->base != NULL && size > 0;
    PyObject *offset = placed ? offset_in(rows, PyArray_BYTES(array)) : Py_NewRef(Py_None);
    PyObject *storage_offset = PyArray_BYTES(root) == PyArray_BYTES(array) || !placed
                                   ? Py_XNewRef(offset) : offset_in(rows, PyArray_BYTES(root));
    PyObject *items[10] = {
        Py_NewRef(path), Py_NewRef(typename), shape, Py_NewRef(PyArray_DESCR(array)),
        PyLong_FromSsize_t(PyArray_NBYTES(array)), offset, storage_offset,
        PyLong_FromSsize_t(PyArray_NBYTES(root)), strides, Py_NewRef(storage),
    };
    shape = strides = NULL;
    int missing = 0, tracked = 0;
    for (int i = 0; i < 10; i++) {
        missing |= items[i] == NULL;
        tracked |= items[i] != NULL && PyObject_GC_IsTracked(items[i]);
        PyTuple_SET_ITEM(row, i, items[i]);
    }
    if (!missing && !tracked) /* atomic items: the collector need not watch 100,000 rows */
        PyObject_GC_UnTrack(row);
    if (!missing)
        return row;
failed:
    Py_XDECREF(shape);
    Py_XDECREF(strides);
    Py_XDECREF(row);
    if (!PyErr_Occurred())
        PyErr_NoMemory();
    return NULL;
}

PyDoc_STRVAR(rows_doc,
"rows(columns, base, size, join, row_of, row_type)\n"
"--\n\n"
"graph.index.tensor_infos in C: one ``row_type`` per entry of an index's ``columns``\n"
"(graph.index.IndexColumns), its path built from the nodes (``join(node, place, child)``\n"
"where a part is not an identifier or integer key), ndarray rows made here, any other row\n"
"by ``row_of(path, value, storage)``.");

/* An int64 column (an array.array of 'q') as a C array of `*len` items. */
static int int_column(PyObject *column, Py_buffer *view)
{
    if (PyObject_GetBuffer(column, view, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    if (view->itemsize != 8 || view->format == NULL || strcmp(view->format, "q") != 0) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_TypeError, "an index column must be an array of int64");
        return -1;
    }
    return 0;
}

static PyObject *fast_rows(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *parents, *places, *containers, *owners, *spots, *values, *storage_of;
    if (nargs != 6 || !PyTuple_Check(args[0]) || !PyType_Check(args[5]) ||
        !PyType_IsSubtype((PyTypeObject *)args[5], &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "rows(columns, base, size, join, row_of, row_type)");
        return NULL;
    }
    if (!PyArg_ParseTuple(args[0], "OO!O!OO!O!O", &parents, &PyList_Type, &places, &PyList_Type,
                          &containers, &owners, &PyList_Type, &spots, &PyList_Type, &values,
                          &storage_of))
        return NULL;
    if (!cfg.ready) {
        PyErr_SetString(PyExc_RuntimeError, "streamser._fastread.configure() was not called");
        return NULL;
    }
    Py_buffer parent_view, owner_view, storage_view;
    if (int_column(parents, &parent_view) < 0)
        return NULL;
    if (int_column(owners, &owner_view) < 0) {
        PyBuffer_Release(&parent_view);
        return NULL;
    }
    if (int_column(storage_of, &storage_view) < 0) {
        PyBuffer_Release(&parent_view);
        PyBuffer_Release(&owner_view);
        return NULL;
    }
    Rows rows = {0};
    rows.parents = parent_view.buf;
    rows.places = places;
    rows.containers = containers;
    rows.join = args[3];
    rows.row_of = args[4];
    rows.row_type = args[5];
    rows.size = PyLong_AsSsize_t(args[2]);
    if (args[1] != Py_None)
        rows.base = (char *)PyLong_AsVoidPtr(args[1]);
    rows.n_nodes = PyList_GET_SIZE(places);
    Py_ssize_t n = PyList_GET_SIZE(values);
    const int64_t *owner = owner_view.buf, *storage = storage_view.buf;
    PyObject *out = NULL;
    if (PyErr_Occurred()) {
        /* a bad base or size */
    } else if (parent_view.len / 8 != rows.n_nodes || PyList_GET_SIZE(containers) != rows.n_nodes ||
               owner_view.len / 8 != n || storage_view.len / 8 != n || PyList_GET_SIZE(spots) != n) {
        PyErr_SetString(PyExc_ValueError, "index columns of different lengths");
    } else {
        rows.texts = PyMem_Calloc((size_t)rows.n_nodes + 1, sizeof(PyObject *));
        rows.spans = PyMem_Malloc(((size_t)rows.n_nodes + 1) * sizeof(Span));
        for (Py_ssize_t i = 0; rows.spans != NULL && i < rows.n_nodes; i++)
            rows.spans[i].len = -2;
        out = rows.texts && rows.spans ? PyList_New(n) : PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; out != NULL && i < n; i++) {
        PyObject *value = PyList_GET_ITEM(values, i), *row = NULL, *number = NULL;
        Py_ssize_t node = owner[i] < 0 ? -1 : (Py_ssize_t)owner[i];
        PyObject *path = join_path(&rows, node, PyList_GET_ITEM(spots, i), value);
        if (path != NULL && PyUnicode_GET_LENGTH(path) == 0)
            Py_SETREF(path, PyUnicode_FromString("<root>"));
        if (path != NULL)
            number = storage[i] < 0 ? Py_NewRef(Py_None) : PyLong_FromLongLong(storage[i]);
        if (number != NULL && PyArray_CheckExact(value))
            row = array_row(&rows, path, (PyArrayObject *)value, number);
        if (number != NULL && row == NULL && !PyErr_Occurred())
            row = PyObject_CallFunctionObjArgs(rows.row_of, path, value, number, NULL);
        Py_XDECREF(path);
        Py_XDECREF(number);
        if (row == NULL)
            Py_CLEAR(out);
        else
            PyList_SET_ITEM(out, i, row);
    }
    for (Py_ssize_t i = 0; rows.texts != NULL && i < rows.n_nodes; i++)
        Py_XDECREF(rows.texts[i]);
    for (int k = 0; k < SHAPES; k++)
        Py_XDECREF(rows.recent[k]);
    PyMem_Free(rows.texts);
    PyMem_Free(rows.spans);
    PyMem_Free(rows.pool);
    PyBuffer_Release(&parent_view);
    PyBuffer_Release(&owner_view);
    PyBuffer_Release(&storage_view);
    return out;
}

/* --- configuration -------------------------------------------------------------------------- */

/* A member descriptor of a __slots__ member (what values.lua.native_layout hands over). */
static int is_slot(PyObject *descr)
{
    if (Py_TYPE(descr) == &PyMemberDescr_Type && Py_TYPE(descr)->tp_descr_set != NULL)
        return 1;
    PyErr_Format(PyExc_TypeError, "%R is not a __slots__ member", descr);
    return 0;
}

static int configure_class(ClassInfo *info, PyObject *entry)
{
    PyObject *name, *typename, *dtype, *empty_dtype, *torch_class, *storage_class;
    int is_tensor, is_cuda, is_long, element;
    if (!PyArg_ParseTuple(entry, "SUppipO!O!OO", &name, &typename, &is_tensor, &is_cuda,
                          &element, &is_long, &PyArrayDescr_Type, &dtype, &PyArrayDescr_Type,
                          &empty_dtype, &torch_class, &storage_class))
        return -1;
    if (PyBytes_GET_SIZE(name) >= MAX_NAME) {
        PyErr_SetString(PyExc_ValueError, "class name too long");
        return -1;
    }
    memcpy(info->name, PyBytes_AS_STRING(name), (size_t)PyBytes_GET_SIZE(name));
    info->name_len = PyBytes_GET_SIZE(name);
    info->is_tensor = is_tensor;
    info->is_cuda = is_cuda;
    info->is_long = is_long;
    info->element = element;
    info->dtype = (PyArray_Descr *)Py_NewRef(dtype);
    info->empty_dtype = (PyArray_Descr *)Py_NewRef(empty_dtype);
    info->typename = Py_NewRef(typename);
    info->torch_class = Py_NewRef(torch_class);
    info->storage_class = Py_NewRef(storage_class);
    return 0;
}

PyDoc_STRVAR(configure_doc,
"configure(layout, hooks)\n"
"--\n\n"
"What values are made of (values.lua.NativeLayout) and what the reader needs besides\n"
"(graph.reader.ReaderHooks), once, from graph.reader. ``hooks.classes`` has one tuple per\n"
"tensor or storage class: (name bytes, typename, is_tensor, is_cuda, element number,\n"
"is_long, dtype, empty-tensor dtype, TorchClass, TorchClass of its storage).");

/* Forget a configuration (a reload of graph.reader configures again, with new sentinels). */
static void unconfigure(void)
{
    cfg.ready = 0;
    for (int i = 0; i < cfg.n_classes; i++) {
        ClassInfo *info = &cfg.classes[i];
        Py_CLEAR(info->dtype);
        Py_CLEAR(info->empty_dtype);
        Py_CLEAR(info->typename);
        Py_CLEAR(info->torch_class);
        Py_CLEAR(info->storage_class);
    }
    cfg.n_classes = 0;
    Py_CLEAR(cfg.table_type);
    Py_CLEAR(cfg.object_type);
    Py_CLEAR(cfg.storage_type);
    Py_CLEAR(cfg.table_entries);
    Py_CLEAR(cfg.object_typename);
    Py_CLEAR(cfg.object_version);
    Py_CLEAR(cfg.object_fields);
    Py_CLEAR(cfg.storage_array);
    Py_CLEAR(cfg.storage_typename);
    Py_CLEAR(cfg.hash_key);
    Py_CLEAR(cfg.remember_class);
    Py_CLEAR(cfg.class_name);
    Py_CLEAR(cfg.incomplete);
    Py_CLEAR(cfg.empty_tuple);
    Py_CLEAR(cfg.registered);
    Py_CLEAR(cfg.class_of_root);
    Py_CLEAR(cfg.place_root);
    Py_CLEAR(cfg.place_key);
    Py_CLEAR(cfg.place_fields);
}

static PyObject *configure(PyObject *module, PyObject *args)
{
    PyObject *layout, *hooks, *table, *object, *storage, *entries, *typename, *version, *fields;
    PyObject *array, *storage_typename, *hash_key, *remember, *class_of_root;
    PyObject *class_name, *incomplete, *list, *registered, *root, *key, *fields_place;
    unconfigure();
    if (!PyArg_ParseTuple(args, "O!O!", &PyTuple_Type, &layout, &PyTuple_Type, &hooks) ||
        !PyArg_ParseTuple(layout, "O!OO!OOOO!OOOOO!", &PyType_Type, &table, &entries,
                          &PyType_Type, &object, &typename, &version, &fields, &PyType_Type,
                          &storage, &array, &storage_typename, &hash_key, &remember,
                          &PyDict_Type, &class_of_root) ||
        !PyArg_ParseTuple(hooks, "OOO!O!OOO", &class_name, &incomplete, &PyList_Type, &list,
                          &PyDict_Type, &registered, &root, &key, &fields_place))
        return NULL;
    if (!is_slot(entries) || !is_slot(typename) || !is_slot(version) || !is_slot(fields) ||
        !is_slot(array) || !is_slot(storage_typename))
        return NULL;
    if (PyList_GET_SIZE(list) > MAX_CLASSES) {
        PyErr_SetString(PyExc_ValueError, "too many classes");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); i++) {
        cfg.n_classes = (int)i; /* what unconfigure() releases if this entry fails */
        if (configure_class(&cfg.classes[i], PyList_GET_ITEM(list, i)) < 0)
            return NULL; /* a partial table is never used: ready stays 0 */
    }
    cfg.n_classes = (int)PyList_GET_SIZE(list);
    cfg.empty_tuple = PyTuple_New(0);
    if (cfg.empty_tuple == NULL)
        return NULL;
    struct {
        PyObject **slot, *value;
    } given[] = {
        {&cfg.table_entries, entries},     {&cfg.object_typename, typename},
        {&cfg.object_version, version},    {&cfg.object_fields, fields},
        {&cfg.storage_array, array},       {&cfg.storage_typename, storage_typename},
        {&cfg.hash_key, hash_key},         {&cfg.remember_class, remember},
        {&cfg.class_name, class_name},     {&cfg.incomplete, incomplete},
        {&cfg.registered, registered},     {&cfg.class_of_root, class_of_root},
        {&cfg.place_root, root},           {&cfg.place_key, key},
        {&cfg.place_fields, fields_place},
    };
    for (size_t i = 0; i < sizeof given / sizeof given[0]; i++)
        *given[i].slot = Py_NewRef(given[i].value);
    cfg.table_type = (PyTypeObject *)Py_NewRef(table);
    cfg.object_type = (PyTypeObject *)Py_NewRef(object);
    cfg.storage_type = (PyTypeObject *)Py_NewRef(storage);
    cfg.ready = 1;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"read", (PyCFunction)(void (*)(void))fast_read, METH_FASTCALL, read_doc},
    {"configure", configure, METH_VARARGS, configure_doc},
    {"rows", (PyCFunction)(void (*)(void))fast_rows, METH_FASTCALL, rows_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_fastread",
    "The graph reader's loop for binary streams, in C (see streamser.graph.reader).", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastread(void)
{
    import_array();
    return PyModule_Create(&module_def);
}
