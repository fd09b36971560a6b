"""cdk-nag acknowledgements: each finding the platform accepts, where, and why. Anything
else cdk-nag finds fails the synth (and so ``make test``)."""

from aws_cdk import Acknowledgment, Stack, Validations
from constructs import IConstruct

ACCEPTED: tuple[tuple[str, str, str], ...] = (
    (
        "ControlPlane/AccessLogsBucket",
        "AwsSolutions-S1",
        "The bucket that receives the recordings bucket's access logs; logging it to itself "
        "would loop, and to a third bucket only moves the finding.",
    ),
    (
        "LoadBalancerLogs",
        "AwsSolutions-S1",
        "The bucket that receives the NLB's access logs; logging it again would loop.",
    ),
    (
        "ControlPlane/MasterKeySecret",
        "AwsSolutions-SMG4",
        "The master key wraps every sealed secret's data key; rotating it means re-wrapping "
        "them all, which the platform does not do yet (docs/decisions/0012). It never leaves "
        "Secrets Manager and the functions' roles.",
    ),
    (
        "ControlPlane/RecordingsReadPolicy",
        "AwsSolutions-IAM5[Resource::<RecordingsBucket.Arn>/sessions/*]",
        "Recordings are objects named per tenant and session under sessions/; the wildcard is "
        "that prefix of the one bucket, for GetObject only.",
    ),
    (
        "ControlPlane/RecordingsWritePolicy",
        "AwsSolutions-IAM5[Resource::<RecordingsBucket.Arn>/sessions/*]",
        "Parts and assembled recordings are written per session under sessions/; the "
        "wildcard is that prefix of the one bucket.",
    ),
    (
        "ProxyTask",
        "AwsSolutions-ECS2",
        "JUMPGATE_CONFIG_YAML holds the proxy's configuration (addresses, function names), no "
        "secret; the host key and TLS key are ECS secrets from Secrets Manager.",
    ),
    (
        "ProxyTask/ExecutionRole/DefaultPolicy/Resource",
        "AwsSolutions-IAM5[Resource::*]",
        "ecr:GetAuthorizationToken has no resource-level permissions; it must be '*'.",
    ),
    (
        "ProxySecurityGroup",
        "AwsSolutions-EC23",
        "The proxies are the platform's public endpoint (HTTPS, SSH, tunnels) behind an NLB "
        "that keeps client addresses, so their ports must take any source; the peer port "
        "takes only the group itself.",
    ),
)


def _find(stack: Stack, path: str) -> IConstruct:
    node: IConstruct = stack
    for part in path.split("/"):
        node = node.node.find_child(part)
    return node


def suppress(stack: Stack) -> None:
    """Acknowledge the accepted findings on ``stack``."""
    for path, rule, reason in ACCEPTED:
        Validations.of(_find(stack, path)).acknowledge(Acknowledgment(id=rule, reason=reason))
