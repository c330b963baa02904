"""The speed layer: real-time rules over stored packets, and alerts exactly once.

Pure core: the condition language (:mod:`minute_packet.condition`, shared with the gateway's edge
triggers, and :mod:`minute_packet.condition_eval`), :mod:`~speed_layer.rules` and the built-ins (:mod:`~speed_layer.catalog`), :mod:`~speed_layer.engine`
(rows of a packet through a vehicle's rules). State and I/O: :mod:`~speed_layer.store`,
:mod:`~speed_layer.sequencer`, :mod:`~speed_layer.service`, :mod:`~speed_layer.webhook`.
Design and guarantees: ``docs/speed-layer.md``. Imports ``minute_packet`` and ``dbc`` only.
"""
