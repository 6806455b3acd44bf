"""Build configuration beyond pyproject.toml: the optional C extension of the ``predicted``
policy's table path (``proxy/balancer/_fastpick.c``). ``optional=True``: without a C compiler the
install goes on and the policy runs the same code in Python."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("proxy.balancer._fastpick", ["proxy/balancer/_fastpick.c"], optional=True),
    ]
)
