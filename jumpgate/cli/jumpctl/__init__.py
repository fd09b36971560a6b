"""``jumpctl``: the tenant admin's client (like ``tctl``), one module per command group."""
