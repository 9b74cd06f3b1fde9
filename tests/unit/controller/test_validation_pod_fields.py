"""The Pod fields of issue #14 at create: refused with the field's path, or accepted with a warning."""

from __future__ import annotations

import pytest

from controller import validation
from cowpod.api import podfields
from cowpod.auth.podsecurity import pod_violations
from cowpod.errors import Invalid
from cowpod.manifest import load_text
from cowpod.v1 import pod_pb2

BASE = """
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: default}
spec:
  volumes: [{name: data, emptyDir: {}}]
  containers:
  - name: c
    image: busybox
    ports: [{name: http, containerPort: 8080}]
"""


def pod(extra_container: str = "", extra_spec: str = "") -> pod_pb2.Pod:
    """BASE with YAML lines added to its container (6-space indent) and to its spec (2)."""
    text = BASE + "".join(f"    {line}\n" for line in extra_container.strip("\n").split("\n") if line)
    text += "".join(f"  {line}\n" for line in extra_spec.strip("\n").split("\n") if line)
    (doc,) = load_text(text, "p.yaml", validate=False)
    assert isinstance(doc.obj, pod_pb2.Pod)
    return doc.obj


def refusal(p: pod_pb2.Pod) -> tuple[str, str]:
    with pytest.raises(Invalid) as e:
        validation.validate_pod(p)
    return e.value.field, str(e.value)


@pytest.mark.parametrize(
    ("container", "spec", "path", "reason"),
    [
        ("env: [{name: X, valueFrom: {fieldRef: {fieldPath: spec.hostname}}}]", "",
         "spec.containers[0].env[0].valueFrom.fieldRef.fieldPath", "unsupported fieldPath 'spec.hostname'"),
        ("env: [{name: X, valueFrom: {resourceFieldRef: {resource: limits.gpu}}}]", "",
         "spec.containers[0].env[0].valueFrom.resourceFieldRef.resource", "unsupported value 'limits.gpu'"),
        ("env: [{name: X, valueFrom: {resourceFieldRef: {containerName: nope, resource: limits.cpu}}}]", "",
         "spec.containers[0].env[0].valueFrom.resourceFieldRef.containerName", "no container named 'nope'"),
        ("volumeMounts: [{name: data, mountPath: /d, subPath: x}]", "",
         "spec.containers[0].volumeMounts[0].subPath", "not supported"),
        ("volumeMounts: [{name: other, mountPath: /d}]", "",
         "spec.containers[0].volumeMounts[0].name", "volume 'other' not found in spec.volumes"),
        ("livenessProbe: {httpGet: {port: metrics}}", "",
         "spec.containers[0].livenessProbe.httpGet.port", "no port named 'metrics'"),
        ("lifecycle: {preStop: {sleep: {seconds: 1}, exec: {command: [x]}}}", "",
         "spec.containers[0].lifecycle.preStop", "exactly one handler"),
        ("lifecycle: {postStart: {tcpSocket: {port: nope}}}", "",
         "spec.containers[0].lifecycle.postStart.tcpSocket.port", "no port named 'nope'"),
        ("securityContext: {runAsNonRoot: true, runAsUser: 0}", "",
         "spec.containers[0].securityContext.runAsUser", "must not be 0"),
        ("", "dnsPolicy: None", "spec.dnsPolicy", "needs spec.dnsConfig"),
        ("", "hostAliases: [{ip: 10.0.0.300, hostnames: [a.local]}]", "spec.hostAliases[0].ip",
         "valid IP address"),
        ("", "hostAliases: [{ip: 127.0.0.1, hostnames: [Not_A_Name]}]", "spec.hostAliases[0].hostnames[0]",
         "RFC 1123"),
        ("", "dnsPolicy: Other", "spec.dnsPolicy", "unsupported"),
        ("securityContext: {seccompProfile: {type: Unconfined}}", "",
         "spec.containers[0].securityContext.seccompProfile.type", "only RuntimeDefault"),
        ("", "securityContext: {runAsUser: -1}", "spec.securityContext.runAsUser",
         "greater than or equal to 0"),
        ("", "affinity: {podAntiAffinity: {requiredDuringSchedulingIgnoredDuringExecution: "
             "[{labelSelector: {}}]}}",
         "spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey",
         "required"),
        ("", "affinity: {podAffinity: {preferredDuringSchedulingIgnoredDuringExecution: "
             "[{weight: 101, podAffinityTerm: {topologyKey: zone}}]}}",
         "spec.affinity.podAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight", "1-100"),
    ],
)
def test_refused_at_create_with_the_field_path(container: str, spec: str, path: str, reason: str) -> None:
    field, message = refusal(pod(container, spec))
    assert field == path
    assert reason in message


@pytest.mark.parametrize("field_path", [*podfields.FIELD_REF_PATHS, "metadata.labels['app']",
                                        "metadata.annotations['a.b/c']"])
def test_every_field_ref_the_agent_resolves_is_accepted(field_path: str) -> None:
    env = f'env: [{{name: X, valueFrom: {{fieldRef: {{fieldPath: "{field_path}"}}}}}}]'
    validation.validate_pod(pod(env))


def test_kubernetes_docs_fields_that_are_honoured_pass() -> None:
    validation.validate_pod(pod(
        """
securityContext: {runAsUser: 2000, allowPrivilegeEscalation: false, readOnlyRootFilesystem: true,
                  capabilities: {drop: [ALL]}, seccompProfile: {type: RuntimeDefault}}
livenessProbe: {httpGet: {path: /healthz, port: http}}
readinessProbe: {tcpSocket: {port: 8080}}
lifecycle: {postStart: {httpGet: {path: /, port: http}}, preStop: {sleep: {seconds: 2}}}
env: [{name: L, valueFrom: {resourceFieldRef: {containerName: c, resource: limits.memory, divisor: 1Mi}}}]
""",
        """
securityContext: {runAsUser: 1000, runAsGroup: 3000, fsGroup: 2000, supplementalGroups: [4000]}
affinity:
  podAntiAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
    - {labelSelector: {matchLabels: {app: web}}, topologyKey: kubernetes.io/hostname}
""",
    ))


def test_privileged_and_added_capabilities_break_the_pod_security_rules() -> None:
    p = pod("securityContext: {privileged: true, capabilities: {add: [NET_ADMIN], drop: [MKNOD]}}")
    assert [f for f, _ in pod_violations(p)] == [
        "spec.containers[0].securityContext.privileged",
        "spec.containers[0].securityContext.capabilities.add",
    ]
    assert pod_violations(pod("securityContext: {capabilities: {drop: [ALL]}}")) == []


def test_named_ports_are_resolved_and_keep_their_name() -> None:
    p = pod("livenessProbe: {httpGet: {port: http}}\nlifecycle: {preStop: {tcpSocket: {port: http}}}")
    podfields.resolve_named_ports(p.spec)
    c = p.spec.containers[0]
    assert (c.liveness_probe.http_get.port, c.liveness_probe.http_get.port_name) == (8080, "http")
    assert c.lifecycle.pre_stop.tcp_socket.port == 8080
    assert not c.HasField("readiness_probe")  # resolving touches only what is set


def test_accepted_but_ignored_fields_each_get_one_warning_line() -> None:
    p = pod("terminationMessagePath: /dev/termination-log\nterminationMessagePolicy: File",
            "dnsPolicy: Default\nenableServiceLinks: false\nserviceAccountName: build\n"
            "automountServiceAccountToken: false\nimagePullSecrets: [{name: regcred}]")
    warnings = podfields.pod_warnings(p.spec)
    assert [w.split(":")[0] for w in warnings] == [
        "spec.enableServiceLinks", "spec.serviceAccountName",
        "spec.automountServiceAccountToken", "spec.imagePullSecrets",
        "spec.containers[0].terminationMessagePath", "spec.containers[0].terminationMessagePolicy",
    ]
    assert "no registry credentials are used" in warnings[3]
    validation.validate_pod(p)  # accepted all the same
    assert podfields.pod_warnings(pod().spec) == []


def test_service_account_defaults_to_default() -> None:
    assert podfields.service_account_of(pod().spec) == "default"
    assert podfields.service_account_of(pod("", "serviceAccountName: build").spec) == "build"


def test_probe_level_grace_period_is_accepted_with_a_warning() -> None:
    p = pod("livenessProbe: {exec: {command: [\"true\"]}, terminationGracePeriodSeconds: 60}")
    validation.validate_pod(p)
    assert [w.split(":")[0] for w in podfields.pod_warnings(p.spec)] == [
        "spec.containers[0].livenessProbe.terminationGracePeriodSeconds"]


def downward(items: str) -> pod_pb2.Pod:
    """BASE with its volume a downwardAPI one holding `items` (YAML flow)."""
    text = BASE.replace("emptyDir: {}", "downwardAPI: {items: [" + items + "]}")
    (doc,) = load_text(text, "p.yaml", validate=False)
    assert isinstance(doc.obj, pod_pb2.Pod)
    return doc.obj


def test_downward_api_volumes() -> None:
    cpu = "{path: cpu, resourceFieldRef: {containerName: c, resource: limits.cpu}}"
    validation.validate_pod(downward("{path: labels, fieldRef: {fieldPath: metadata.labels}}, " + cpu))
    with pytest.raises(Invalid) as e:
        validation.validate_pod(downward("{path: ip, fieldRef: {fieldPath: status.podIP}}, "
                                         "{path: ../x, resourceFieldRef: {resource: limits.cpu}}"))
    msg = str(e.value)
    assert e.value.field == "spec.volumes[0].downwardAPI.items[0].fieldRef.fieldPath"
    assert "items[1].path" in msg and "items[1].resourceFieldRef.containerName: required" in msg


def test_hosts_file_appends_the_aliases_as_kubelet_does() -> None:
    aliases = [pod_pb2.HostAlias(ip="127.0.0.1", hostnames=["foo.local", "bar.local"]),
               pod_pb2.HostAlias(ip="10.1.2.3", hostnames=["foo.remote"])]
    text = podfields.hosts_file("127.0.0.1\tlocalhost\n10.0.0.5\tvm-1\n", aliases)
    assert text.splitlines() == ["127.0.0.1\tlocalhost", "10.0.0.5\tvm-1", "",
                                 "# Entries added by HostAliases.",
                                 "127.0.0.1\tfoo.local\tbar.local", "10.1.2.3\tfoo.remote"]
