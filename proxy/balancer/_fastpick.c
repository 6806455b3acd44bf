/* The two per-request loops of the ``predicted`` policy's table path, in C.
 *
 * ``tabulated`` and ``two_lowest`` do exactly what the Python functions of the same names in
 * ``proxy/balancer/predicted.py`` do (``PredictedPolicy._tabulated``'s lookup chain and the
 * module-level ``two_lowest``); those stay the reference and the fallback when this module was
 * not built, and tests/proxy/balancer/test_fastpick.py checks that both give the same answers.
 * Each replaces a Python frame and a loop of ~50 bytecodes per candidate: the decision is a
 * per-request cost, and in a Python proxy it is paid in interpreter steps.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *str_id;
static PyObject *str_in_flight;

/* ``obj.attr`` as a Py_ssize_t; -1 with an exception set on failure. */
static Py_ssize_t
attr_ssize(PyObject *obj, PyObject *attr)
{
    PyObject *value = PyObject_GetAttr(obj, attr);
    if (value == NULL) {
        return -1;
    }
    Py_ssize_t out = PyLong_AsSsize_t(value);
    Py_DECREF(value);
    return out;
}

/* tabulated(candidates, row_of, fresh_until, table, wall, reads_flight) -> list[float] | None
 *
 * For each candidate: its row (``row_of[ep.id]``), fresh (``wall <= fresh_until[row]``, NaN
 * fails), its cells (``table[row]``, a list, or None when not scored yet) and the cell at its
 * in-flight count (at 0 when the model does not read it), not NaN. The predictions in candidate
 * order, or None at the first miss. */
static PyObject *
tabulated(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "tabulated() takes 6 arguments");
        return NULL;
    }
    PyObject *row_of = args[1], *fresh = args[2], *table = args[3];
    if (!PyDict_Check(row_of) || !PyList_Check(fresh) || !PyList_Check(table)) {
        PyErr_SetString(PyExc_TypeError, "tabulated(): row_of must be a dict, fresh_until and table lists");
        return NULL;
    }
    double wall = PyFloat_AsDouble(args[4]);
    if (wall == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    int reads_flight = PyObject_IsTrue(args[5]);
    if (reads_flight < 0) {
        return NULL;
    }
    PyObject *seq = PySequence_Fast(args[0], "tabulated(): candidates must be a sequence");
    if (seq == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    PyObject *preds = PyList_New(n);
    if (preds == NULL) {
        Py_DECREF(seq);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *ep = items[i];
        PyObject *id = PyObject_GetAttr(ep, str_id);
        if (id == NULL) {
            goto error;
        }
        PyObject *row_obj = PyDict_GetItemWithError(row_of, id); /* borrowed */
        Py_DECREF(id);
        if (row_obj == NULL) {
            if (PyErr_Occurred()) {
                goto error;
            }
            goto miss; /* a backend without a row */
        }
        Py_ssize_t row = PyLong_AsSsize_t(row_obj);
        if (row == -1 && PyErr_Occurred()) {
            goto error;
        }
        if (row < 0 || row >= PyList_GET_SIZE(fresh) || row >= PyList_GET_SIZE(table)) {
            goto miss;
        }
        double until = PyFloat_AsDouble(PyList_GET_ITEM(fresh, row));
        if (until == -1.0 && PyErr_Occurred()) {
            goto error;
        }
        if (!(wall <= until)) {
            goto miss; /* stale, or never seen (NaN) */
        }
        PyObject *cells = PyList_GET_ITEM(table, row);
        if (!PyList_Check(cells)) {
            goto miss; /* None: no cell of this row scored yet */
        }
        Py_ssize_t level = 0;
        if (reads_flight) {
            level = attr_ssize(ep, str_in_flight);
            if (level == -1 && PyErr_Occurred()) {
                goto error;
            }
        }
        if (level < 0 || level >= PyList_GET_SIZE(cells)) {
            goto miss; /* beyond the table's levels */
        }
        PyObject *pred = PyList_GET_ITEM(cells, level);
        double value = PyFloat_AsDouble(pred);
        if (value == -1.0 && PyErr_Occurred()) {
            goto error;
        }
        if (value != value) {
            goto miss; /* NaN: not scored yet */
        }
        Py_INCREF(pred);
        PyList_SET_ITEM(preds, i, pred);
    }
    Py_DECREF(seq);
    return preds;
miss:
    Py_DECREF(seq);
    Py_DECREF(preds); /* unset items are NULL, which list_dealloc skips */
    Py_RETURN_NONE;
error:
    Py_DECREF(seq);
    Py_DECREF(preds);
    return NULL;
}

/* two_lowest(costs, candidates) -> (best, second): the Python function's one pass, its tie rule
 * included (equal costs go to fewer requests in flight, then to the earlier). */
static PyObject *
two_lowest(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "two_lowest() takes 2 arguments");
        return NULL;
    }
    PyObject *costs = PySequence_Fast(args[0], "two_lowest(): costs must be a sequence");
    if (costs == NULL) {
        return NULL;
    }
    PyObject *cands = PySequence_Fast(args[1], "two_lowest(): candidates must be a sequence");
    if (cands == NULL) {
        Py_DECREF(costs);
        return NULL;
    }
    PyObject *result = NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(costs);
    if (n < 2 || PySequence_Fast_GET_SIZE(cands) < n) {
        PyErr_SetString(PyExc_ValueError, "two_lowest(): at least two costs, and a candidate for each");
        goto done;
    }
    PyObject **c = PySequence_Fast_ITEMS(costs), **ep = PySequence_Fast_ITEMS(cands);
#define COST(i, out) do { (out) = PyFloat_AsDouble(c[i]); if ((out) == -1.0 && PyErr_Occurred()) goto done; } while (0)
#define FLIGHT(i, out) do { (out) = attr_ssize(ep[i], str_in_flight); if ((out) == -1 && PyErr_Occurred()) goto done; } while (0)
    double c0, c1, low, next_low;
    Py_ssize_t best, second, fa, fb;
    COST(0, c0);
    COST(1, c1);
    int one_first = c1 < c0;
    if (!one_first && c1 == c0) {
        FLIGHT(1, fa);
        FLIGHT(0, fb);
        one_first = fa < fb;
    }
    if (one_first) {
        best = 1, second = 0, low = c1, next_low = c0;
    }
    else {
        best = 0, second = 1, low = c0, next_low = c1;
    }
    for (Py_ssize_t i = 2; i < n; i++) {
        double ci;
        COST(i, ci);
        if (ci > next_low) {
            continue;
        }
        int beats_best = ci < low;
        if (!beats_best && ci == low) {
            FLIGHT(i, fa);
            FLIGHT(best, fb);
            beats_best = fa < fb;
        }
        if (beats_best) {
            second = best, next_low = low, best = i, low = ci;
            continue;
        }
        int beats_second = ci < next_low;
        if (!beats_second) {
            FLIGHT(i, fa);
            FLIGHT(second, fb);
            beats_second = fa < fb;
        }
        if (beats_second) {
            second = i, next_low = ci;
        }
    }
#undef COST
#undef FLIGHT
    result = PyTuple_New(2); /* not Py_BuildValue: parsing its format string cost ~500 instructions */
    if (result != NULL) {
        PyObject *b = PyLong_FromSsize_t(best), *s = PyLong_FromSsize_t(second); /* small ints: cached */
        if (b == NULL || s == NULL) {
            Py_XDECREF(b);
            Py_XDECREF(s);
            Py_CLEAR(result);
            goto done;
        }
        PyTuple_SET_ITEM(result, 0, b);
        PyTuple_SET_ITEM(result, 1, s);
    }
done:
    Py_DECREF(costs);
    Py_DECREF(cands);
    return result;
}

static PyMethodDef methods[] = {
    {"tabulated", (PyCFunction)(void (*)(void))tabulated, METH_FASTCALL,
     "The candidates' predictions from a prediction table, or None at the first miss."},
    {"two_lowest", (PyCFunction)(void (*)(void))two_lowest, METH_FASTCALL,
     "Indices of the lowest and second-lowest cost, ties to fewer in flight, then the earlier."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastpick", "The predicted policy's table path in C.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__fastpick(void)
{
    str_id = PyUnicode_InternFromString("id");
    str_in_flight = PyUnicode_InternFromString("in_flight");
    if (str_id == NULL || str_in_flight == NULL) {
        return NULL;
    }
    return PyModule_Create(&module);
}
