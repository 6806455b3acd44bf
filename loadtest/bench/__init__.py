"""``presage bench``: the testbed policy shoot-out (collect, train, evaluate every policy, report).

Modules: ``cli`` (arguments and the run), ``phases`` (collect / train / evaluate against real
processes), ``contenders`` (what is compared), ``proxy_process`` (a ``presage proxy`` child),
``external`` (HAProxy/NGINX configurations), ``oracle`` and ``hidden_state`` (the reference
balancer that knows the testbed's hidden state), ``aggregate`` (figures, ratios, markdown),
``plots`` (PNG figures).
"""
