"""Lambda entry point of the scheduled sweeper: complete recordings whose node went quiet.

Embedded, the daemon sweeps on a timer; on AWS an EventBridge schedule (template.yaml) runs
this every few minutes. A node that died mid-session never completes its recording; after
the grace period the platform completes it from the parts it has, and audits that it did.
"""

import os
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from jumpgate.control_plane.lambdas.runtime import FunctionSettings, open_plane

logger = Logger(service="jumpgate-sweeper")
metrics = Metrics(namespace="Jumpgate", service="jumpgate-sweeper")
plane = open_plane(FunctionSettings.from_environ(os.environ))


@metrics.log_metrics(capture_cold_start_metric=True)
@logger.inject_lambda_context
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    done = plane.recordings.sweep()
    for tenant, session_id in done:
        logger.info(
            "recording completed by the platform",
            extra={"tenant": tenant, "session_id": session_id},
        )
    metrics.add_metric(name="RecordingsCompleted", unit=MetricUnit.Count, value=len(done))
    return {"completed": len(done)}
