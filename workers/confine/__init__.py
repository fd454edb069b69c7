"""The worker's confinement, which it applies to itself before it reads a request.

One module per sandbox layer, named after the kernel feature it uses; order.py
applies them in their one fixed order. The broker only plans (broker/sandbox/):
nothing here is imported by it.
"""
