"""The real testbed: heterogeneous backends doing numpy work, with noisy neighbours, on one machine.

* ``backend``  ``presage backend``: FFT filtering of an N x N micrograph movie per request
  (``imaging``), a bounded thread pool, ``/healthz``, ``/metrics`` (in-flight, queue length).
* ``scenario`` frozen dataclasses and YAML (``scenarios/quick.yaml``, ``scenarios/full.yaml``).
* ``stack``    ``Testbed``: cgroups with CPU quotas (``cgroups``), Redis, backends, agents, the
  interference schedule (``interference``: stress-ng in the backend's cgroup), the hidden state
  for the oracle balancer, and a clean stop.
* ``capacity`` ``python -m loadtest.testbed.capacity``: requests/s of one backend per workers x quota.

Child processes start through ``launch`` (join the cgroup before exec; die with the testbed).
"""
