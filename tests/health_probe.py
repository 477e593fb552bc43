"""Checks a Mosaic process with Python's generic gRPC tools (grpcio, grpcio-health-checking,
grpcio-reflection), which know nothing of Mosaic's protos: run by tests/health.rs.

usage: health_probe.py ADDRESS SERVED_SERVICE UNSERVED_SERVICE
Prints one line per check; exits 1 on the first one that fails.
"""

import sys

import grpc
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def check(what, got, expected):
    print(f"{what}: {got}")
    if got != expected:
        sys.exit(f"{what}: expected {expected}, got {got}")


def main():
    address, served, unserved = sys.argv[1:4]
    channel = grpc.insecure_channel(address)
    health = health_pb2_grpc.HealthStub(channel)
    status = health_pb2.HealthCheckResponse.ServingStatus
    for service in ["", served]:
        answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        check(f"health of {service!r}", status.Name(answer.status), "SERVING")
    try:
        health.Check(health_pb2.HealthCheckRequest(service=unserved), timeout=5)
        sys.exit(f"health of {unserved!r}: answered, expected NOT_FOUND")
    except grpc.RpcError as error:
        check(f"health of {unserved!r}", error.code(), grpc.StatusCode.NOT_FOUND)
    database = ProtoReflectionDescriptorDatabase(channel)
    check(f"{served} listed", served in database.get_services(), True)
    methods = [method.name for method in DescriptorPool(database).FindServiceByName(served).methods]
    check(f"{served} has methods", len(methods) > 0, True)


if __name__ == "__main__":
    main()
