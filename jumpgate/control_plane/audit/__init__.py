"""The audit log: events per tenant, kept a year, searched by time, type and user."""
