"""The official Python client against navarch: list, create, watch pods."""
import sys
import threading
import time

from kubernetes import client, config, watch

config.load_kube_config(config_file=sys.argv[1])
v1 = client.CoreV1Api()

names = [ns.metadata.name for ns in v1.list_namespace().items]
assert "default" in names, names
print("namespaces", names)

start_rv = v1.list_namespaced_pod("default").metadata.resource_version
seen = []


def watcher():
    w = watch.Watch()
    for ev in w.stream(v1.list_namespaced_pod, "default", resource_version=start_rv, timeout_seconds=20):
        seen.append((ev["type"], ev["object"].metadata.name))
        if ev["object"].metadata.name == "py-pod":
            w.stop()


t = threading.Thread(target=watcher)
t.start()
time.sleep(0.5)

pod = client.V1Pod(
    metadata=client.V1ObjectMeta(name="py-pod", labels={"app": "py"}),
    spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]),
)
created = v1.create_namespaced_pod("default", pod)
assert created.metadata.uid, created
assert created.spec.restart_policy == "Always", created.spec.restart_policy

pods = v1.list_namespaced_pod("default", label_selector="app=py").items
assert [p.metadata.name for p in pods] == ["py-pod"], pods
print("listed", [p.metadata.name for p in pods])

t.join(30)
assert ("ADDED", "py-pod") in seen, seen
print("watched ADDED py-pod")

try:
    v1.read_namespaced_pod("nope", "default")
    raise AssertionError("expected 404")
except client.exceptions.ApiException as e:
    assert e.status == 404, e.status
print("ok")
