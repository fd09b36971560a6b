"""``jump``: the engineer's client (like ``tsh``)."""
