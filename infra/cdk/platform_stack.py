"""The whole platform on AWS as one CDK stack.

- Control plane: ``template.yaml`` included as it is (``CfnInclude``), so the functions,
  tables, bucket, secret and their policies are described once; its code comes from an S3
  asset bundled by pip (``bundle.py``), no Docker.
- Proxy fleet: ECS Fargate (arm64) in private subnets of two AZs, behind one internet-facing
  NLB: 443 -> 3080 (HTTPS API), 3023 (users' SSH), 3024 (node tunnels). Proxies reach each
  other on 3021 (peering) inside their security group. Health is ``/webapi/ping``; the
  service scales on CPU between ``min_proxies`` and ``max_proxies``.
- Secrets: the proxies' SSH host key and TLS certificate are Secrets Manager secrets the
  operator creates (a fleet shares one host key; users see one host); ECS injects them.
- DNS: ``*.<domain>`` and ``<domain>`` point at the NLB in the operator's hosted zone.
"""

from pathlib import Path

from aws_cdk import ArnFormat, CfnOutput, Duration, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_route53 as route53
from aws_cdk import aws_route53_targets as targets
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import cloudformation_include as cfn_inc
from constructs import Construct

from jumpgate.protocol import ports  # plain Python, from this repository
from jumpgate.protocol.functions import Function

ROOT = Path(__file__).resolve().parents[2]
WEB, SSH, TUNNEL, PEER = ports.WEB, ports.SSH, ports.TUNNEL, ports.PEER


class PlatformStack(Stack):
    """See the module docstring."""

    def __init__(self, scope: Construct, construct_id: str, *, bundle: Path, **kwargs: object):
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        domain = self.node.get_context("domain")
        zone_id = self.node.get_context("hosted_zone_id")
        host_key_secret = self.node.get_context("proxy_host_key_secret")
        host_public_key = self.node.get_context("proxy_host_public_key")
        tls_secret = self.node.get_context("tls_secret")
        min_proxies = int(self.node.try_get_context("min_proxies") or 2)
        max_proxies = int(self.node.try_get_context("max_proxies") or 10)

        code = s3_assets.Asset(self, "FunctionsBundle", path=str(bundle))
        control = cfn_inc.CfnInclude(
            self,
            "ControlPlane",
            template_file=str(ROOT / "template.yaml"),
            parameters={
                "PublicAddr": domain,
                "CodeBucket": code.s3_bucket_name,
                "CodeKey": code.s3_object_key,
                "ProxyHostKeys": host_public_key,
            },
        )
        function_names = {
            f.value: control.get_resource(f"{f.value.capitalize()}Function").ref for f in Function
        }

        vpc = ec2.Vpc(
            self,
            "Network",
            max_azs=2,
            nat_gateways=2,  # one per AZ: an AZ outage leaves the other's proxies reaching AWS
            subnet_configuration=[
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC),
                ec2.SubnetConfiguration(
                    name="proxies", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS
                ),
            ],
        )
        vpc.add_flow_log(
            "FlowLogs",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(
                logs.LogGroup(self, "FlowLogGroup", retention=logs.RetentionDays.ONE_YEAR)
            ),
        )

        cluster = ecs.Cluster(
            self,
            "Proxies",
            vpc=vpc,
            container_insights_v2=ecs.ContainerInsights.ENABLED,
        )
        task = ecs.FargateTaskDefinition(
            self,
            "ProxyTask",
            cpu=1024,
            memory_limit_mib=2048,
            runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=ecs.CpuArchitecture.ARM64,
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
            ),
        )
        task.add_to_task_role_policy(
            iam.PolicyStatement(
                actions=["lambda:InvokeFunction"],
                resources=[
                    self.format_arn(
                        service="lambda",
                        resource="function",
                        resource_name=name,
                        arn_format=ArnFormat.COLON_RESOURCE_NAME,
                    )
                    for name in function_names.values()
                ],
            )
        )
        config = {
            "services": ["proxy"],
            "public_addr": domain,
            "data_dir": "/var/lib/jumpgate",
            "web_listen_addr": f"0.0.0.0:{WEB}",
            "ssh_listen_addr": f"0.0.0.0:{SSH}",
            "tunnel_listen_addr": f"0.0.0.0:{TUNNEL}",
            "peer_listen_addr": f"0.0.0.0:{PEER}",
            "peer_public_addr": "auto",
            "diag_addr": f"127.0.0.1:{ports.DIAG}",
            "control_plane": {
                "type": "lambda",
                "region": self.region,
                "functions": function_names,
            },
        }
        host_key = secretsmanager.Secret.from_secret_name_v2(self, "HostKey", host_key_secret)
        tls = secretsmanager.Secret.from_secret_name_v2(self, "Tls", tls_secret)
        proxy_logs = logs.LogGroup(
            self,
            "ProxyLogs",
            retention=logs.RetentionDays.ONE_YEAR,
            removal_policy=RemovalPolicy.RETAIN,
        )
        task.add_volume(name="data")  # the only writable path: the root filesystem is read-only
        container = task.add_container(
            "proxy",
            image=ecs.ContainerImage.from_asset(str(ROOT), file="Dockerfile", target="proxy"),
            environment={"JUMPGATE_CONFIG_YAML": self.to_json_string(config)},
            secrets={
                "JUMPGATE_PROXY_HOST_KEY": ecs.Secret.from_secrets_manager(host_key),
                "JUMPGATE_TLS_CERT": ecs.Secret.from_secrets_manager(tls, field="certificate"),
                "JUMPGATE_TLS_KEY": ecs.Secret.from_secrets_manager(tls, field="key"),
            },
            logging=ecs.LogDrivers.aws_logs(stream_prefix="proxy", log_group=proxy_logs),
            port_mappings=[ecs.PortMapping(container_port=p) for p in (WEB, SSH, TUNNEL, PEER)],
            readonly_root_filesystem=True,
            user="10001",
        )
        container.add_mount_points(
            ecs.MountPoint(
                container_path="/var/lib/jumpgate", source_volume="data", read_only=False
            )
        )

        proxies_sg = ec2.SecurityGroup(
            self, "ProxySecurityGroup", vpc=vpc, description="Jumpgate proxies"
        )
        for port in (WEB, SSH, TUNNEL):  # the NLB keeps client addresses: open to the world
            proxies_sg.add_ingress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(port))
        proxies_sg.add_ingress_rule(proxies_sg, ec2.Port.tcp(PEER), "proxy peering")
        service = ecs.FargateService(
            self,
            "ProxyService",
            cluster=cluster,
            task_definition=task,
            desired_count=min_proxies,
            security_groups=[proxies_sg],
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            min_healthy_percent=100,
            max_healthy_percent=200,
            circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
        )
        scaling = service.auto_scale_task_count(min_capacity=min_proxies, max_capacity=max_proxies)
        scaling.scale_on_cpu_utilization("Cpu", target_utilization_percent=60)

        access_logs = s3.Bucket(
            self,
            "LoadBalancerLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(365))],
            removal_policy=RemovalPolicy.RETAIN,
        )
        nlb = elbv2.NetworkLoadBalancer(
            self,
            "LoadBalancer",
            vpc=vpc,
            internet_facing=True,
            cross_zone_enabled=True,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC),
        )
        nlb.log_access_logs(access_logs)
        for listen, port in ((443, WEB), (SSH, SSH), (TUNNEL, TUNNEL)):
            listener = nlb.add_listener(f"Listener{listen}", port=listen)
            listener.add_targets(
                f"Proxies{port}",
                port=port,
                targets=[service.load_balancer_target(container_name="proxy", container_port=port)],
                health_check=elbv2.HealthCheck(
                    protocol=elbv2.Protocol.HTTPS,
                    port=str(WEB),
                    path="/webapi/ping",
                    interval=Duration.seconds(10),
                ),
                deregistration_delay=Duration.seconds(30),
                preserve_client_ip=True,
            )

        zone = route53.HostedZone.from_hosted_zone_attributes(
            self, "Zone", hosted_zone_id=zone_id, zone_name=domain
        )
        alias = route53.RecordTarget.from_alias(targets.LoadBalancerTarget(nlb))
        route53.ARecord(self, "Apex", zone=zone, target=alias)
        route53.ARecord(self, "Tenants", zone=zone, record_name=f"*.{domain}", target=alias)

        CfnOutput(self, "LoadBalancerDns", value=nlb.load_balancer_dns_name)
        CfnOutput(self, "FunctionNames", value=self.to_json_string(function_names))
