"""The edge proxy: a tenant's only public endpoint.

This issue serves the HTTPS front (``web``): requests become API Gateway v2 events handed to
a control-plane client (``ControlPlaneClient``) whose transport is an in-process call of the
Lambda handler here, or a Lambda invoke on AWS. The SSH and tunnel fronts follow.
"""
