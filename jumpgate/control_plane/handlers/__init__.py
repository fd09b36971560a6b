"""HTTP adapters of the control plane, written as Lambda handlers (Powertools).

``api`` routes ``/v1`` requests to the domain services; ``problems`` maps every error to
its HTTP status and problem type in one table. The embedded daemon calls the same handler
in-process with API Gateway v2-shaped events.
"""
