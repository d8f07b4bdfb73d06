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

typedef struct {
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
    PyObject *place_root, *place_key, *place_fields; /* graph.index places */
    ClassInfo classes[MAX_CLASSES];
    int n_classes;
} cfg;

typedef struct {
    PyObject *container; /* LuaTable or TorchObject */
    PyObject *entries;   /* the table's dict; NULL for a torch object's field object */
    PyObject *key;       /* NULL while the key is still to come */
    int64_t remaining;
    Py_ssize_t node;     /* the index node of the container (when notes are taken) */
} Frame;

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
    PyObject *nodes, *entries, *storages; /* graph.index.IndexRecorder's lists, or NULL */
    PyObject *full; /* the last tensor or storage read in full (borrowed, for the index) */
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

/* *key: the index as a Python int when referenced (new reference, else NULL). *found: the
   registered object (new reference) or NULL when the object must be read in full. */
static int seen(Reader *r, int32_t index, PyObject **key, PyObject **found)
{
    *key = NULL;
    *found = NULL;
    if (r->referenced) {
        *key = PyLong_FromLong(index);
        if (*key == NULL)
            return FAIL;
        PyObject *known = PyDict_GetItemWithError(r->objects, *key);
        if (known == NULL && PyErr_Occurred())
            return FAIL;
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

static int remember(Reader *r, PyObject *key, PyObject *value)
{
    return key != NULL && PyDict_SetItem(r->objects, key, value) < 0 ? FAIL : OK;
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

static const ClassInfo *find_class(const unsigned char *name, Py_ssize_t len)
{
    for (int i = 0; i < cfg.n_classes; i++) {
        const ClassInfo *cls = &cfg.classes[i];
        if (cls->name_len == len && memcmp(cls->name, name, (size_t)len) == 0)
            return cls;
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
    PyObject *key, *found, *storage = NULL;
    if (read_int(r, &index))
        return BAIL;
    int status = seen(r, index, &key, &found);
    if (status == OK && found != NULL) {
        status = known_storage_array(found, tensor_class, array);
        Py_DECREF(found);
        Py_XDECREF(key);
        return status;
    }
    long version;
    const unsigned char *name;
    Py_ssize_t len;
    const ClassInfo *cls = NULL;
    if (status == OK && read_class_header(r, &version, &name, &len) == OK)
        cls = find_class(name, len);
    if (status == OK && (cls == NULL || cls->is_tensor || cls->element != tensor_class->element))
        status = BAIL;
    if (status == OK)
        status = remember(r, key, cfg.incomplete);
    PyObject *data = NULL; /* borrowed from storage */
    if (status == OK)
        status = read_storage(r, cls, &storage, &data);
    if (status == OK)
        status = remember(r, key, storage);
    Py_XDECREF(key);
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

/* Append (node, place, item) to `list` for the value about to be read. */
static int note(Reader *r, PyObject *list, PyObject *item)
{
    Py_ssize_t node;
    PyObject *place = place_of_next(r, &node);
    PyObject *row = Py_BuildValue("(nNO)", node, place, item);
    if (row == NULL)
        return FAIL;
    int failed = PyList_Append(list, row) < 0;
    Py_DECREF(row);
    return failed ? FAIL : OK;
}

/* IndexRecorder.entry: a tensor read in full, or a storage the first time it is a value. */
static int note_entry(Reader *r, PyObject *value)
{
    if (Py_TYPE(value) == cfg.storage_type) {
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
    return note(r, r->entries, value);
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
    if (r->nodes != NULL) {
        node = PyList_GET_SIZE(r->nodes);
        if (note(r, r->nodes, container) < 0) {
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
    frame->node = node;
    return OK;
}

static int read_table(Reader *r, PyObject **out)
{
    int32_t index, count;
    PyObject *key, *table, *entries;
    if (read_int(r, &index))
        return BAIL;
    int status = seen(r, index, &key, out);
    if (status != OK || *out != NULL) {
        Py_XDECREF(key);
        return status;
    }
    if (read_int(r, &count) || count < 0 || 8 * (int64_t)count > r->size - r->pos ||
        count > r->max_table) {
        Py_XDECREF(key);
        return BAIL;
    }
    status = new_table(&table, &entries);
    if (status == OK && remember(r, key, table)) {
        Py_CLEAR(table);
        Py_CLEAR(entries);
        status = FAIL;
    }
    Py_XDECREF(key);
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
    PyObject *key;
    if (read_int(r, &index))
        return BAIL;
    int status = seen(r, index, &key, out);
    if (status != OK || *out != NULL) {
        Py_XDECREF(key);
        return status;
    }
    long version;
    const unsigned char *name;
    Py_ssize_t len;
    if (read_class_header(r, &version, &name, &len)) {
        Py_XDECREF(key);
        return BAIL;
    }
    const ClassInfo *cls = find_class(name, len);
    if (cls == NULL) {
        /* A registered class, or a payload that is not a field table: Python reads it. */
        if (r->size - r->pos < 4 || (int32_t)le32(r->buf + r->pos) != TAG_TABLE) {
            Py_XDECREF(key);
            return BAIL;
        }
        PyObject *typename = class_name(name, len);
        int registered = typename == NULL ? -1 : PyDict_Contains(cfg.registered, typename);
        PyObject *obj = registered == 0 ? new_torch_object(typename, version) : NULL;
        Py_XDECREF(typename);
        if (registered > 0) {
            Py_XDECREF(key);
            return BAIL;
        }
        status = obj == NULL ? FAIL : remember(r, key, obj);
        Py_XDECREF(key);
        if (status != OK) {
            Py_XDECREF(obj);
            return status;
        }
        return push(r, obj, NULL, 1);
    }
    PyObject *value = NULL;
    status = remember(r, key, cfg.incomplete);
    if (status == OK)
        status = cls->is_tensor ? read_tensor(r, cls, &value) : read_storage(r, cls, &value, NULL);
    if (status == OK)
        status = remember(r, key, value);
    Py_XDECREF(key);
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
        *out = decode_string(data, len);
        return *out ? OK : FAIL;
    }
    case TAG_TABLE:
        return read_table(r, out);
    case TAG_TORCH: {
        int status = read_torch(r, out);
        if (status == OK && r->entries != NULL && *out != NULL &&
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
"     max_table, max_objects, notes)\n"
"--\n\n"
"One value from ``buffer`` (a 1-D byte memoryview) at ``pos``, as GraphReader reads it:\n"
"(value, pos, longs_read, indexed) after it, or None to let the Python reader do it. New\n"
"indexed objects are added to ``objects``; ``notes`` (None, or an IndexRecorder's nodes,\n"
"entries and storages) gets the index notes. After None, the caller removes what was added.");

static PyObject *fast_read(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 12) {
        PyErr_Format(PyExc_TypeError, "read() takes 12 arguments (%zd given)", nargs);
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
        !PyArg_ParseTuple(args[11], "O!O!O!", &PyList_Type, &r.nodes, &PyList_Type, &r.entries,
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
    if (failed || r.referenced < 0)
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
    for (Py_ssize_t i = 0; i < r.depth; i++) {
        Py_XDECREF(r.stack[i].container);
        Py_XDECREF(r.stack[i].entries);
        Py_XDECREF(r.stack[i].key);
    }
    PyMem_Free(r.stack);
    Py_XDECREF(r.base);
    PyBuffer_Release(&view);
    if (status == OK)
        result = Py_BuildValue("(NnLL)", value, r.pos, (long long)r.longs_read,
                               (long long)r.indexed);
    else if (status == BAIL)
        result = Py_NewRef(Py_None);
    return result;
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
    cfg.table_entries = Py_NewRef(entries);
    cfg.object_typename = Py_NewRef(typename);
    cfg.object_version = Py_NewRef(version);
    cfg.object_fields = Py_NewRef(fields);
    cfg.storage_array = Py_NewRef(array);
    cfg.storage_typename = Py_NewRef(storage_typename);
    cfg.table_type = (PyTypeObject *)Py_NewRef(table);
    cfg.object_type = (PyTypeObject *)Py_NewRef(object);
    cfg.storage_type = (PyTypeObject *)Py_NewRef(storage);
    cfg.hash_key = Py_NewRef(hash_key);
    cfg.remember_class = Py_NewRef(remember);
    cfg.class_name = Py_NewRef(class_name);
    cfg.incomplete = Py_NewRef(incomplete);
    cfg.registered = Py_NewRef(registered);
    cfg.place_root = Py_NewRef(root);
    cfg.place_key = Py_NewRef(key);
    cfg.place_fields = Py_NewRef(fields_place);
    cfg.ready = 1;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"read", (PyCFunction)(void (*)(void))fast_read, METH_FASTCALL, read_doc},
    {"configure", configure, METH_VARARGS, configure_doc},
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
