"""``presage simulate``: a discrete-event simulator of Presage's routing problem at scale.

N heterogeneous backends, each a FCFS queue with ``c`` servers whose service rate depends on its
capacity and on hidden interference episodes (a two-state Markov chain per backend); request
classes with size-dependent service times; Poisson (or trace-driven) arrivals spread over K
proxies that each know only their own in-flight counts; agents that report every interval with a
delay. Policies: the heuristics of the proxy (``round_robin``, ``random``, ``least_request``,
``peak_ewma``), a Prequal-like probe rule, ``predicted`` driven by a predictor of controllable
accuracy, and an ``oracle`` lower bound.

The question it answers (as Morpheus, arXiv 2510.20506, does by simulation): below which
prediction accuracy does routing by predicted RTT stop paying against the best heuristic, and
against ``peak_ewma``, the proxy's fallback? The latter, in the units the proxy measures, plus a
margin, is the default of the proxy's live-accuracy safeguard (``loadtest.sim.threshold``,
``proxy/predict/min_accuracy.py``).

Modules: ``scenario`` (the knobs), ``world`` (backends, interference), ``workload`` (arrivals,
classes, service draws), ``engine`` (the event loop), ``policies`` (one module per policy),
``metrics`` (RTT percentiles, wasted capacity, accuracy), ``sweep`` (accuracy sweep, threshold,
sensitivity), ``scale`` (cost benchmark), ``calibrate`` (from recorded samples), ``cli``.
"""
