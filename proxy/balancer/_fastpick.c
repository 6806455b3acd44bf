/* The ``predicted`` policy's table path, in C.
 *
 * ``tabulated`` and ``two_lowest`` do exactly what the Python functions of the same names in
 * ``proxy/balancer/predicted.py`` do (``PredictedPolicy._tabulated``'s lookup chain and the
 * module-level ``two_lowest``); ``decide`` does what ``PredictedPolicy.decide`` does when every
 * candidate's prediction is in a filled table cell, and hands every other case back. The Python
 * code stays the reference and the fallback when this module was not built, and
 * tests/proxy/balancer/test_fastpick.py and tests/proxy/predict/test_fast_decide.py check that
 * both give the same answers. Each replaces
 * Python frames and tens of bytecodes per candidate: the decision is a per-request cost, and in
 * a Python proxy it is paid in interpreter steps.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h> /* T_OBJECT_EX: the member type of a __slots__ entry */

static PyObject *str_id, *str_in_flight, *str_current, *str_snapshot, *str_open_until, *str_value,
    *str_budget_s, *str_count, *str_window, *str_record, *str_body_bytes, *str_req_class, *str_method,
    *str_upper, *str_GET;

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

/* The lookup chain of ``tabulated`` over ``n`` candidates: a new list of their predictions,
 * Py_None (a new reference) at the first miss, NULL with an exception set on error. */
static PyObject *
lookup(PyObject *const *items, Py_ssize_t n, PyObject *row_of, PyObject *fresh, PyObject *table,
       double wall, int reads_flight)
{
    PyObject *preds = PyList_New(n);
    if (preds == NULL) {
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
    return preds;
miss:
    Py_DECREF(preds); /* unset items are NULL, which list_dealloc skips */
    Py_RETURN_NONE;
error:
    Py_DECREF(preds);
    return NULL;
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
    (void)module;
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
    PyObject *preds = lookup(PySequence_Fast_ITEMS(seq), PySequence_Fast_GET_SIZE(seq), row_of, fresh,
                             table, wall, reads_flight);
    Py_DECREF(seq);
    return preds;
}

/* The indices of the lowest and second-lowest of ``costs[0..n)`` (n >= 2) in the order a stable
 * sort by (cost, in-flight) gives: the Python ``two_lowest``'s one pass, its tie rule included
 * (equal costs go to fewer requests in flight, then to the earlier). 0, or -1 on error. */
static int
lowest_two(const double *c, PyObject *const *ep, Py_ssize_t n, Py_ssize_t *best_out, Py_ssize_t *second_out)
{
#define FLIGHT(i, out) do { (out) = attr_ssize(ep[i], str_in_flight); if ((out) == -1 && PyErr_Occurred()) return -1; } while (0)
    double low, next_low;
    Py_ssize_t best, second, fa, fb;
    int one_first = c[1] < c[0];
    if (!one_first && c[1] == c[0]) {
        FLIGHT(1, fa);
        FLIGHT(0, fb);
        one_first = fa < fb;
    }
    if (one_first) {
        best = 1, second = 0, low = c[1], next_low = c[0];
    }
    else {
        best = 0, second = 1, low = c[0], next_low = c[1];
    }
    for (Py_ssize_t i = 2; i < n; i++) {
        double ci = c[i];
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
#undef FLIGHT
    *best_out = best;
    *second_out = second;
    return 0;
}

#define STACK_COSTS 64 /* the policy's max_scored default: no allocation for the usual pool */

/* two_lowest(costs, candidates) -> (best, second): see ``lowest_two``. */
static PyObject *
two_lowest(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
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
    double stack[STACK_COSTS], *c = stack;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(costs), best, second;
    if (n < 2 || PySequence_Fast_GET_SIZE(cands) < n) {
        PyErr_SetString(PyExc_ValueError, "two_lowest(): at least two costs, and a candidate for each");
        goto done;
    }
    if (n > STACK_COSTS && (c = PyMem_Malloc(n * sizeof(double))) == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    PyObject **items = PySequence_Fast_ITEMS(costs);
    for (Py_ssize_t i = 0; i < n; i++) {
        c[i] = PyFloat_AsDouble(items[i]);
        if (c[i] == -1.0 && PyErr_Occurred()) {
            goto done;
        }
    }
    if (lowest_two(c, PySequence_Fast_ITEMS(cands), n, &best, &second) < 0) {
        goto done;
    }
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
    if (c != stack) {
        PyMem_Free(c);
    }
    Py_DECREF(costs);
    Py_DECREF(cands);
    return result;
}

/* The positions in the plan tuple ``PredictedPolicy._fast_plan`` builds (same order). */
enum {
    P_HOLDER, P_FEATURES, P_BUDGET, P_ACCURACY, P_MODEL, P_SNAPSHOT, P_ROW_OF, P_FRESH, P_TABLES,
    P_READS_FLIGHT, P_KEY_SLOTS, P_LAST_KEY, P_FLOOR, P_PENALTY, P_CHOICES, P_WALL_CLOCK,
    P_PERF_COUNTER, P_ON_DURATION, P_DECISION, P_SIZE
};

/* ``Decision`` without its ``__init__``: a dataclass with ``slots=True`` whose generated
 * ``__init__`` only stores its eight fields, in this order. Its Python frame cost ~2,500
 * instructions a decision (callgrind); storing the fields at their slots' offsets costs a few.
 * The offsets are read once from the class's member descriptors; a class whose fields are not
 * exactly these eight plain slots is refused (TypeError), never written blind. */
#define DECISION_FIELDS 8
static const char *decision_fields[DECISION_FIELDS] = {
    "endpoint", "predicted_s", "runner_up", "runner_up_s", "fallback", "duration_s", "scored", "preds",
};
static PyTypeObject *decision_type; /* strong reference, set by the first ``decide`` */
static Py_ssize_t decision_offsets[DECISION_FIELDS];

static int
learn_decision(PyObject *type_obj)
{
    if (!PyType_Check(type_obj)) {
        PyErr_SetString(PyExc_TypeError, "decide(): the plan's Decision is not a class");
        return -1;
    }
    PyTypeObject *type = (PyTypeObject *)type_obj;
    PyObject *init = PyObject_GetAttrString(type_obj, "__post_init__");
    if (init != NULL) {
        Py_DECREF(init);
        PyErr_SetString(PyExc_TypeError, "decide(): Decision has a __post_init__ that would be skipped");
        return -1;
    }
    PyErr_Clear();
    if (type->tp_basicsize != (Py_ssize_t)sizeof(PyObject) + DECISION_FIELDS * (Py_ssize_t)sizeof(PyObject *)) {
        PyErr_SetString(PyExc_TypeError, "decide(): Decision must have exactly its eight slots");
        return -1;
    }
    for (int i = 0; i < DECISION_FIELDS; i++) {
        PyObject *descr = PyDict_GetItemString(type->tp_dict, decision_fields[i]); /* borrowed */
        if (descr == NULL || !Py_IS_TYPE(descr, &PyMemberDescr_Type)
            || ((PyMemberDescrObject *)descr)->d_member->type != T_OBJECT_EX) {
            PyErr_Format(PyExc_TypeError, "decide(): Decision.%s is not a plain slot", decision_fields[i]);
            return -1;
        }
        decision_offsets[i] = ((PyMemberDescrObject *)descr)->d_member->offset;
    }
    Py_INCREF(type);
    Py_XSETREF(decision_type, type);
    return 0;
}

/* A new ``Decision`` holding new references to ``fields`` (in ``decision_fields`` order). */
static PyObject *
new_decision(PyObject *type_obj, PyObject *const *fields)
{
    if ((PyTypeObject *)type_obj != decision_type && learn_decision(type_obj) < 0) {
        return NULL;
    }
    PyObject *obj = decision_type->tp_alloc(decision_type, 0); /* zeroed; GC-tracked if the type is */
    if (obj == NULL) {
        return NULL;
    }
    for (int i = 0; i < DECISION_FIELDS; i++) {
        *(PyObject **)((char *)obj + decision_offsets[i]) = Py_NewRef(fields[i]);
    }
    return obj;
}

/* ``obj.attr`` as a double; -1.0 with an exception set on failure. */
static double
attr_double(PyObject *obj, PyObject *attr)
{
    PyObject *value = PyObject_GetAttr(obj, attr);
    if (value == NULL) {
        return -1.0;
    }
    double out = PyFloat_AsDouble(value);
    Py_DECREF(value);
    return out;
}

/* ``callable()`` as a double; -1.0 with an exception set on failure. */
static double
call_double(PyObject *callable)
{
    PyObject *value = PyObject_CallNoArgs(callable);
    if (value == NULL) {
        return -1.0;
    }
    double out = PyFloat_AsDouble(value);
    Py_DECREF(value);
    return out;
}

#define FAILED(x) ((x) == -1.0 && PyErr_Occurred())

/* The request's table key, ``assembler.request_key``: per request input the model reads (its
 * slot in ``REQUEST_FEATURES``), ``samples.request_features``' value for it. */
static PyObject *
request_key(PyObject *request, PyObject *slots)
{
    Py_ssize_t k = PyTuple_GET_SIZE(slots);
    PyObject *key = PyTuple_New(k);
    if (key == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < k; i++) {
        Py_ssize_t slot = PyLong_AsSsize_t(PyTuple_GET_ITEM(slots, i));
        PyObject *value = NULL;
        if (slot == 0 || slot == 1) { /* float(body_bytes), float(req_class) */
            PyObject *raw = PyObject_GetAttr(request, slot == 0 ? str_body_bytes : str_req_class);
            if (raw != NULL) {
                value = PyNumber_Float(raw);
                Py_DECREF(raw);
            }
        }
        else if (slot == 2) { /* 1.0 if method.upper() == "GET" else 0.0 */
            PyObject *method = PyObject_GetAttr(request, str_method);
            if (method != NULL) {
                int get = PyUnicode_CheckExact(method) ? PyUnicode_Compare(method, str_GET) == 0 : 0;
                if (!get && !PyErr_Occurred()) { /* "get", or not a str: as Python would see it */
                    PyObject *upper = PyObject_CallMethodNoArgs(method, str_upper);
                    if (upper != NULL) {
                        get = PyObject_RichCompareBool(upper, str_GET, Py_EQ);
                        Py_DECREF(upper);
                    }
                    else {
                        get = -1;
                    }
                }
                Py_DECREF(method);
                if (get >= 0 && !PyErr_Occurred()) {
                    value = PyFloat_FromDouble(get ? 1.0 : 0.0);
                }
            }
        }
        else if (!PyErr_Occurred()) {
            PyErr_Format(PyExc_ValueError, "decide(): no request input in slot %zd", slot);
        }
        if (value == NULL) {
            Py_DECREF(key);
            return NULL;
        }
        PyTuple_SET_ITEM(key, i, value);
    }
    return key;
}

/* decide(plan, endpoints, request, now, started) -> Decision | None
 *
 * ``PredictedPolicy.decide`` when every candidate's prediction is in a filled table cell: the
 * model is the one the plan was bound for, the snapshot too, the breaker closed, every
 * candidate scored (no sampling), every cell filled and fresh, and live accuracy at or above its
 * floor. Then it does what the Python path does (choice, decision time, the breaker's books,
 * the duration histogram) and returns the same Decision. At anything else it returns None having
 * changed nothing (it may have read the clocks), and the Python path decides: it is the
 * reference, and tests/proxy/predict/test_fast_decide.py checks that both give the same
 * decisions and leave the same state. */
static PyObject *
decide(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "decide() takes 5 arguments");
        return NULL;
    }
    PyObject *plan = args[0], *request = args[2];
    if (!PyTuple_CheckExact(plan) || PyTuple_GET_SIZE(plan) != P_SIZE) {
        PyErr_SetString(PyExc_TypeError, "decide(): the plan must be PredictedPolicy._fast_plan's tuple");
        return NULL;
    }
#define PLAN(i) PyTuple_GET_ITEM(plan, (i))
    double now = PyFloat_AsDouble(args[3]), started = PyFloat_AsDouble(args[4]);
    if (FAILED(now) || FAILED(started)) {
        return NULL;
    }
    PyObject *seq = PySequence_Fast(args[1], "decide(): endpoints must be a sequence");
    if (seq == NULL) {
        return NULL;
    }
    PyObject *result = NULL, *key = NULL, *preds = NULL, *acc = NULL, *dur = NULL, *count_obj = NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), best, second;
    PyObject **eps = PySequence_Fast_ITEMS(seq);
    double costs[STACK_COSTS];
    Py_ssize_t choices = PyLong_AsSsize_t(PLAN(P_CHOICES));
    if (choices == -1 && PyErr_Occurred()) {
        goto done;
    }
    if (n < 2 || n > choices || n > STACK_COSTS) {
        goto miss; /* one endpoint, or a random few of many: the Python path */
    }
    PyObject *current = PyObject_GetAttr(PLAN(P_HOLDER), str_current);
    if (current == NULL) {
        goto done;
    }
    Py_DECREF(current); /* only its identity is compared: the plan holds a reference */
    if (current != PLAN(P_MODEL)) {
        goto miss;
    }
    PyObject *snapshot = PyObject_GetAttr(PLAN(P_FEATURES), str_snapshot);
    if (snapshot == NULL) {
        goto done;
    }
    Py_DECREF(snapshot);
    if (snapshot != PLAN(P_SNAPSHOT)) {
        goto miss; /* a new snapshot: the Python path binds it */
    }
    double open_until = attr_double(PLAN(P_BUDGET), str_open_until);
    if (FAILED(open_until)) {
        goto done;
    }
    if (now < open_until) {
        goto miss;
    }
    double wall = call_double(PLAN(P_WALL_CLOCK));
    if (FAILED(wall)) {
        goto done;
    }
    /* the data plane shares one RequestInfo per (method, size, class): the last one's key is
     * kept in the plan's two-item list, as ``PredictedPolicy._key`` keeps it */
    PyObject *last = PLAN(P_LAST_KEY);
    if (!PyList_CheckExact(last) || PyList_GET_SIZE(last) != 2) {
        PyErr_SetString(PyExc_TypeError, "decide(): the plan's last key must be a two-item list");
        goto done;
    }
    if (PyList_GET_ITEM(last, 0) == request) {
        key = Py_NewRef(PyList_GET_ITEM(last, 1));
    }
    else {
        key = request_key(request, PLAN(P_KEY_SLOTS));
        if (key == NULL) {
            goto done;
        }
        if (PyList_SetItem(last, 0, Py_NewRef(request)) < 0 || PyList_SetItem(last, 1, Py_NewRef(key)) < 0) {
            goto done;
        }
    }
    PyObject *table = PyDict_GetItemWithError(PLAN(P_TABLES), key); /* borrowed */
    if (table == NULL) {
        if (PyErr_Occurred()) {
            goto done;
        }
        goto miss;
    }
    if (!PyList_CheckExact(table)) {
        goto miss; /* this kind of request is out of range */
    }
    int reads_flight = PLAN(P_READS_FLIGHT) == Py_True;
    preds = lookup(eps, n, PLAN(P_ROW_OF), PLAN(P_FRESH), table, wall, reads_flight);
    if (preds == NULL || preds == Py_None) {
        goto done_or_miss;
    }
    double penalty = PyFloat_AsDouble(PLAN(P_PENALTY));
    if (FAILED(penalty)) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        costs[i] = PyFloat_AsDouble(PyList_GET_ITEM(preds, i)); /* ``lookup`` read it: no error */
        if (penalty != 0.0) { /* p * (1 + penalty * in_flight), as the Python path */
            Py_ssize_t flight = attr_ssize(eps[i], str_in_flight);
            if (flight == -1 && PyErr_Occurred()) {
                goto done;
            }
            costs[i] = costs[i] * (1.0 + penalty * (double)flight);
        }
    }
    if (lowest_two(costs, eps, n, &best, &second) < 0) {
        goto done;
    }
    acc = PyObject_GetAttr(PLAN(P_ACCURACY), str_value);
    if (acc == NULL) {
        goto done;
    }
    if (acc != Py_None) {
        double accuracy = PyFloat_AsDouble(acc), floor = PyFloat_AsDouble(PLAN(P_FLOOR));
        if (FAILED(accuracy) || FAILED(floor)) {
            goto done;
        }
        if (accuracy < floor) {
            goto miss; /* the accuracy safeguard: the Python path falls back */
        }
    }
    double duration = call_double(PLAN(P_PERF_COUNTER));
    if (FAILED(duration)) {
        goto done;
    }
    duration -= started;
    dur = PyFloat_FromDouble(duration);
    if (dur == NULL) {
        goto done;
    }
    /* DecisionBudget.record's first lines, inline: a decision within budget that does not fill
     * the window only counts itself; anything else goes to ``record``. */
    PyObject *budget = PLAN(P_BUDGET);
    double budget_s = attr_double(budget, str_budget_s);
    if (FAILED(budget_s)) {
        goto done;
    }
    Py_ssize_t count = attr_ssize(budget, str_count) + 1, window = attr_ssize(budget, str_window);
    if (PyErr_Occurred()) {
        goto done;
    }
    if (duration > budget_s || count == window) {
        /* a spare slot in front: PY_VECTORCALL_ARGUMENTS_OFFSET lets the callee borrow it */
        PyObject *call[4] = {NULL, budget, dur, args[3]};
        PyObject *slow = PyObject_VectorcallMethod(str_record, call + 1, 3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        if (slow == NULL) {
            goto done;
        }
        Py_DECREF(slow);
    }
    else {
        count_obj = PyLong_FromSsize_t(count);
        if (count_obj == NULL || PyObject_SetAttr(budget, str_count, count_obj) < 0) {
            goto done;
        }
    }
    if (PLAN(P_ON_DURATION) != Py_None) {
        PyObject *ignored = PyObject_CallOneArg(PLAN(P_ON_DURATION), dur);
        if (ignored == NULL) {
            goto done;
        }
        Py_DECREF(ignored);
    }
    PyObject *fields[DECISION_FIELDS] = {eps[best], PyList_GET_ITEM(preds, best), eps[second],
                                         PyList_GET_ITEM(preds, second), Py_None, dur, args[1], preds};
    result = new_decision(PLAN(P_DECISION), fields);
    goto done;
done_or_miss:
    if (preds == NULL) {
        goto done;
    }
miss:
    result = Py_NewRef(Py_None);
done:
#undef PLAN
    Py_XDECREF(key);
    Py_XDECREF(preds);
    Py_XDECREF(acc);
    Py_XDECREF(dur);
    Py_XDECREF(count_obj);
    Py_DECREF(seq);
    return result;
}

static PyMethodDef methods[] = {
    {"tabulated", (PyCFunction)(void (*)(void))tabulated, METH_FASTCALL,
     "The candidates' predictions from a prediction table, or None at the first miss."},
    {"two_lowest", (PyCFunction)(void (*)(void))two_lowest, METH_FASTCALL,
     "Indices of the lowest and second-lowest cost, ties to fewer in flight, then the earlier."},
    {"decide", (PyCFunction)(void (*)(void))decide, METH_FASTCALL,
     "PredictedPolicy.decide's table path: a Decision, or None for the Python path to decide."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastpick", "The predicted policy's table path in C.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__fastpick(void)
{
    struct {
        PyObject **slot;
        const char *text;
    } names[] = {
        {&str_id, "id"}, {&str_in_flight, "in_flight"}, {&str_current, "current"},
        {&str_snapshot, "snapshot"}, {&str_open_until, "open_until"}, {&str_value, "value"},
        {&str_budget_s, "budget_s"}, {&str_count, "_count"}, {&str_window, "window"},
        {&str_record, "record"}, {&str_body_bytes, "body_bytes"}, {&str_req_class, "req_class"},
        {&str_method, "method"}, {&str_upper, "upper"}, {&str_GET, "GET"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        *names[i].slot = PyUnicode_InternFromString(names[i].text);
        if (*names[i].slot == NULL) {
            return NULL;
        }
    }
    return PyModule_Create(&module);
}
