"""What the broker and its workers share, and nothing else: the wire protocol
(protocol.py), the sandbox plan a worker is handed (plan.py) and the compiled
intel database format (intel_db.py).

It imports neither side (stdlib and msgspec only), so a confined worker can load
it without loading the broker, and the broker without loading worker code.
tests/test_import_boundary.py holds both to that.
"""
