"""Custom domains: the certificate and the DNS record of a host serving one of the APIs."""

from __future__ import annotations

import typing

from aws_cdk import CfnOutput
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_route53 as route53
from constructs import Construct

from .config import EnvironmentConfig

__all__ = ["certificate", "hosted_zone", "publish_host"]


def hosted_zone(scope: Construct, config: EnvironmentConfig) -> route53.IHostedZone | None:
    """The environment's hosted zone (by id: nothing is looked up), one per scope."""
    if config.hosted_zone is None:
        return None
    existing = scope.node.try_find_child("Zone")
    if existing is not None:
        return typing.cast(route53.IHostedZone, existing)
    return route53.PublicHostedZone.from_hosted_zone_attributes(
        scope,
        "Zone",
        hosted_zone_id=config.hosted_zone.zone_id,
        zone_name=config.hosted_zone.zone_name,
    )


def certificate(
    scope: Construct, construct_id: str, config: EnvironmentConfig, host: str
) -> acm.ICertificate:
    """``custom_domain.certificate_arn``, else a certificate for ``host`` validated in the zone."""
    domain = config.custom_domain
    assert domain is not None
    if domain.certificate_arn is not None:
        return acm.Certificate.from_certificate_arn(scope, construct_id, domain.certificate_arn)
    zone = hosted_zone(scope, config)
    assert zone is not None  # EnvironmentConfig requires a certificate or a zone
    return acm.Certificate(
        scope,
        construct_id,
        domain_name=host,
        validation=acm.CertificateValidation.from_dns(zone),
    )


def publish_host(
    scope: Construct,
    construct_id: str,
    config: EnvironmentConfig,
    host: str,
    *,
    target: route53.IAliasRecordTarget,
    target_name: str,
) -> None:
    """An alias record for ``host`` in the zone, else an output naming the CNAME to publish."""
    zone = hosted_zone(scope, config)
    if zone is not None and config.hosted_zone is not None and config.hosted_zone.contains(host):
        route53.ARecord(
            scope,
            construct_id,
            zone=zone,
            record_name=host,
            target=route53.RecordTarget.from_alias(target),
        )
        return
    CfnOutput(
        scope,
        construct_id,
        description=f"Publish this DNS record for {host}",
        value=f"{host} CNAME {target_name}",
    )
