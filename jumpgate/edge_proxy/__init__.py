"""The edge proxy: a tenant's only public endpoint.

It serves three fronts: HTTPS (``web``), whose requests become API Gateway v2 events handed to
the control plane's client (an in-process call of the Lambda handler, or a Lambda invoke on
AWS); users' SSH (port 3023), spliced to nodes; and node tunnels (port 3024), the reverse
connections nodes hold open.
"""
