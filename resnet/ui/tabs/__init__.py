"""The tabs: one module per tab, each a ``build(ctx)`` that lays out its widgets and wires thin handlers to
``resnet``."""
